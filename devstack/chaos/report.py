"""The chaos run's printed report: plain text, so it reads the same in a terminal, a CI
log or a file, and every line can be quoted."""

from collections import Counter

from devstack.demo.report import percentile
from dualsend_app.models import Order, Redrive

from .run import RunSetup
from .verdict import SHOWN_PROBLEMS, RunFacts, Verdict

STATUS_ORDER = [str(status) for status in Order.Status]
EFFECT_BUCKETS = ("0", "1", "2+")
RULE = "-" * 78


def render(setup: RunSetup, facts: RunFacts, verdict: Verdict) -> str:
    """The whole report, one string."""
    sections = [
        header(setup, verdict),
        fault_lines(facts),
        status_lines(facts),
        settle_lines(facts),
        work_lines(facts),
        effect_lines(facts),
        attention_lines(facts),
        verdict_lines(verdict, facts),
    ]
    return "\n".join(line for section in sections for line in [*section, ""]).rstrip() + "\n"


def header(setup: RunSetup, verdict: Verdict) -> list[str]:
    return [
        RULE,
        f"dualsend chaos run: {verdict.word}",
        RULE,
        f"command    {setup.command}",
        f"broker     {setup.broker}",
        f"redis      {setup.redis}",
        f"database   {setup.database}",
        f"orders     {setup.orders} through POST {setup.web_url}/api/orders, "
        f"{setup.rate:.1f}/s, {setup.concurrency} at a time; seed {setup.seed}",
        f"partners   latency {setup.faults.latency_ms} ms, random errors "
        f"{setup.faults.error_rate:.0%}, dropped after the effect {setup.faults.drop_rate:.0%}, "
        f"declines {setup.faults.decline_rate:.0%}",
        f"logs       {setup.log_dir}",
    ]


def fault_lines(facts: RunFacts) -> list[str]:
    lines = ["Faults (t = seconds since the first order)"]
    for record in facts.faults:
        lines.append(f"  t={record.at:6.1f}  {record.action:<14} {record.detail}")
    if not facts.faults:
        lines.append("  none")
    return lines


def status_lines(facts: RunFacts) -> list[str]:
    kinds = sorted({record.kind for record in facts.records})
    by_status = Counter((record.status, record.kind) for record in facts.records)
    statuses = sorted({record.status for record in facts.records}, key=STATUS_ORDER.index)
    lines = [
        "Orders per final status",
        f"  {'status':<16}{'orders':>7}" + "".join(f"{kind:>15}" for kind in kinds),
    ]
    for status in statuses:
        counts = [by_status[(status, kind)] for kind in kinds]
        lines.append(f"  {status:<16}{sum(counts):>7}" + "".join(f"{n or '':>15}" for n in counts))
    lines.append(f"  {'total':<16}{len(facts.records):>7}")
    not_placed = sum(not order.placed for order in facts.orders)
    if not_placed:
        lines.append(f"  {'not placed':<16}{not_placed:>7}")
    return lines


def settle_lines(facts: RunFacts) -> list[str]:
    seconds = [r.settle_seconds for r in facts.records if r.settle_seconds is not None]
    if not seconds:
        return ["Time to settle (created → settled): no order settled"]
    p50, p99 = percentile(seconds, 50), percentile(seconds, 99)
    return [
        "Time to settle (created → settled)",
        f"  p50 {p50:.2f} s   p99 {p99:.2f} s   max {max(seconds):.2f} s   ({len(seconds)} orders)",
    ]


def work_lines(facts: RunFacts) -> list[str]:
    redriven = ", ".join(
        f"{kind} {facts.redrives[kind]}" for kind in Redrive.Kind.values if facts.redrives[kind]
    )
    return [
        "Recovery and protection",
        f"  re-drives          {facts.redrives.total()} on {facts.orders_redriven} order(s)"
        + (f": {redriven}" if redriven else ""),
        f"  breaker openings   {_per_partner(facts.breaker_openings)}",
        f"  deferrals          {_per_partner(facts.deferrals)} "
        "(calls put off: breaker open, rate limit, Retry-After)",
        f"  HTTP calls         {facts.http_calls} to the partners",
    ]


def effect_lines(facts: RunFacts) -> list[str]:
    lines = [
        "Effects per order (the simulators' ledger)",
        f"  {'orders with':<16}" + "".join(f"{bucket:>8}" for bucket in EFFECT_BUCKETS),
    ]
    for label, counter in (("reservations", "reserved"), ("charges", "charged")):
        buckets = Counter(_bucket(record.ledger.get(counter, 0)) for record in facts.records)
        lines.append(f"  {label:<16}" + "".join(f"{buckets[b]:>8}" for b in EFFECT_BUCKETS))
    releases = sum(record.ledger.get("released", 0) for record in facts.records)
    refunds = sum(record.ledger.get("refunded", 0) for record in facts.records)
    reserved = sum(record.reservations_standing > 0 for record in facts.records)
    charged = sum(record.charges_standing > 0 for record in facts.records)
    lines.append(f"  undone             {releases} release(s), {refunds} refund(s)")
    lines.append(
        f"  standing at end    {reserved} reservation(s), {charged} charge(s)   "
        f"(completed orders: {_count(facts, Order.Status.COMPLETED)})"
    )
    return lines


def attention_lines(facts: RunFacts) -> list[str]:
    waiting = [r for r in facts.records if r.status == Order.Status.NEEDS_ATTENTION]
    if not waiting:
        return ["needs_attention: none"]
    lines = [f"needs_attention: {len(waiting)} order(s), each with its reason"]
    for record in waiting:
        standing = (
            f"standing: {record.reservations_standing} reservation(s), "
            f"{record.charges_standing} charge(s)"
        )
        lines.append(f"  {record.order_id}  {standing}  reason: {record.reason}")
    return lines


def verdict_lines(verdict: Verdict, facts: RunFacts) -> list[str]:
    lines = ["Verdict"]
    for check in verdict.checks:
        lines.append(f"  [{'ok' if check.passed else 'FAIL'}] {check.text}")
        lines += [f"         {problem}" for problem in check.problems[:SHOWN_PROBLEMS]]
        hidden = len(check.problems) - SHOWN_PROBLEMS
        if hidden > 0:
            lines.append(f"         … and {hidden} more")
    lines.append(f"{verdict.word}  (the run took {facts.run_seconds:.0f} s)")
    return lines


def _per_partner(counter: Counter[str]) -> str:
    return ", ".join(f"{partner} {counter.get(partner, 0)}" for partner in ("inventory", "payment"))


def _bucket(count: int) -> str:
    return "2+" if count >= 2 else str(count)


def _count(facts: RunFacts, status: str) -> int:
    return sum(record.status == status for record in facts.records)

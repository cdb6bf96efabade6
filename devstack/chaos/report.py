"""The chaos run's printed report: plain text, so it reads the same in a terminal, a CI
log or a file, and every line can be quoted."""

from collections import Counter

from devstack.demo.report import percentile
from dualsend_app.models import Order, Redrive

from .recovery import Recovery
from .run import RunSetup
from .verdict import INTERNAL_ERROR, SHOWN_PROBLEMS, RunFacts, Verdict, answer_summary

STATUS_ORDER = [str(status) for status in Order.Status]
EFFECT_BUCKETS = ("0", "1", "2+")
RULE = "-" * 78


def render(setup: RunSetup, facts: RunFacts, verdict: Verdict) -> str:
    """The whole report, one string."""
    sections = [
        header(setup, verdict),
        fault_lines(facts),
        recovery_lines(facts),
        status_lines(facts),
        settle_lines(facts),
        answer_lines(facts),
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
        f"layout     {setup.layout}",
        f"levers     {setup.levers}",
        f"orders     {setup.orders} through POST {setup.web_url}/api/orders, "
        f"{setup.rate:.1f}/s on average (paced to the faults), {setup.concurrency} clients; "
        f"seed {setup.seed}",
        f"partners   latency {setup.faults.latency_ms} ms, random errors "
        f"{setup.faults.error_rate:.0%}, dropped after the effect {setup.faults.drop_rate:.0%}, "
        f"declines {setup.faults.decline_rate:.0%}",
        f"logs       {setup.log_dir}",
    ]


def fault_lines(facts: RunFacts) -> list[str]:
    lines = ["Faults (t = seconds since the first order)"]
    for record in facts.faults:
        lines.append(f"  t={record.at:6.1f}  {record.name:<24} {record.detail}")
    if not facts.faults:
        lines.append("  none")
    return lines


RECOVERY_LEGEND = (
    "  caught: orders not final at the fault's start whose next step waited on what it hit",
    "  (a killed worker: a send pending or in flight that it runs, i.e. a header send on",
    "  its partner's queue, or on the default queue a compensation, settle or closing; a",
    "  partner outage: a send to it pending or in flight, and every order created while it",
    "  was down; a Redis restart or PostgreSQL crash: every order not final).",
    "  recovery: from the fault (a kill, a restart) or from the return of what it took",
    "  down (an outage, a database crash) to the last caught order settled.",
)


def recovery_lines(facts: RunFacts) -> list[str]:
    lines = [
        "Recovery per fault",
        f"  {'t':>8}  {'fault':<24}{'caught':>7}  {'recovery':>9}  last to settle",
    ]
    lines += [_recovery_line(recovery) for recovery in facts.recoveries]
    if not facts.recoveries:
        lines.append("  no fault")
    return lines + list(RECOVERY_LEGEND)


def _recovery_line(recovery: Recovery) -> str:
    fault = recovery.fault
    if recovery.seconds is None:
        seconds, last = "never", f"{recovery.unsettled} caught order(s) not final"
    elif not recovery.caught:
        seconds, last = "-", "nothing caught"
    else:
        seconds, last = f"{recovery.seconds:.1f} s", recovery.last_order
    back = f" (back at t={fault.back_at:.1f})" if fault.lasting else ""
    return f"  t={fault.at:6.1f}  {fault.name:<24}{recovery.caught:>7}  {seconds:>9}  {last}{back}"


def answer_lines(facts: RunFacts) -> list[str]:
    internal = sum(n for (_, answer), n in facts.answers.items() if answer == INTERNAL_ERROR)
    return [
        "Answers the clients saw (each order: POST until accepted, then one GET; retried on",
        "no answer, 409, 429 and 503 with the same Idempotency-Key, after Retry-After)",
        f"  {answer_summary(facts.answers)}",
        f"  500 answers: {internal}",
    ]


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

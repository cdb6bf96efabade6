"""The pass/fail table: one row per check and partner, the evidence under EVIDENCE.

    CHECK                             PARTNER    RESULT  EVIDENCE
    auth refused without credentials  inventory  PASS    POST /v1/reservations […] -> 401 {…}
    …
    cleanup: release everything       inventory  PASS    4 of 4 orders clean (2xx undone, 404 none)
                                                         DELETE /v1/reservations/… -> 404 {…}

    20 checks: 20 passed, 0 failed

Every line goes through `scrub` first: no partner credential (in any form a header
carries it) and no card source is ever printed, even where a partner echoes one back.
"""

from collections.abc import Iterable

from dualsend_app.partners.redaction import scrub

from .checks import CheckResult
from .contract import PartnerUnderTest
from .http import KEY_PREFIX
from .runner import RunOutcome

COLUMNS = ("CHECK", "PARTNER", "RESULT", "EVIDENCE")
GAP = "  "


def render(outcome: RunOutcome, partners: Iterable[PartnerUnderTest]) -> str:
    partners = list(partners)
    secrets = [secret for partner in partners for secret in partner.secrets()]
    where = ", ".join(f"{partner.name} {partner.base_url}" for partner in partners)
    lines = [
        f"check_partner run {outcome.run_id}: partner-apis.md against {where}",
        f"(X-Request-ID {KEY_PREFIX}{outcome.run_id}; Idempotency-Key"
        f" {KEY_PREFIX}{outcome.run_id}-<partner>-<purpose>, shown as …<partner>-<purpose>)",
        "",
        *_table(outcome.results),
        "",
        _summary(outcome),
        *(f"FAILED: {result.check} ({result.partner})" for result in outcome.failed),
    ]
    if outcome.interrupted:
        lines.append("INTERRUPTED: the checks stopped early; the cleanup rows say what was undone")
    return "\n".join(scrub(line, secrets) for line in lines) + "\n"


def _table(results: tuple[CheckResult, ...]) -> list[str]:
    rows = [(r.check, r.partner, "PASS" if r.passed else "FAIL", r.evidence) for r in results]
    widths = [
        max(len(column), *(len(row[index]) for row in rows)) if rows else len(column)
        for index, column in enumerate(COLUMNS[:3])
    ]
    indent = " " * (sum(widths) + len(GAP) * 3)
    lines = [_cells(COLUMNS[:3], widths) + GAP + COLUMNS[3]]
    for check, partner, result, evidence in rows:
        cells = _cells((check, partner, result), widths)
        first, *more = evidence or ("",)
        lines.append(f"{cells}{GAP}{first}".rstrip())
        lines.extend(f"{indent}{line}" for line in more)
    return lines


def _cells(values: tuple[str, ...], widths: list[int]) -> str:
    return GAP.join(value.ljust(width) for value, width in zip(values, widths, strict=True))


def _summary(outcome: RunOutcome) -> str:
    total, failed = len(outcome.results), len(outcome.failed)
    return f"{total} checks: {total - failed} passed, {failed} failed"

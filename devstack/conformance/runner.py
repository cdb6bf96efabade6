"""The checks in order, partner by partner, then the cleanup, whatever happened.

The cleanup runs in a `finally`: after the last check, after a check that failed or
raised, after Ctrl-C (or SIGTERM, turned into the same) in the middle of a check. Its rows
close the table, so what the run made and undid is always reported.
"""

import contextlib
import logging
import signal
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType

from . import checks
from .checks import Check, CheckResult, PartnerRun, Verdict
from .contract import PartnerUnderTest
from .http import KEY_PREFIX, PartnerHttp

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpOptions:
    timeout: float
    retries: int
    max_wait: float


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    results: tuple[CheckResult, ...]
    interrupted: bool

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(result for result in self.results if not result.passed)


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def run_checks(
    partners: list[PartnerUnderTest], options: HttpOptions, run_id: str | None = None
) -> RunOutcome:
    """Every check against every partner, then every cleanup; never raises for a partner."""
    run_id = run_id or new_run_id()
    runs = [_partner_run(partner, options, run_id) for partner in partners]
    results: list[CheckResult] = []
    interrupted = False
    with _sigterm_as_interrupt():
        try:
            for run in runs:
                results.extend(_judge(check, run) for check in checks.CHECKS)
        except KeyboardInterrupt:
            interrupted = True
            logger.warning("run %s interrupted: cleaning up before stopping", run_id)
        finally:
            results.extend(_judge(checks.CLEANUP, run, after_no_answer=True) for run in runs)
            for run in runs:
                run.http.close()
    interrupted = interrupted or any(run.cleanup_interrupted for run in runs)
    return RunOutcome(run_id=run_id, results=tuple(results), interrupted=interrupted)


def _partner_run(partner: PartnerUnderTest, options: HttpOptions, run_id: str) -> PartnerRun:
    http = PartnerHttp(
        base_url=partner.base_url,
        # One X-Request-ID for the whole run: the partner finds all of it in its logs.
        request_id=f"{KEY_PREFIX}{run_id}",
        timeout=options.timeout,
        retries=options.retries,
        max_wait=options.max_wait,
    )
    return PartnerRun(partner=partner, http=http, run_id=run_id)


def _judge(check: Check, run: PartnerRun, *, after_no_answer: bool = False) -> CheckResult:
    """One check as a row; a partner that stopped answering, or an answer the check did
    not foresee, is a FAIL with the reason, never a traceback."""
    name = check.name_for(run.partner)
    if run.no_answer and not after_no_answer:
        outcome = Verdict(False, (f"not run: {run.partner.name} gave no answer above",))
    else:
        try:
            outcome = check.judge(run)
        except Exception as exc:
            logger.exception("check %r on %s failed to run", name, run.partner.name)
            outcome = Verdict(False, (f"the check could not judge: {type(exc).__name__}: {exc}",))
    return CheckResult(name, run.partner.name, outcome.passed, outcome.evidence)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a CI job cancelled) cleans up as Ctrl-C does. Only the main thread may
    set a handler; elsewhere SIGTERM keeps its default."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

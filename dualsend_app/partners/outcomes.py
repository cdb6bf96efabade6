"""The retry decision: one function to hold against the tables of partner-apis.md.

| answer                                             | decision  |
| -------------------------------------------------- | --------- |
| 2xx                                                | SUCCEEDED |
| 404 to a compensation (release, refund)            | SUCCEEDED, nothing to undo |
| 409 idempotency_in_progress                        | RETRY     |
| 408, 429, 5xx                                      | RETRY     |
| no answer: connection refused or reset, timeout    | RETRY     |
| any other 4xx (400 401 402 403 404 409 422 …)      | FAILED, a definite no |
| anything else (1xx, 3xx): not in the contract      | RETRY; retries exhausted = unknown |
"""

import enum
from dataclasses import dataclass


class Outcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    RETRY = "retry"
    FAILED = "failed"


TRANSIENT_STATUS_CODES = frozenset({408, 429})


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str
    nothing_to_undo: bool = False


def decide(*, status_code, error_code, is_compensation):
    """What an answer means for dualsend (`status_code` None: no answer at all)."""
    if status_code is None:
        return Decision(Outcome.RETRY, "no answer")
    if 200 <= status_code < 300:
        return Decision(Outcome.SUCCEEDED, f"http {status_code}")
    if status_code == 404 and is_compensation:
        return Decision(Outcome.SUCCEEDED, "not found: nothing to undo", nothing_to_undo=True)
    if status_code == 409 and error_code == "idempotency_in_progress":
        return Decision(Outcome.RETRY, "idempotency_in_progress")
    if status_code in TRANSIENT_STATUS_CODES or status_code >= 500:
        return Decision(Outcome.RETRY, _reason(status_code, error_code))
    if 400 <= status_code < 500:
        return Decision(Outcome.FAILED, _reason(status_code, error_code))
    return Decision(Outcome.RETRY, f"unexpected http {status_code}")


def _reason(status_code, error_code):
    return f"http {status_code} {error_code}".strip()

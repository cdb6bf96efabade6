"""The retry decision: one function to hold against the tables of partner-apis.md.

| answer                                          | outcome   | partner's health  |
| ----------------------------------------------- | --------- | ----------------- |
| 2xx                                             | SUCCEEDED | healthy           |
| 404 to a compensation (release, refund)         | SUCCEEDED, nothing to undo | healthy |
| 409 idempotency_in_progress                     | RETRY     | says nothing      |
| 429                                             | RETRY     | says nothing      |
| 408, 5xx                                        | RETRY     | failing           |
| no answer: connection refused or reset, timeout | RETRY     | failing           |
| any other 4xx (400 401 402 403 404 409 422 …)   | FAILED, a definite no | healthy |
| anything else (1xx, 3xx): not in the contract   | RETRY; retries exhausted = unknown | failing |

The last column is what the circuit breaker counts (`resilience/gate.py`): a 429 is the
partner setting the pace and a 409 in progress is our own earlier request still running;
neither says the partner is failing, nor that it is well.
"""

from dataclasses import dataclass

from django.db import models


class AnswerOutcome(models.TextChoices):
    """What one partner answer means for its send (also `Attempt.outcome`)."""

    SUCCEEDED = "succeeded"
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True)
class Decision:
    outcome: AnswerOutcome
    reason: str
    nothing_to_undo: bool = False
    # False for the answers that say nothing about the partner's health (see the table).
    tells_health: bool = True


def decide(*, status_code: int | None, error_code: str, is_compensation: bool) -> Decision:
    """What an answer means for dualsend (`status_code` None: no answer at all)."""
    if status_code is None:
        return Decision(AnswerOutcome.RETRY, "no answer")
    if 200 <= status_code < 300:
        return Decision(AnswerOutcome.SUCCEEDED, f"http {status_code}")
    if status_code == 404 and is_compensation:
        return Decision(
            AnswerOutcome.SUCCEEDED, "not found: nothing to undo", nothing_to_undo=True
        )
    if status_code == 409 and error_code == "idempotency_in_progress":
        return Decision(AnswerOutcome.RETRY, "idempotency_in_progress", tells_health=False)
    if status_code == 429:
        return Decision(AnswerOutcome.RETRY, _reason(status_code, error_code), tells_health=False)
    if status_code == 408 or status_code >= 500:
        return Decision(AnswerOutcome.RETRY, _reason(status_code, error_code))
    if 400 <= status_code < 500:
        return Decision(AnswerOutcome.FAILED, _reason(status_code, error_code))
    return Decision(AnswerOutcome.RETRY, f"unexpected http {status_code}")


def _reason(status_code: int, error_code: str) -> str:
    return f"http {status_code} {error_code}".strip()

"""One request of the kit to a partner, with the retries the contract asks for.

Transient answers (partner-apis.md: `408`, `409 idempotency_in_progress`, `429`, `5xx`,
no answer) are retried a bounded number of times with the same `Idempotency-Key` and
the same bytes, never sooner than `Retry-After`; a wait longer than `max_wait` is not
made, and the answer stands. When `X-RateLimit-Remaining` reaches 0 the next request
waits for `X-RateLimit-Reset`. Every exchange is kept, for the checks that judge every
answer (rate-limit headers, error shape).
"""

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import requests
from requests.structures import CaseInsensitiveDict

from dualsend_app.partners.http import canonical_json, retry_after_seconds

from .contract import Credentials

FIRST_BACKOFF_S = 0.5
_ERRNO = re.compile(r"\[Errno -?\d+\][^'\")]*")
BODY_SHOWN_CHARS = 160
# Every Idempotency-Key and X-Request-ID of the kit starts so: a partner finds a run's
# requests in its logs by `check-partner-<run id>`.
KEY_PREFIX = "check-partner-"
RATE_LIMIT_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


@dataclass(frozen=True)
class Exchange:
    """One request, after its retries, and its last answer (or why there was none)."""

    method: str
    path: str
    credentials_label: str
    authenticated: bool
    key: str
    status: int | None
    headers: Mapping[str, str] = field(default_factory=CaseInsensitiveDict)
    body: Any = None
    text: str = ""
    error: str = ""
    waits: tuple[str, ...] = ()

    @property
    def error_code(self) -> str:
        """The contract's `{"error": {"code": …}}`, or ''."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return str(self.body["error"].get("code", ""))
        return ""

    def body_field(self, name: str) -> Any:
        return self.body.get(name) if isinstance(self.body, dict) else None

    def answer(self) -> str:
        """`201 {"reservation_id":…}`, or `no answer: ConnectionError …`."""
        if self.status is None:
            return f"no answer: {self.error}"
        return f"{self.status} {self.text[:BODY_SHOWN_CHARS]}".rstrip()

    def describe(self) -> str:
        """The request and its answer, as the table's evidence shows it. The key shows
        by its last part: the table's heading gives the run's prefix."""
        retried = f" (after {'; '.join(self.waits)})" if self.waits else ""
        key = self.key.split("-", 3)[-1] if self.key.startswith(KEY_PREFIX) else self.key
        return (
            f"{self.method} {self.path} [{self.credentials_label}, key …{key}]"
            f" -> {self.answer()}{retried}"
        )


def is_transient(status: int | None, error_code: str) -> bool:
    """partner-apis.md's transient answers: worth the same request again, later."""
    if status is None:
        return True
    if status == 409:
        return error_code == "idempotency_in_progress"
    return status in (408, 429) or status >= 500


@dataclass
class PartnerHttp:
    """The kit's HTTP to one partner: its base URL, timeouts, retries and every exchange."""

    base_url: str
    request_id: str
    timeout: float
    retries: int
    max_wait: float
    sleep: Callable[[float], None] = time.sleep
    session: requests.Session = field(default_factory=requests.Session)
    exchanges: list[Exchange] = field(default_factory=list)

    def send(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None,
        key: str,
        credentials: Credentials,
    ) -> Exchange:
        """Send once, then again on a transient answer (bounded); never raises for HTTP."""
        # Serialized once: every retry carries the very bytes of the first attempt.
        data = canonical_json(body).encode() if body is not None else None
        waits: list[str] = []
        for attempt in range(self.retries + 1):
            exchange = self._once(method, path, data, key, credentials)
            if attempt == self.retries or not is_transient(exchange.status, exchange.error_code):
                break
            wait = self._wait_before_retry(exchange, attempt)
            if wait is None:
                waits.append(f"{_short(exchange)}, Retry-After over --max-wait: not retried")
                break
            waits.append(f"{_short(exchange)}, waited {wait:g} s")
            self.sleep(wait)
        exchange = replace(exchange, waits=tuple(waits))
        self.exchanges.append(exchange)
        self._slow_down_if_quota_spent(exchange)
        return exchange

    def _once(
        self, method: str, path: str, data: bytes | None, key: str, credentials: Credentials
    ) -> Exchange:
        headers = {
            "Accept": "application/json",
            "Idempotency-Key": key,
            "X-Request-ID": self.request_id,
        }
        if data is not None:
            headers["Content-Type"] = "application/json"
        sent = Exchange(
            method=method,
            path=path,
            credentials_label=credentials.label,
            authenticated=credentials.sent,
            key=key,
            status=None,
        )
        try:
            response = self.session.request(
                method,
                self.base_url + path,
                data=data,
                headers=headers,
                auth=credentials.auth,
                timeout=(self.timeout, self.timeout),
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            return replace(sent, error=self._why_no_answer(exc))
        return replace(
            sent,
            status=response.status_code,
            headers=response.headers,
            body=_json_or_none(response),
            text=response.text.replace("\n", " ").strip(),
        )

    def _why_no_answer(self, exc: requests.RequestException) -> str:
        """The cause in a few words: urllib3 wraps it in 'Max retries exceeded', which is
        not what happened (the kit itself retries, and says so)."""
        if isinstance(exc, requests.Timeout):
            return f"{type(exc).__name__}: no answer within {self.timeout:g} s"
        errno = _ERRNO.search(str(exc))
        return f"{type(exc).__name__}: {errno.group(0) if errno else exc}"[:300]

    def _wait_before_retry(self, exchange: Exchange, attempt: int) -> float | None:
        """Retry-After when the partner gave one (None if over max_wait), else a backoff."""
        retry_after = retry_after_seconds(exchange.headers)
        if retry_after is not None:
            return retry_after if retry_after <= self.max_wait else None
        return min(FIRST_BACKOFF_S * 2**attempt, self.max_wait)

    def _slow_down_if_quota_spent(self, exchange: Exchange) -> None:
        """The window is spent: wait for it to reset rather than be refused."""
        remaining = _number(exchange.headers.get("X-RateLimit-Remaining"))
        reset = _number(exchange.headers.get("X-RateLimit-Reset"))
        if remaining is not None and remaining <= 0 and reset is not None and reset > 0:
            self.sleep(min(reset, self.max_wait))

    def close(self) -> None:
        self.session.close()


def _short(exchange: Exchange) -> str:
    if exchange.status is None:
        return "no answer"
    return f"{exchange.status} {exchange.error_code}".rstrip()


def _json_or_none(response: requests.Response) -> Any:
    try:
        return response.json()
    except (ValueError, json.JSONDecodeError):
        return None


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None

"""The one HTTP helper every partner call goes through.

A pooled `requests.Session` per partner per process (keep-alive to each partner, never
shared across a fork), explicit connect and read timeouts, auth, and the correlation and
idempotency headers. It returns what happened on the wire, and decides nothing.
"""

import datetime
import email.utils
import json
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

import requests
from requests.adapters import HTTPAdapter

from project.partner_settings import PartnerSettings

from .redaction import without_credentials

# The headers anything downstream reads; the rest is not worth carrying in a task message.
KEPT_HEADERS = frozenset(
    {"retry-after", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"}
)

_sessions: dict[tuple[int, str], requests.Session] = {}
_sessions_lock = threading.Lock()


@dataclass(frozen=True)
class WireAnswer:
    """One HTTP call: the answer, or the exception when there was none."""

    status_code: int | None
    headers: dict = field(default_factory=dict)
    body: dict | None = None
    exception: str = ""
    duration_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        """The answer as task arguments: kept across a retry of the bookkeeping."""
        return {
            "status_code": self.status_code,
            "headers": {k: v for k, v in self.headers.items() if k.lower() in KEPT_HEADERS},
            "body": self.body,
            "exception": self.exception,
            "duration_ms": self.duration_ms,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(**data)

    @property
    def error_code(self) -> str:
        """The partner's `{"error": {"code": …}}`, or ''."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return str(self.body["error"].get("code", ""))
        return ""

    @property
    def error_message(self) -> str:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return str(self.body["error"].get("message", ""))
        return ""


def session_for(partner: str, *, pool_size: int, base_url: str) -> requests.Session:
    """The process's pooled session for a partner (a forked child builds its own)."""
    key = (os.getpid(), partner)
    with _sessions_lock:
        session = _sessions.get(key)
        if session is None:
            session = requests.Session()
            # No retries here: retrying is the task's decision, recorded attempt by attempt.
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            _read_environment_once(session, base_url)
            _sessions[key] = session
        return session


def _read_environment_once(session: requests.Session, base_url: str) -> None:
    """The proxy and CA bundle variables requests honours, read once for the session.

    With `trust_env` on, requests reads them again on every call (walking the whole
    environment for the proxy variables): 0.13 ms of CPU per call, 3 % of a send worker's
    CPU in `manage.py bench`. A partner's URL is fixed, and so is the environment of a
    running process. (requests' other use of it, `~/.netrc`, never applies: every call
    carries its own auth.)
    """
    session.trust_env = False
    session.proxies = requests.utils.get_environ_proxies(base_url)
    session.verify = (
        os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    )


def call(
    *,
    partner: str,
    config: PartnerSettings,
    auth: requests.auth.AuthBase,
    method: str,
    path: str,
    body: str,
    idempotency_key: str,
    request_id: str,
) -> WireAnswer:
    """Send one request to a partner and report what came back. Never raises for HTTP."""
    headers = {
        "Accept": "application/json",
        "Idempotency-Key": idempotency_key,
        "X-Request-ID": request_id,
    }
    if body:
        headers["Content-Type"] = "application/json"
    session = session_for(partner, pool_size=config.pool_size, base_url=config.base_url)
    started = time.monotonic()
    try:
        response = session.request(
            method,
            config.base_url + path,
            data=body.encode() if body else None,
            headers=headers,
            auth=auth,
            timeout=(config.connect_timeout, config.read_timeout),
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        return WireAnswer(
            status_code=None,
            exception=without_credentials(f"{type(exc).__name__}: {exc}")[:500],
            duration_ms=_elapsed_ms(started),
        )
    return WireAnswer(
        status_code=response.status_code,
        headers=dict(response.headers),
        body=_without_credentials_in_error(_json_or_none(response)),
        duration_ms=_elapsed_ms(started),
    )


def _without_credentials_in_error(body: Any) -> Any:
    """The partner's `{"error": {...}}` with no credential in its code or message: those
    are the texts we keep (the attempt's and the send's error, task arguments, logs), and
    a partner may echo our Authorization header in them."""
    if not (isinstance(body, dict) and isinstance(body.get("error"), dict)):
        return body
    error = {
        name: without_credentials(value) if isinstance(value, str) else value
        for name, value in body["error"].items()
    }
    return body | {"error": error}


def _json_or_none(response: requests.Response) -> Any:
    try:
        return response.json()
    except (ValueError, json.JSONDecodeError):
        return None


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


class BearerAuth(requests.auth.AuthBase):
    """`Authorization: Bearer <token>`."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


def canonical_json(document: dict[str, Any]) -> str:
    """The bytes a request body is stored and sent as: compact, keys in a fixed order."""
    return json.dumps(document, separators=(",", ":"), sort_keys=True)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """`Retry-After` in seconds (delta-seconds or an HTTP date), or None."""
    value = headers.get("Retry-After") or headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())

"""What the simulated partners really did, and what they promised to replay.

Two small in-memory structures, shared by the request handlers of one
simulator process (one asyncio loop, so no locks are needed):

* ``Ledger`` counts the real side effects per order (reservations, releases,
  charges, refunds) and keeps every request received. It never hides a double
  effect: a second reservation for an order that already holds one makes
  ``reserved`` 2, which is how the tests catch a client that acted twice.
* ``IdempotencyStore`` is one partner's memory of ``Idempotency-Key``s: the
  fingerprint of the first request (method, path, raw body bytes), whether it
  is still running, and the answer to replay once it finished.

Pure Python on purpose: no aiohttp, no Django, so both are easy to read and
to test on their own.
"""

import enum
import hashlib
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

EFFECT_COUNTERS = ("reserved", "released", "charged", "refunded")


@dataclass
class RequestRecord:
    """One request that reached a partner endpoint, as the partner saw it."""

    partner: str
    operation: str
    method: str
    path: str
    request_id: str
    idempotency_key: str | None
    order_id: str | None
    received_monotonic: float
    received_wall: float
    status: int | None = None  # None when the connection was dropped unanswered
    replayed: bool = False
    dropped: bool = False
    effect: bool = False  # True when this request changed the ledger's counters
    answered_monotonic: float | None = None
    # The W3C trace context the caller sent, if any: which trace this request belongs to.
    traceparent: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def by_arrival(records: Iterable[RequestRecord]) -> list[RequestRecord]:
    # Records are logged when answered; a slow request answers after a later one.
    return sorted(records, key=lambda record: record.received_monotonic)


@dataclass
class OrderEffects:
    """The counters of real effects for one order, plus the requests about it."""

    order_id: str
    reserved: int = 0
    released: int = 0
    charged: int = 0
    refunded: int = 0
    requests: list[RequestRecord] = field(default_factory=list)

    @property
    def reservation_standing(self) -> bool:
        return self.reserved > self.released

    @property
    def charge_standing(self) -> bool:
        return self.charged > self.refunded

    def to_json(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "reserved": self.reserved,
            "released": self.released,
            "charged": self.charged,
            "refunded": self.refunded,
            "reservation_standing": self.reservation_standing,
            "charge_standing": self.charge_standing,
            "requests": [record.to_json() for record in by_arrival(self.requests)],
        }


class Ledger:
    """Real effects per order and the log of every partner request."""

    def __init__(self) -> None:
        self._orders: dict[str, OrderEffects] = {}
        self._requests: list[RequestRecord] = []

    def reset(self) -> None:
        self._orders.clear()
        self._requests.clear()

    def order(self, order_id: str) -> OrderEffects:
        """The entry for ``order_id``; an unknown order reads as all zeros."""
        return self._orders.get(order_id) or OrderEffects(order_id=order_id)

    def _entry(self, order_id: str) -> OrderEffects:
        if order_id not in self._orders:
            self._orders[order_id] = OrderEffects(order_id=order_id)
        return self._orders[order_id]

    def record_effect(self, order_id: str, counter: str) -> None:
        """Count one real effect; ``counter`` is one of ``EFFECT_COUNTERS``."""
        if counter not in EFFECT_COUNTERS:
            raise ValueError(f"unknown effect counter {counter!r}")
        entry = self._entry(order_id)
        setattr(entry, counter, getattr(entry, counter) + 1)

    def log_request(self, record: RequestRecord) -> None:
        """Keep ``record``; it is a live object, so later updates show too."""
        self._requests.append(record)
        if record.order_id:
            self._entry(record.order_id).requests.append(record)

    def requests(
        self, request_id: str | None = None, order_id: str | None = None
    ) -> list[RequestRecord]:
        """Logged requests in arrival order, filtered by whichever ids are given."""
        return by_arrival(
            record
            for record in self._requests
            if (request_id is None or record.request_id == request_id)
            and (order_id is None or record.order_id == order_id)
        )

    def to_json(self) -> dict[str, Any]:
        return {"orders": {oid: entry.to_json() for oid, entry in self._orders.items()}}


@dataclass(frozen=True)
class StoredAnswer:
    """A definite answer kept for replay: the same status and body every time."""

    status: int
    body: dict[str, Any]


class KeyState(enum.Enum):
    NEW = "new"  # the caller now owns the key and must complete or release it
    IN_PROGRESS = "in_progress"
    REUSED = "reused"  # same key, different request
    REPLAY = "replay"


@dataclass
class _KeyEntry:
    fingerprint: str
    answer: StoredAnswer | None = None  # None while the first request runs


@dataclass(frozen=True)
class KeyClaim:
    state: KeyState
    answer: StoredAnswer | None = None


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    """Byte-for-byte identity of a request, as partner-apis.md promises."""
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), body):
        # Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class IdempotencyStore:
    """One partner's keys. Kept until reset, which is longer than the 24 h promised."""

    def __init__(self) -> None:
        self._keys: dict[str, _KeyEntry] = {}

    def reset(self) -> None:
        self._keys.clear()

    def __len__(self) -> int:
        return len(self._keys)

    def claim(self, key: str, fingerprint: str) -> KeyClaim:
        """Start a request under ``key``, or say why it must not run."""
        entry = self._keys.get(key)
        if entry is None:
            self._keys[key] = _KeyEntry(fingerprint=fingerprint)
            return KeyClaim(KeyState.NEW)
        if entry.fingerprint != fingerprint:
            return KeyClaim(KeyState.REUSED)
        if entry.answer is None:
            return KeyClaim(KeyState.IN_PROGRESS)
        return KeyClaim(KeyState.REPLAY, entry.answer)

    def complete(self, key: str, answer: StoredAnswer) -> None:
        """Keep the definite answer of the request that claimed ``key``."""
        self._keys[key].answer = answer

    def release(self, key: str) -> None:
        """Forget a claim whose request did not act, so a retry runs again."""
        entry = self._keys.get(key)
        if entry is not None and entry.answer is None:
            del self._keys[key]


def now_pair() -> tuple[float, float]:
    """(monotonic, wall) clock readings taken together.

    The monotonic reading is CLOCK_MONOTONIC on Linux, shared by every process
    on the machine, so tests may compare it with their own ``time.monotonic()``.
    """
    return time.monotonic(), time.time()

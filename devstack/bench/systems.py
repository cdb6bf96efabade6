"""The three systems the bench holds side by side, each driven the same two ways.

* `round_trip(number, phase, deadline)`: one order, handed over and waited for, timed on
  the client's clock: the handing over → the client knows it is done.
* `burst(count, phase, deadline)`: `count` orders handed over as fast as the client can,
  then each one waited for; an order's `finished` is when the system had it done.

The systems:

* `Sequential`: the baseline, the sum: this process calls inventory, then payment, with
  `requests` (the bare chord's calls); a burst runs `threads` of them at once.
* `BareChord`: `bare_chord.submit` (a chord of the two calls and a callback, no records);
  the callback pushes the order onto a Redis list the client pops (one at a time) or
  counts (a burst: its timestamps say when each was done).
* `Dualsend`: the real HTTP API, as a client uses it: `POST /api/orders`, then
  `GET /api/orders/<id>?wait`; done is the order final with every record
  (`traffic.records_written`); in a burst, the order's own `settled_at`. It alone has a
  second burst, `batch_burst`: the same orders handed over 100 a request through its
  batch intake (`POST /api/orders/batch`), the client threads each taking a batch, then
  each accepted order waited for as in `burst`; an order the batch refused is not done.
"""

import gc
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import redis
import requests

from devstack.traffic.client import Kind, order_payload

from . import bare_chord, traffic
from .results import BARE, DUALSEND, SEQUENTIAL, Sample

T = TypeVar("T")
R = TypeVar("R")
POLL_SECONDS = 0.05


class System(Protocol):
    key: str

    def round_trip(self, number: int, phase: str, deadline: float) -> Sample: ...

    def burst(self, count: int, phase: str, deadline: float) -> list[Sample]: ...


def in_threads(threads: int, function: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """`function` over `items` from `threads` threads, the results in the items' order."""
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="bench") as pool:
        return list(pool.map(function, items))


def plain_order(order_id: str) -> dict[str, Any]:
    """A normal order as the partner calls need it (both partners accept it)."""
    payload = order_payload(Kind.NORMAL)
    return {
        "order_id": order_id,
        "items": payload["items"],
        "amount": payload["amount"],
        "currency": payload["currency"],
        "source": payload["payment_source"],
    }


def _slug(phase: str) -> str:
    return phase.replace(" ", "-")


def _remaining(deadline: float) -> float:
    return deadline - time.monotonic()


class Sequential:
    """The two calls one after the other, from this process."""

    key = SEQUENTIAL

    def __init__(self, access: bare_chord.PartnerAccess, run_id: str, threads: int) -> None:
        self.access = access
        self.run_id = run_id
        self.threads = threads

    def round_trip(self, number: int, phase: str, deadline: float) -> Sample:
        order = plain_order(f"{self.run_id}-seq-{_slug(phase)}-{number}")
        started = time.time()
        if _remaining(deadline) <= 0:
            return Sample(False, started, None, "deadline passed")
        try:
            bare_chord.reserve(self.access, order)
            bare_chord.charge(self.access, order)
        except requests.RequestException as exc:
            return Sample(False, started, None, str(exc))
        return Sample(True, started, time.time())

    def burst(self, count: int, phase: str, deadline: float) -> list[Sample]:
        return in_threads(
            self.threads, lambda number: self.round_trip(number, phase, deadline), range(count)
        )


class BareChord:
    """The bare chord, submitted from this process."""

    key = BARE

    def __init__(self, redis_url: str, run_id: str, threads: int) -> None:
        self.app = bare_chord.make_app(redis_url)
        self.redis = redis.Redis.from_url(redis_url)
        self.run_id = run_id
        self.threads = threads

    def _order(self, number: int, phase: str) -> dict[str, Any]:
        return plain_order(f"{self.run_id}-bare-{_slug(phase)}-{number}")

    def round_trip(self, number: int, phase: str, deadline: float) -> Sample:
        order = self._order(number, phase)
        reply = f"bench:{order['order_id']}"
        started = time.time()
        try:
            bare_chord.submit(self.app, order, reply)
            popped = self.redis.blpop([reply], timeout=max(0.1, _remaining(deadline)))
        except (redis.RedisError, OSError) as exc:
            return Sample(False, started, None, str(exc))
        if popped is None:
            return Sample(False, started, None, "no callback before the deadline")
        return Sample(True, started, time.time())

    def burst(self, count: int, phase: str, deadline: float) -> list[Sample]:
        reply = f"bench:{self.run_id}:{_slug(phase)}"
        orders = [self._order(number, phase) for number in range(count)]

        def hand_over(order: dict[str, Any]) -> float:
            started = time.time()
            bare_chord.submit(self.app, order, reply)
            return started

        started = in_threads(self.threads, hand_over, orders)
        while self.redis.llen(reply) < count and _remaining(deadline) > 0:
            time.sleep(POLL_SECONDS)
        done = {}
        for entry in self.redis.lrange(reply, 0, -1):
            order_id, moment = entry.decode().split()
            done[order_id] = float(moment)
        self.redis.delete(reply)
        return [
            Sample(order["order_id"] in done, begun, done.get(order["order_id"]))
            for order, begun in zip(orders, started, strict=True)
        ]

    def close(self) -> None:
        """While Redis still answers. Publishing a chord subscribes this process to its
        result (Celery's client does, dualsend's web too); the subscriptions of results
        held in reference cycles would end at exit, against a Redis gone by then, and
        Celery would retry for a minute: end them now, and forget them."""
        gc.collect()
        consumer = getattr(self.app.backend, "result_consumer", None)
        if consumer is not None:
            consumer.stop()
            consumer.subscribed_to.clear()
        self.redis.close()
        self.app.close()


class Dualsend:
    """dualsend through its HTTP API; keeps every order it placed (the records check and
    the breakdown of where the time goes read them)."""

    key = DUALSEND

    def __init__(self, web_url: str, token: str, run_id: str, threads: int) -> None:
        self.client = traffic.BenchClient(web_url, token)
        self.run_id = run_id
        self.threads = threads
        self.placed: dict[str, list[traffic.BenchOrder]] = {}
        self._lock = threading.Lock()

    def _orders(self, numbers: range, phase: str) -> list[traffic.BenchOrder]:
        orders = []
        for number in numbers:
            key = f"{self.run_id}-{_slug(phase)}-{number}"
            orders.append(
                traffic.BenchOrder(
                    number=number,
                    kind=Kind.NORMAL,
                    payload=order_payload(Kind.NORMAL),
                    idempotency_key=key,
                    request_id=key,
                    phase=phase,
                )
            )
        with self._lock:
            self.placed.setdefault(phase, []).extend(orders)
        return orders

    def round_trip(self, number: int, phase: str, deadline: float) -> Sample:
        (order,) = self._orders(range(number, number + 1), phase)
        self.client.round_trip(order, deadline)
        started = order.posted_wall or time.time()
        if not order.order_id or not order.is_final:
            return Sample(False, started, None, order.error or f"status {order.status}")
        ok = traffic.records_written(order.body)
        return Sample(ok, started, order.answered_wall, "" if ok else f"status {order.status}")

    def burst(self, count: int, phase: str, deadline: float) -> list[Sample]:
        """`count` orders, one `POST /api/orders` each, from the client threads."""
        orders = self._orders(range(count), phase)

        def post(order: traffic.BenchOrder) -> None:
            order.posted_wall = time.time()
            order.posted_at = time.monotonic()
            self.client.place(order)

        in_threads(self.threads, post, orders)
        return self._settled(orders, deadline)

    def batch_burst(self, count: int, phase: str, deadline: float) -> list[Sample]:
        """`count` orders in batches of `traffic.BATCH_SIZE`, one `POST /api/orders/batch`
        each, the client threads taking the batches in parallel; each order's clock starts
        when its batch is sent."""
        orders = self._orders(range(count), phase)
        size = traffic.BATCH_SIZE
        batches = [orders[start : start + size] for start in range(0, count, size)]

        def post(batch: list[traffic.BenchOrder]) -> None:
            sent_wall, sent_at = time.time(), time.monotonic()
            for order in batch:
                order.posted_wall, order.posted_at = sent_wall, sent_at
            self.client.place_batch(batch, request_id=batch[0].request_id)

        in_threads(self.threads, post, batches)
        return self._settled(orders, deadline)

    def _settled(self, orders: list[traffic.BenchOrder], deadline: float) -> list[Sample]:
        """Each placed order waited for (GET ?wait until final): its sample ends at its
        `settled_at`; ok when it completed with every record."""

        def wait(order: traffic.BenchOrder) -> None:
            if order.order_id:
                self.client.wait_until_settled(order, deadline)

        in_threads(self.threads, wait, orders)
        return [
            Sample(
                traffic.records_written(order.body),
                order.posted_wall or time.time(),
                traffic.settled_wall(order.body),
                order.error,
            )
            for order in orders
        ]

    def order_ids(self) -> list[str]:
        return [order.order_id for orders in self.placed.values() for order in orders
                if order.order_id]  # fmt: skip

"""The chaos run's client: place orders through POST /api/orders, read each one back once,
and keep every answer.

The orders are the demo's mix (mostly normal, some declined by the card, some out of
stock). Each has its own Idempotency-Key, and the client behaves as a real one does:
when a call gets no answer (connection refused or reset, timeout), a `503` (a dependency
is down), a `429` (slow down) or a `409` (the first request is still being created), it
waits (the `Retry-After` the answer gave, else a jittered backoff) and sends the same
request again, byte for byte, with the same key: dualsend must answer with the same
order, never a second one. A `5xx` other than `503` is retried the same way, so that the
order's fate is still known, but the verdict refuses any `500`. Every answer is kept.
"""

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import requests

from devstack.traffic import client as demo_traffic
from devstack.traffic.client import DemoOrder

# While Redis restarts, a POST may wait for the broker's publish to give up: be patient.
HTTP_TIMEOUT_SECONDS = 30.0
# A client gives an order this long, from its first POST, before it gives up on it.
PATIENCE_SECONDS = 180.0
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 8.0
# A Retry-After longer than this is taken as this (a client with a checkout page open).
RETRY_AFTER_CAP_SECONDS = 30.0
ACCEPTED = (200, 202)
READ = 200
ASK_AGAIN = (409, 429, 503)  # in flight, slow down, a dependency down: the answer comes later
POST = "POST"
GET = "GET"


@dataclass
class ChaosOrder(DemoOrder):
    # Every answer to this order's POSTs, in order: a status code, or the exception's name.
    answers: list[int | str] = field(default_factory=list)
    # Every answer to the GET of the order once it was placed.
    reads: list[int | str] = field(default_factory=list)

    @property
    def placed(self) -> bool:
        return self.order_id is not None

    def all_answers(self) -> list[tuple[str, int | str]]:
        return [(POST, answer) for answer in self.answers] + [(GET, a) for a in self.reads]


def orders_for(count: int, run_id: str, rng: random.Random) -> list[ChaosOrder]:
    """The demo's order mix, as ChaosOrders."""
    return [ChaosOrder(**vars(order)) for order in demo_traffic.order_mix(count, run_id, rng)]


def worth_asking_again(answer: int | str) -> bool:
    """No answer, a transient refusal, or a 5xx (the run fails on a 500, but the order may
    still exist, and its fate is worth reporting). Other 4xx are definite."""
    return isinstance(answer, str) or answer in ASK_AGAIN or answer >= 500


def pause_before_next_try(retry_after: str | None, tries: int, rng: random.Random) -> float:
    """`Retry-After` (seconds) when the answer gave one, else exponential backoff with
    full jitter: never sooner than the server asked, never a herd."""
    if retry_after is not None:
        try:
            return min(RETRY_AFTER_CAP_SECONDS, max(0.0, float(retry_after)))
        except ValueError:
            pass  # an HTTP date, or nonsense: back off as if none was given
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (tries - 1))
    return rng.uniform(BACKOFF_BASE_SECONDS / 2, max(BACKOFF_BASE_SECONDS / 2, ceiling))


class Client(demo_traffic.ApiClient):
    """dualsend's API, one pooled session per thread (the demo's client), every call
    retried as above until it is answered, definitely refused, or patience runs out."""

    def __init__(self, base_url: str, token: str, seed: int = 0) -> None:
        super().__init__(base_url, token)
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"{self.base_url}/api/orders"

    def place(self, order: ChaosOrder) -> ChaosOrder:
        """POST until an order id comes back; then GET it once, as a checkout page would."""
        headers = {"Idempotency-Key": order.idempotency_key, "X-Request-ID": order.request_id}

        def post() -> requests.Response:
            return self._session.post(
                self.url, json=order.payload, headers=headers, timeout=HTTP_TIMEOUT_SECONDS
            )

        response = self._call(post, order.answers, done=lambda code: code in ACCEPTED)
        if response is None or response.status_code not in ACCEPTED:
            order.error = _describe(order.answers, response)
            return order
        body = response.json()
        order.order_id, order.status, order.error = body["id"], body["status"], ""

        def get() -> requests.Response:
            return self._session.get(self.order_url(order.order_id), timeout=HTTP_TIMEOUT_SECONDS)

        read = self._call(get, order.reads, done=lambda code: code == READ)
        if read is not None and read.status_code == READ:
            order.status = read.json()["status"]
        return order

    def _call(
        self,
        send: Callable[[], requests.Response],
        answers: list[int | str],
        *,
        done: Callable[[int], bool],
    ) -> requests.Response | None:
        """`send()` until `done(status)` or a definite refusal (that response), or until
        the run is cancelled or patience runs out (the last response, or None)."""
        give_up_at = time.monotonic() + PATIENCE_SECONDS
        response = None
        tries = 0
        while not self.cancelled.is_set():
            tries += 1
            retry_after = None
            try:
                response = send()
            except requests.RequestException as exc:
                response = None
                answers.append(type(exc).__name__)
            else:
                answers.append(response.status_code)
                if done(response.status_code) or not worth_asking_again(response.status_code):
                    return response
                retry_after = response.headers.get("Retry-After")
            with self._rng_lock:
                pause = pause_before_next_try(retry_after, tries, self._rng)
            if time.monotonic() + pause >= give_up_at:
                break
            self.cancelled.wait(pause)
        return response


def _describe(answers: list[int | str], response: requests.Response | None) -> str:
    last = f": {response.text[:200]}" if response is not None else ""
    return f"POST answers {answers}{last}"


class Placer:
    """Places the orders from threads of its own, so that the caller's thread stays free
    to run the faults (and to start processes: see stack.py). `rate()` says how many
    orders per second, asked again after each order: the pace follows the schedule."""

    def __init__(
        self,
        client: Client,
        orders: list[ChaosOrder],
        *,
        rate: Callable[[], float],
        concurrency: int,
    ) -> None:
        self.client = client
        self.orders = orders
        self.rate = rate
        self.pool = ThreadPoolExecutor(concurrency, thread_name_prefix="chaos-client")
        self._futures: list[Future[ChaosOrder]] = []
        self._pacer = threading.Thread(target=self._submit_all, name="chaos-pacer", daemon=True)
        self.started_at: float | None = None
        self.last_submitted_at: float | None = None

    def start(self) -> None:
        self._pacer.start()

    @property
    def done(self) -> bool:
        return not self._pacer.is_alive() and all(future.done() for future in self._futures)

    @property
    def placed(self) -> list[ChaosOrder]:
        return [order for order in self.orders if order.placed]

    def submitted(self) -> int:
        return len(self._futures)

    def average_rate(self) -> float:
        """Orders per second from the first order to the last one handed to a client."""
        if self.started_at is None or self.last_submitted_at is None:
            return 0.0
        return len(self._futures) / max(self.last_submitted_at - self.started_at, 1e-3)

    def cancel(self) -> None:
        self.client.cancelled.set()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def _submit_all(self) -> None:
        self.started_at = time.monotonic()
        for order in self.orders:
            if self.client.cancelled.is_set():
                return
            try:
                self._futures.append(self.pool.submit(self.client.place, order))
            except RuntimeError:  # the pool was shut down: the run was cancelled
                return
            self.last_submitted_at = time.monotonic()
            if self.client.cancelled.wait(1.0 / self.rate()):
                return

"""The chaos run's client: place orders through POST /api/orders and keep every answer.

The orders are the demo's mix (mostly normal, some declined by the card, some out of
stock). Each has its own Idempotency-Key, so when a POST gets no answer (connection
error, timeout) or a `409` (the first request is still being created) the client sends
it again, byte for byte, as a real client would: dualsend must answer with the same
order, never a second one. Every answer is kept; the verdict refuses any `5xx`.
"""

import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import requests

from devstack.traffic import client as demo_traffic
from devstack.traffic.client import DemoOrder

# While Redis restarts, a POST may wait for the broker's publish to give up: be patient.
POST_TIMEOUT_SECONDS = 30.0
RETRY_PAUSE_SECONDS = 0.5
MAX_POST_TRIES = 8
ACCEPTED = (200, 202)
ASK_AGAIN = 409  # same key still being created: the answer comes on a later try


@dataclass
class ChaosOrder(DemoOrder):
    # Every answer to this order's POSTs, in order: a status code, or the exception's name.
    answers: list[int | str] = field(default_factory=list)

    @property
    def placed(self) -> bool:
        return self.order_id is not None


def orders_for(count: int, run_id: str, rng: random.Random) -> list[ChaosOrder]:
    """The demo's order mix, as ChaosOrders."""
    return [ChaosOrder(**vars(order)) for order in demo_traffic.order_mix(count, run_id, rng)]


class Client(demo_traffic.ApiClient):
    """dualsend's POST /api/orders, one pooled session per thread (the demo's client),
    retrying a POST byte for byte until it is answered."""

    @property
    def url(self) -> str:
        return f"{self.base_url}/api/orders"

    def place(self, order: ChaosOrder) -> ChaosOrder:
        """POST until an order id comes back, a definite refusal, or the tries run out."""
        headers = {"Idempotency-Key": order.idempotency_key, "X-Request-ID": order.request_id}
        for _ in range(MAX_POST_TRIES):
            if self.cancelled.is_set():
                return order
            answer = self._post(order, headers)
            order.answers.append(answer)
            if order.placed or not _worth_sending_again(answer):
                return order
            time.sleep(RETRY_PAUSE_SECONDS)
        return order

    def _post(self, order: ChaosOrder, headers: dict[str, str]) -> int | str:
        try:
            response = self._session.post(
                self.url, json=order.payload, headers=headers, timeout=POST_TIMEOUT_SECONDS
            )
        except requests.RequestException as exc:
            order.error = f"POST failed: {exc}"
            return type(exc).__name__
        if response.status_code in ACCEPTED:
            body = response.json()
            order.order_id, order.status, order.error = body["id"], body["status"], ""
        else:
            order.error = f"POST answered {response.status_code}: {response.text[:200]}"
        return response.status_code


def _worth_sending_again(answer: int | str) -> bool:
    """No answer, a 409 in flight, or a 5xx (already a failure of the run, but the order
    may still be created, and its fate is worth reporting). Other 4xx are definite."""
    return isinstance(answer, str) or answer == ASK_AGAIN or answer >= 500


class Placer:
    """Places the orders at a steady pace from threads of its own, so that the caller's
    thread stays free to run the faults (and to start processes: see stack.py)."""

    def __init__(
        self, client: Client, orders: list[ChaosOrder], *, rate: float, concurrency: int
    ) -> None:
        self.client = client
        self.orders = orders
        self.rate = rate
        self.pool = ThreadPoolExecutor(concurrency, thread_name_prefix="chaos-client")
        self._futures: list[Future[ChaosOrder]] = []
        self._pacer = threading.Thread(target=self._submit_all, name="chaos-pacer", daemon=True)

    def start(self) -> None:
        self._pacer.start()

    @property
    def done(self) -> bool:
        return not self._pacer.is_alive() and all(future.done() for future in self._futures)

    @property
    def placed(self) -> list[ChaosOrder]:
        return [order for order in self.orders if order.placed]

    def answered(self) -> int:
        """Orders whose POSTs are over (placed or refused)."""
        return sum(future.done() for future in self._futures)

    def cancel(self) -> None:
        self.client.cancelled.set()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def _submit_all(self) -> None:
        started = time.monotonic()
        for index, order in enumerate(self.orders):
            if self.client.cancelled.is_set():
                return
            time.sleep(max(0.0, started + index / self.rate - time.monotonic()))
            try:
                self._futures.append(self.pool.submit(self.client.place, order))
            except RuntimeError:  # the pool was shut down: the run was cancelled
                return

"""The demo's client side: place orders through dualsend's HTTP API, wait until they settle.

Each order has its own Idempotency-Key and X-Request-ID, as a real client's would, so a
POST that failed on the way (connection reset, 5xx, 409 still in flight) is simply sent
again: dualsend answers with the same order, never a second one.
"""

import contextlib
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from types import ModuleType
from typing import Any

import requests
from rich.console import Console
from rich.progress import Progress, TaskID

from devstack.traffic.progress import progress_bar
from dualsend_app.models import Order

FINAL_STATUSES = frozenset(str(status) for status in Order.FINAL_STATUSES)
POST_TRIES = 4
POST_RETRY_SECONDS = 0.5
HTTP_TIMEOUT = 10.0
LONG_POLL_SECONDS = 5
# Answers that say "not now" rather than "no": the same request goes again, same key.
TRANSIENT = frozenset({409, 429})
EARLY_ANSWER_SECONDS = 0.5
EARLY_ANSWER_PAUSE_SECONDS = 0.25
SKUS = [f"SKU-{number}" for number in range(1, 21)]
# Where the orders' randomness comes from: a seeded Random, or the random module itself.
Rng = random.Random | ModuleType


class Kind(StrEnum):
    NORMAL = "normal"
    DECLINED = "card declined"
    OUT_OF_STOCK = "out of stock"


@dataclass
class DemoOrder:
    number: int
    kind: Kind
    payload: dict
    idempotency_key: str
    request_id: str
    order_id: str | None = None
    status: str | None = None
    error: str = ""

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


# --- the orders ---------------------------------------------------------------------------


def order_mix(count: int, run_id: str, rng: Rng = random) -> list[DemoOrder]:
    """Mostly normal orders; about one in ten declined by the card, one in ten out of stock."""
    odd_ones = max(1, round(count / 10)) if count >= 3 else 0
    kinds = [Kind.DECLINED] * odd_ones + [Kind.OUT_OF_STOCK] * odd_ones
    kinds += [Kind.NORMAL] * (count - len(kinds))
    rng.shuffle(kinds)
    return [
        DemoOrder(
            number=number,
            kind=kind,
            payload=order_payload(kind, rng),
            idempotency_key=f"{run_id}-order-{number}",
            request_id=f"{run_id}-{number}",
        )
        for number, kind in enumerate(kinds, start=1)
    ]


def order_payload(kind: Kind, rng: Rng = random) -> dict[str, Any]:
    items = [
        {"sku": sku, "quantity": rng.randint(1, 5)} for sku in rng.sample(SKUS, k=rng.randint(1, 3))
    ]
    if kind == Kind.OUT_OF_STOCK:
        items[0]["sku"] = f"OOS-{rng.randint(1, 99)}"
    return {
        "items": items,
        "amount": rng.randint(5, 250) * 100 - 1,
        "currency": rng.choice(["usd", "eur"]),
        "payment_source": "tok_chargeDeclined" if kind == Kind.DECLINED else "tok_visa",
    }


# --- dualsend's API -----------------------------------------------------------------------


def retry_after(response: requests.Response | None) -> float:
    """The seconds a 429 or 503 asks us to wait (0 when it names none)."""
    if response is None:
        return 0.0
    try:
        return float(response.headers.get("Retry-After", 0))
    except ValueError:
        return 0.0


class ApiClient:
    """dualsend's HTTP API, one pooled session per thread."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._local = threading.local()
        self.cancelled = threading.Event()

    @property
    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
            self._local.session.headers["Authorization"] = f"Bearer {self.token}"
        return self._local.session

    def order_url(self, order_id: str) -> str:
        return f"{self.base_url}/api/orders/{order_id}"

    def place(self, order: DemoOrder) -> DemoOrder:
        """POST the order, sending it again (same key, same body) after a transient failure."""
        headers = {"Idempotency-Key": order.idempotency_key, "X-Request-ID": order.request_id}
        for attempt in range(1, POST_TRIES + 1):
            if self.cancelled.is_set():
                break
            response = None  # no answer at all: a plain pause before the next try
            try:
                response = self._session.post(
                    f"{self.base_url}/api/orders",
                    json=order.payload,
                    headers=headers,
                    timeout=HTTP_TIMEOUT,
                )
            except requests.RequestException as exc:
                order.error = f"POST failed: {exc}"
            else:
                if response.status_code in (200, 201, 202):
                    body = response.json()
                    order.order_id, order.status, order.error = body["id"], body["status"], ""
                    return order
                order.error = f"POST answered {response.status_code}: {response.text[:200]}"
                if response.status_code < 500 and response.status_code not in TRANSIENT:
                    return order  # a definite no: sending it again cannot help
            if attempt < POST_TRIES:
                time.sleep(max(POST_RETRY_SECONDS * attempt, retry_after(response)))
        return order

    def wait_until_final(self, order: DemoOrder, deadline: float) -> DemoOrder:
        """Long-poll GET /api/orders/<id>?wait=N until the order is final or time is up."""
        while not order.is_final and time.monotonic() < deadline and not self.cancelled.is_set():
            wait = max(1, min(LONG_POLL_SECONDS, int(deadline - time.monotonic())))
            asked = time.monotonic()
            try:
                order.status = self.get_order(order.order_id, wait=wait)["status"]
            except requests.HTTPError as exc:
                order.error = f"GET failed: {exc}"
                time.sleep(max(POST_RETRY_SECONDS, retry_after(exc.response)))
            except (requests.RequestException, ValueError, KeyError) as exc:
                order.error = f"GET failed: {exc}"
                time.sleep(POST_RETRY_SECONDS)
            else:
                if not order.is_final and time.monotonic() - asked < EARLY_ANSWER_SECONDS:
                    # Answered at once (the server's long polls were all taken): ask again
                    # a little later, not in a tight loop that spends our rate limit.
                    time.sleep(EARLY_ANSWER_PAUSE_SECONDS)
        return order

    def get_order(self, order_id: str, *, wait: int) -> dict[str, Any]:
        """GET /api/orders/<id>?wait=N: the order's JSON, long-polled up to `wait` seconds."""
        response = self._session.get(
            self.order_url(order_id), params={"wait": wait}, timeout=wait + HTTP_TIMEOUT
        )
        response.raise_for_status()
        return response.json()


# --- placing and waiting, with progress bars ------------------------------------------------


def place_and_settle(
    client: ApiClient,
    orders: list[DemoOrder],
    *,
    rate: float,
    concurrency: int,
    timeout: float,
    console: Console,
) -> list[DemoOrder]:
    """Place every order, `rate` per second (0: all at once), then wait for all of them.

    `timeout` bounds placing and settling together. On Ctrl-C the queued work is
    cancelled and the polling threads stop after their current request, so the demo can
    go on to stop its processes.
    """
    deadline = time.monotonic() + timeout
    with (
        client_pool(client, concurrency, "demo-client") as pool,
        progress_bar(console, statuses=True) as progress,
    ):
        _place(pool, progress, client, orders, rate)
        _settle(pool, progress, client, [order for order in orders if order.order_id], deadline)
    return orders


@contextlib.contextmanager
def client_pool(client: ApiClient, concurrency: int, name: str) -> Iterator[ThreadPoolExecutor]:
    """Threads for `client`'s calls. On any exception, Ctrl-C included, the queued calls
    are cancelled and the running ones told to stop after their current request, so the
    caller can go on to stop its processes instead of waiting for every order."""
    pool = ThreadPoolExecutor(concurrency, thread_name_prefix=name)
    try:
        yield pool
    except BaseException:
        client.cancelled.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _place(
    pool: ThreadPoolExecutor,
    progress: Progress,
    client: ApiClient,
    orders: list[DemoOrder],
    rate: float,
) -> None:
    """Submit each order at its time on a steady schedule, as a stream of clients would."""
    placing = progress.add_task("placing orders", total=len(orders), statuses="")
    started = time.monotonic()
    futures = []
    for index, order in enumerate(orders):
        if rate:
            time.sleep(max(0.0, started + index / rate - time.monotonic()))
        futures.append(pool.submit(client.place, order))
        futures[-1].add_done_callback(lambda _: progress.advance(placing))
    for future in futures:
        future.result()


def _settle(
    pool: ThreadPoolExecutor,
    progress: Progress,
    client: ApiClient,
    orders: list[DemoOrder],
    deadline: float,
) -> None:
    settling = progress.add_task("settling", total=len(orders), statuses="")
    futures = [pool.submit(client.wait_until_final, order, deadline) for order in orders]
    while not all(future.done() for future in futures):
        _show_settling(progress, settling, orders)
        time.sleep(0.1)
    _show_settling(progress, settling, orders)
    for future in futures:
        future.result()


def _show_settling(progress: Progress, task: TaskID, orders: list[DemoOrder]) -> None:
    counts = Counter(order.status for order in orders if order.is_final)
    statuses = "  ".join(f"{status} {count}" for status, count in sorted(counts.items()))
    progress.update(task, completed=sum(counts.values()), statuses=statuses)

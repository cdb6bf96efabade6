"""A bare Celery chord: the yardstick `manage.py bench` holds dualsend against.

Two tasks call the partners with `requests` (a pooled Session per thread, the headers and
bodies the partner contract asks for: auth, Idempotency-Key, X-Request-ID, the fields),
and a callback says the order is done: it pushes `"<order id> <time.time()>"` onto the
Redis list the client named. No database, no record, no retry, no breaker, no limiter:
what any Celery user would write first. Its own app name and queues (`bare.*`), on the
bench's broker, with the same Redis as its result backend (the chord's join).

Its workers load this file as a top-level module (`celery -A bare_chord worker`, with
devstack/bench/ on PYTHONPATH), so they import Celery, requests and redis only, never
devstack (which would pull Django, aiohttp and more into their memory): this module
imports nothing of the project. The bench's client side imports it as
`devstack.bench.bare_chord` and uses `make_app()`, `submit()` and the two partner calls
(the sequential baseline makes them too).
"""

import json
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis
import requests
from celery import Celery, chord
from kombu import Queue
from requests.adapters import HTTPAdapter
from requests.auth import HTTPBasicAuth

APP_NAME = "bare_chord"
REDIS_URL_VARIABLE = "BARE_CHORD_REDIS_URL"
INVENTORY_TASK = "bare.inventory"
PAYMENT_TASK = "bare.payment"
SETTLE_TASK = "bare.settle"
QUEUES = {"inventory": "bare.inventory", "payment": "bare.payment", "default": "bare.default"}
HTTP_TIMEOUT = (3.05, 10.0)  # dualsend's partner defaults: connect, read
POOL_SIZE = 64
REPLY_TTL_SECONDS = 3600


@dataclass(frozen=True)
class PartnerAccess:
    """Where the two partners are and their credentials (the bench's simulators)."""

    inventory_url: str
    inventory_token: str
    payment_url: str
    payment_key: str

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> "PartnerAccess":
        return cls(
            inventory_url=environ["BARE_INVENTORY_URL"],
            inventory_token=environ["BARE_INVENTORY_TOKEN"],
            payment_url=environ["BARE_PAYMENT_URL"],
            payment_key=environ["BARE_PAYMENT_KEY"],
        )

    def environment(self) -> dict[str, str]:
        return {
            "BARE_INVENTORY_URL": self.inventory_url,
            "BARE_INVENTORY_TOKEN": self.inventory_token,
            "BARE_PAYMENT_URL": self.payment_url,
            "BARE_PAYMENT_KEY": self.payment_key,
        }


# --- the two partner calls (the sequential baseline makes them too) -----------------------

_local = threading.local()


def thread_session() -> requests.Session:
    """This thread's pooled Session (keep-alive to both partners)."""
    session = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=POOL_SIZE, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        _local.session = session
    return session


def _post(url: str, body: dict[str, Any], key: str, order_id: str, auth: Any) -> int:
    response = thread_session().post(
        url,
        data=json.dumps(body, separators=(",", ":"), sort_keys=True),
        headers={
            "Content-Type": "application/json",
            "Idempotency-Key": key,
            "X-Request-ID": order_id,
        },
        auth=auth,
        timeout=HTTP_TIMEOUT,
    )
    response.raise_for_status()  # a fault-free partner: anything but 2xx is a bench failure
    return response.status_code


def reserve(access: PartnerAccess, order: dict[str, Any]) -> int:
    """POST /v1/reservations at the inventory partner (bearer token)."""
    return _post(
        f"{access.inventory_url}/v1/reservations",
        {"order_id": order["order_id"], "items": order["items"]},
        f"{order['order_id']}-reserve",
        order["order_id"],
        _Bearer(access.inventory_token),
    )


def charge(access: PartnerAccess, order: dict[str, Any]) -> int:
    """POST /v1/charges at the payment partner (basic auth, the key as user name)."""
    return _post(
        f"{access.payment_url}/v1/charges",
        {
            "order_id": order["order_id"],
            "amount": order["amount"],
            "currency": order["currency"],
            "source": order["source"],
        },
        f"{order['order_id']}-charge",
        order["order_id"],
        HTTPBasicAuth(access.payment_key, ""),
    )


class _Bearer(requests.auth.AuthBase):
    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


# --- the app ----------------------------------------------------------------------------


def make_app(redis_url: str) -> Celery:
    """The bare app on `redis_url` (broker and result backend), its three tasks registered."""
    app = Celery(APP_NAME, broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=REPLY_TTL_SECONDS,
        task_default_queue=QUEUES["default"],
        task_queues=tuple(Queue(name) for name in QUEUES.values()),
        task_routes={
            INVENTORY_TASK: {"queue": QUEUES["inventory"]},
            PAYMENT_TASK: {"queue": QUEUES["payment"]},
            SETTLE_TASK: {"queue": QUEUES["default"]},
        },
        broker_connection_retry_on_startup=True,
    )
    replies = redis.Redis.from_url(redis_url)
    access: list[PartnerAccess] = []  # read from the environment at the first call

    def partners() -> PartnerAccess:
        if not access:
            access.append(PartnerAccess.from_environment())
        return access[0]

    @app.task(name=INVENTORY_TASK)
    def inventory(order: dict[str, Any]) -> int:
        return reserve(partners(), order)

    @app.task(name=PAYMENT_TASK)
    def payment(order: dict[str, Any]) -> int:
        return charge(partners(), order)

    @app.task(name=SETTLE_TASK)
    def settle(results: list[int], order_id: str, reply_key: str) -> None:
        pipe = replies.pipeline()
        pipe.rpush(reply_key, f"{order_id} {time.time()}")
        pipe.expire(reply_key, REPLY_TTL_SECONDS)
        pipe.execute()

    return app


def submit(app: Celery, order: dict[str, Any], reply_key: str) -> None:
    """One order's chord: both calls at once, then the callback."""
    header = [
        app.signature(INVENTORY_TASK, args=(order,)),
        app.signature(PAYMENT_TASK, args=(order,)),
    ]
    callback = app.signature(SETTLE_TASK, args=(order["order_id"], reply_key))
    chord(header, callback, app=app).apply_async()


_worker_app: list[Celery] = []


def __getattr__(name: str) -> Celery:
    """`app`, what `celery -A bare_chord worker` looks for: made at the first look, on the
    Redis the environment names. The bench's client makes its own (`make_app`), and only
    that one: two apps in one process would register each task name twice."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if not _worker_app:
        _worker_app.append(make_app(os.environ[REDIS_URL_VARIABLE]))
    return _worker_app[0]

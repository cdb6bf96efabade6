"""The inventory and payment partner simulators: two aiohttp apps, one process.

Both keep /work/shared/partner-apis.md exactly; any other server that keeps it
must work with dualsend too, so nothing here may be something only our client
relies on. Run them with::

    python -m devstack.simulators --inventory-port 8101 --payment-port 8102

Every partner request goes through the same stages, in this order:

1. auth (401 ``unauthorized``);
2. rate limit (429 ``rate_limited`` with ``Retry-After``; a refusal spends no quota);
3. JSON and field validation (400 ``invalid_json``, 422 ``invalid_request``);
   then a scripted ``gateway`` step, if it is the next one: answered here, before
   the idempotency store, as a load balancer in front of the API would;
4. idempotency: a missing key is 400 ``idempotency_key_required``; the same key
   with another method, path or body is 422 ``idempotency_key_reused``; the
   same key while the first request runs is 409 ``idempotency_in_progress``;
   the same key after it finished replays the stored answer with
   ``Idempotent-Replayed: true``. Replays and refusals consume no scripted step;
5. the fault: the next scripted step for (``X-Request-ID``, operation) if one
   is queued, otherwise the random knobs (``error_rate``, then
   ``decline_rate``, then ``drop_rate``). A scripted step replaces the random
   knobs for the request it matches;
6. the effect on the ledger, or a business decline (a definite answer, stored);
7. the latency sleep, during which the key stays in progress. The effect comes
   before the sleep on purpose: a client that times out and compensates must
   find the effect already there, never racing it;
8. the answer is stored (2xx and definite 4xx), or the key is released when
   the partner did not act, so a retry runs again; then it is sent, or the
   connection is dropped unanswered.

Both partners share one ledger and one script table (an order's reservation
and charge live in one ledger entry); each partner has its own knobs,
idempotency keys and rate limit window. ``/_sim/*`` control endpoints need no
auth and spend no quota.
"""

import argparse
import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import logging
import random
import signal
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from devstack.simulators.faults import (
    FaultStep,
    Knobs,
    Quota,
    RateLimitWindow,
    ScriptTable,
    parse_latency,
    parse_probability,
    parse_rate_limit,
    pick_random_error,
)
from devstack.simulators.ledger import (
    IdempotencyStore,
    KeyState,
    Ledger,
    RequestRecord,
    StoredAnswer,
    now_pair,
    request_fingerprint,
)

logger = logging.getLogger(__name__)

INVENTORY = "inventory"
PAYMENT = "payment"

# The simulators' published development credentials: not secrets, the demo's defaults.
DEV_INVENTORY_TOKEN = "dev-inventory-token"  # noqa: S105
DEV_PAYMENT_KEY = "dev-payment-key"

# aiohttp waits this long for in-flight handlers on shutdown, then cancels them.
SHUTDOWN_GRACE_S = 2.0
# Hundreds of clients connect at once in the benchmarks; the default 128 drops SYNs.
LISTEN_BACKLOG = 2048


# --- state --------------------------------------------------------------------


@dataclass(frozen=True)
class SimulatorSettings:
    host: str = "127.0.0.1"
    inventory_port: int = 8101
    payment_port: int = 8102
    inventory_token: str = DEV_INVENTORY_TOKEN
    payment_key: str = DEV_PAYMENT_KEY
    knobs: Knobs = field(default_factory=Knobs)
    seed: int | None = None


class PartnerState:
    """One partner's own knobs, idempotency keys, quota and randomness."""

    def __init__(self, name: str, startup_knobs: Knobs, credential: str, seed: int | None):
        self.name = name
        self.credential = credential
        self.startup_knobs = startup_knobs
        self.knobs = startup_knobs
        self.keys = IdempotencyStore()
        self.window = RateLimitWindow(startup_knobs.rate_limit, startup_knobs.rate_window_s)
        self.rng = random.Random(seed)

    def set_knobs(self, knobs: Knobs) -> None:
        if (knobs.rate_limit, knobs.rate_window_s) != (
            self.knobs.rate_limit,
            self.knobs.rate_window_s,
        ):
            self.window.configure(knobs.rate_limit, knobs.rate_window_s)
        self.knobs = knobs

    def reset(self) -> None:
        self.keys.reset()
        self.knobs = self.startup_knobs
        self.window.configure(self.knobs.rate_limit, self.knobs.rate_window_s)


class SimulatorState:
    """Everything both partners share in one process."""

    def __init__(self, settings: SimulatorSettings):
        self.ledger = Ledger()
        self.scripts = ScriptTable()
        seed = settings.seed
        self.partners = {
            INVENTORY: PartnerState(INVENTORY, settings.knobs, settings.inventory_token, seed),
            PAYMENT: PartnerState(
                PAYMENT, settings.knobs, settings.payment_key, None if seed is None else seed + 1
            ),
        }

    def reset(self) -> None:
        self.ledger.reset()
        self.scripts.reset()
        for partner in self.partners.values():
            partner.reset()


SIMULATOR = web.AppKey("simulator", SimulatorState)
PARTNER = web.AppKey("partner", PartnerState)
REQUEST_ID = web.RequestKey("request_id", str)
QUOTA = web.RequestKey("quota", Quota)


# --- answers ------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def stored(self) -> StoredAnswer:
        return StoredAnswer(self.status, self.body)


def error_answer(status: int, code: str, message: str, retry_after: int | None = None) -> Answer:
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    return Answer(status, {"error": {"code": code, "message": message}}, headers)


def json_response(answer: Answer, replayed: bool = False) -> web.Response:
    headers = dict(answer.headers)
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return web.json_response(answer.body, status=answer.status, headers=headers)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


# --- validation ---------------------------------------------------------------


def _non_empty_string(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


def _positive_int(payload: dict[str, Any], name: str) -> int:
    value = payload.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer")
    return value


def _items(payload: dict[str, Any]) -> list[dict[str, Any]]:
    items = payload.get("items")
    if not isinstance(items, list) or not items:
        raise ValueError("items must be a non-empty list")
    cleaned = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"items[{index}] must be an object")
        try:
            cleaned.append(
                {"sku": _non_empty_string(item, "sku"), "quantity": _positive_int(item, "quantity")}
            )
        except ValueError as exc:
            raise ValueError(f"items[{index}].{exc}") from None
    return cleaned


def _currency(payload: dict[str, Any]) -> str:
    value = payload.get("currency")
    if not (isinstance(value, str) and len(value) == 3 and value.isascii() and value.isalpha()):
        raise ValueError("currency must be a 3-letter code")
    return value


def validate_reservation(payload: dict[str, Any]) -> dict[str, Any]:
    return {"order_id": _non_empty_string(payload, "order_id"), "items": _items(payload)}


def validate_charge(payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "order_id": _non_empty_string(payload, "order_id"),
        "amount": _positive_int(payload, "amount"),
        "currency": _currency(payload),
        "source": _non_empty_string(payload, "source"),
    }


def validate_refund(payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "order_id": _non_empty_string(payload, "order_id"),
        "amount": _positive_int(payload, "amount"),
    }


# --- effects ------------------------------------------------------------------
# Each returns the definite answer and whether the ledger changed.


def reserve(ledger: Ledger, payload: dict[str, Any], decline: bool) -> tuple[Answer, bool]:
    order_id, items = payload["order_id"], payload["items"]
    missing = next((item["sku"] for item in items if item["sku"].startswith("OOS")), None)
    if missing is None and decline:
        missing = items[0]["sku"]
    if missing is not None:
        return error_answer(409, "out_of_stock", f"{missing} has 0 left"), False
    ledger.record_effect(order_id, "reserved")
    body = {
        "reservation_id": new_id("res"),
        "order_id": order_id,
        "status": "reserved",
        "items": items,
    }
    return Answer(201, body), True


def release(ledger: Ledger, payload: dict[str, Any], decline: bool) -> tuple[Answer, bool]:
    order_id = payload["order_id"]
    if not ledger.order(order_id).reservation_standing:
        return error_answer(404, "not_found", f"no reservation for order {order_id}"), False
    ledger.record_effect(order_id, "released")
    return Answer(200, {"order_id": order_id, "status": "released"}), True


def charge(ledger: Ledger, payload: dict[str, Any], decline: bool) -> tuple[Answer, bool]:
    if payload["source"] == "tok_chargeDeclined" or decline:
        return error_answer(402, "card_declined", "the card was declined"), False
    ledger.record_effect(payload["order_id"], "charged")
    body = {
        "charge_id": new_id("ch"),
        "order_id": payload["order_id"],
        "status": "captured",
        "amount": payload["amount"],
        "currency": payload["currency"],
    }
    return Answer(201, body), True


def refund(ledger: Ledger, payload: dict[str, Any], decline: bool) -> tuple[Answer, bool]:
    order_id = payload["order_id"]
    if not ledger.order(order_id).charge_standing:
        return error_answer(404, "not_found", f"no charge for order {order_id}"), False
    ledger.record_effect(order_id, "refunded")
    return Answer(
        201, {"refund_id": new_id("re"), "order_id": order_id, "status": "refunded"}
    ), True


@dataclass(frozen=True)
class Operation:
    name: str
    validate: Callable[[dict[str, Any]], dict[str, Any]] | None  # None: order_id in the path
    act: Callable[[Ledger, dict[str, Any], bool], tuple[Answer, bool]]
    can_decline: bool = False


RESERVE = Operation("reserve", validate_reservation, reserve, can_decline=True)
RELEASE = Operation("release", None, release)
CHARGE = Operation("charge", validate_charge, charge, can_decline=True)
REFUND = Operation("refund", validate_refund, refund)


# --- the partner request pipeline -----------------------------------------------

INVALID_JSON = object()  # what Call.parsed holds until a body parses


class Call:
    """One partner request on its way through the stages in the module docstring."""

    def __init__(self, request: web.Request, operation: Operation):
        self.request = request
        self.operation = operation
        self.partner = request.app[PARTNER]
        self.simulator = request.app[SIMULATOR]
        self.body = b""
        self.parsed: Any = INVALID_JSON
        self.payload: dict[str, Any] = {}
        self.key: str | None = None
        monotonic, wall = now_pair()
        self.record = RequestRecord(
            partner=self.partner.name,
            operation=operation.name,
            method=request.method,
            path=request.path,
            request_id=request[REQUEST_ID],
            idempotency_key=request.headers.get("Idempotency-Key"),
            order_id=request.match_info.get("order_id"),
            received_monotonic=monotonic,
            received_wall=wall,
        )

    # Stages 1-4 each return an answer that ends the request, or None to go on.

    def check_auth(self) -> Answer | None:
        header = self.request.headers.get("Authorization", "")
        check = bearer_matches if self.partner.name == INVENTORY else basic_matches
        if check(header, self.partner.credential):
            return None
        return error_answer(401, "unauthorized", "missing or wrong credentials")

    def check_rate_limit(self) -> Answer | None:
        quota = self.partner.window.take()
        self.request[QUOTA] = quota
        if quota.allowed:
            return None
        return error_answer(
            429,
            "rate_limited",
            f"more than {quota.limit} requests in the window",
            retry_after=quota.reset_seconds,
        )

    async def read_body(self) -> None:
        """Read and parse the body up front, so even a refused request is logged
        under its order; whether it is acceptable is decided at stage 3."""
        self.body = await self.request.read()
        if self.operation.validate is None:  # DELETE: the order is in the path
            return
        try:
            self.parsed = json.loads(self.body)
        except ValueError:
            return
        order_id = self.parsed.get("order_id") if isinstance(self.parsed, dict) else None
        if isinstance(order_id, str) and order_id:
            self.record.order_id = order_id

    def read_payload(self) -> Answer | None:
        if self.operation.validate is None:
            self.payload = {"order_id": self.request.match_info["order_id"]}
            return None
        if self.parsed is INVALID_JSON:
            return error_answer(400, "invalid_json", "the body is not valid JSON")
        if not isinstance(self.parsed, dict):
            return error_answer(422, "invalid_request", "the body must be a JSON object")
        try:
            self.payload = self.operation.validate(self.parsed)
        except ValueError as exc:
            return error_answer(422, "invalid_request", str(exc))
        return None

    def claim_key(self) -> tuple[Answer | None, bool]:
        """(answer that ends the request, whether it is a replay)."""
        key = self.request.headers.get("Idempotency-Key")
        if not key:
            answer = error_answer(
                400,
                "idempotency_key_required",
                "send an Idempotency-Key header on every POST and DELETE",
            )
            return answer, False
        fingerprint = request_fingerprint(self.request.method, self.request.raw_path, self.body)
        claim = self.partner.keys.claim(key, fingerprint)
        if claim.state is KeyState.NEW:
            self.key = key
            return None, False
        if claim.state is KeyState.REUSED:
            return error_answer(
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request",
            ), False
        if claim.state is KeyState.IN_PROGRESS:
            return error_answer(
                409, "idempotency_in_progress", "the first request with this key is still running"
            ), False
        assert claim.answer is not None
        return Answer(claim.answer.status, claim.answer.body), True

    def gateway_fault(self) -> Answer | None:
        step = self.simulator.scripts.next_gateway_step(
            self.record.request_id, self.operation.name
        )
        if step is None:
            return None
        return error_answer(step.status, step.code, "gateway fault", retry_after=step.retry_after)

    # Stage 5.

    def choose_fault(self) -> tuple[FaultStep, bool]:
        """(the fault step for this request, whether to decline it)."""
        step = self.simulator.scripts.next_step(self.record.request_id, self.operation.name)
        if step is not None:
            logger.info(
                "%s %s request_id=%s order_id=%s: scripted %s",
                self.partner.name,
                self.operation.name,
                self.record.request_id,
                self.record.order_id,
                step.to_json() or "normal",
            )
            return step, False
        knobs, rng = self.partner.knobs, self.partner.rng
        if rng.random() < knobs.error_rate:
            return pick_random_error(rng), False
        decline = self.operation.can_decline and rng.random() < knobs.decline_rate
        if rng.random() < knobs.drop_rate:
            return FaultStep(drop="after_effect"), decline
        return FaultStep(), decline

    def latency_seconds(self, step: FaultStep | None = None) -> float:
        if step is not None and step.delay_ms is not None:
            return step.delay_ms / 1000.0
        return self.partner.knobs.latency_seconds(self.partner.rng)

    async def run(self) -> web.StreamResponse:
        await self.read_body()
        early = (
            self.check_auth()
            or self.check_rate_limit()
            or self.read_payload()
            or self.gateway_fault()
        )
        replayed = False
        if early is None:
            early, replayed = self.claim_key()
        if early is not None:
            await asyncio.sleep(self.latency_seconds())
            return self.respond(early, replayed=replayed)
        return await self.run_owned()

    async def run_owned(self) -> web.StreamResponse:
        """Stages 5-8, for a request that owns its idempotency key."""
        assert self.key is not None
        definite: Answer | None = None
        try:
            step, decline = self.choose_fault()
            if step.drop == "before_effect":
                return self.drop()
            if step.fails_before_effect:
                await asyncio.sleep(self.latency_seconds())
                return self.respond(
                    error_answer(
                        step.status, step.code, "injected fault", retry_after=step.retry_after
                    )
                )
            definite, self.record.effect = self.operation.act(
                self.simulator.ledger, self.payload, decline
            )
            await asyncio.sleep(self.latency_seconds(step))
        finally:
            # Runs after the sleep, so the key stays in progress while the client waits.
            if definite is not None:
                self.partner.keys.complete(self.key, definite.stored())
            else:
                self.partner.keys.release(self.key)
        if step.drop == "after_effect":
            return self.drop()
        if step.status is not None:  # scripted failure after the effect
            return self.respond(
                error_answer(
                    step.status,
                    step.code,
                    "injected fault after effect",
                    retry_after=step.retry_after,
                )
            )
        return self.respond(definite)

    def respond(self, answer: Answer, replayed: bool = False) -> web.Response:
        self.record.status = answer.status
        self.record.replayed = replayed
        return json_response(answer, replayed=replayed)

    def drop(self) -> web.Response:
        """Close the connection unanswered: the client sees a connection error."""
        self.record.dropped = True
        transport = self.request.transport
        if transport is not None:
            transport.close()
        # aiohttp cannot write this to the closed transport and lets it go quietly.
        return web.Response(status=500)

    def finish(self) -> None:
        self.record.answered_monotonic = now_pair()[0]
        self.simulator.ledger.log_request(self.record)
        logger.debug(
            "%s %s request_id=%s order_id=%s key=%s -> %s%s%s",
            self.partner.name,
            self.operation.name,
            self.record.request_id,
            self.record.order_id,
            self.record.idempotency_key,
            self.record.status,
            " replayed" if self.record.replayed else "",
            " dropped" if self.record.dropped else "",
        )


def bearer_matches(header: str, token: str) -> bool:
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.encode(), token.encode())


def basic_matches(header: str, key: str) -> bool:
    """HTTP Basic with the key as user name and an empty password, as the contract says."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(decoded, key.encode() + b":")


def operation_handler(operation: Operation):
    async def handle(request: web.Request) -> web.StreamResponse:
        call = Call(request, operation)
        try:
            return await call.run()
        finally:
            call.finish()

    handle.__name__ = f"handle_{operation.name}"
    return handle


# --- control endpoints ----------------------------------------------------------


async def read_control_json(request: web.Request) -> Any:
    try:
        return json.loads(await request.read() or b"{}")
    except ValueError:
        raise ControlError(400, "invalid_json", "the body is not valid JSON") from None


class ControlError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.answer = error_answer(status, code, message)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "partner": request.app[PARTNER].name})


async def get_config(request: web.Request) -> web.Response:
    return web.json_response(request.app[PARTNER].knobs.to_json())


async def post_config(request: web.Request) -> web.Response:
    partner = request.app[PARTNER]
    changes = await read_control_json(request)
    try:
        partner.set_knobs(partner.knobs.updated(changes))
    except ValueError as exc:
        raise ControlError(422, "invalid_request", str(exc)) from None
    logger.info("%s knobs now %s", partner.name, partner.knobs.to_json())
    return web.json_response(partner.knobs.to_json())


async def post_script(request: web.Request) -> web.Response:
    raw = await read_control_json(request)
    if not isinstance(raw, dict):
        raise ControlError(422, "invalid_request", "the body must be a JSON object")
    try:
        steps = request.app[SIMULATOR].scripts.set_script(
            raw.get("request_id"), raw.get("operation"), raw.get("responses")
        )
    except ValueError as exc:
        raise ControlError(422, "invalid_request", str(exc)) from None
    body = {
        "request_id": raw["request_id"],
        "operation": raw["operation"],
        "responses": [step.to_json() for step in steps],
    }
    return web.json_response(body, status=201)


async def post_reset(request: web.Request) -> web.Response:
    request.app[SIMULATOR].reset()
    logger.info("reset: ledger, idempotency keys, scripts and knobs of both partners")
    return web.json_response({"status": "reset"})


async def get_ledger(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIMULATOR].ledger.to_json())


async def get_order_ledger(request: web.Request) -> web.Response:
    order_id = request.match_info["order_id"]
    return web.json_response(request.app[SIMULATOR].ledger.order(order_id).to_json())


async def get_requests(request: web.Request) -> web.Response:
    records = request.app[SIMULATOR].ledger.requests(
        request_id=request.query.get("request_id"), order_id=request.query.get("order_id")
    )
    return web.json_response([record.to_json() for record in records])


async def get_scripts(request: web.Request) -> web.Response:
    return web.json_response({"scripts": request.app[SIMULATOR].scripts.pending()})


# --- apps -----------------------------------------------------------------------


@web.middleware
async def common_headers(request: web.Request, handler) -> web.StreamResponse:
    """The headers every answer carries, and the one error shape for every error."""
    request[REQUEST_ID] = request.headers.get("X-Request-ID") or new_id("sim")
    try:
        response = await handler(request)
    except ControlError as exc:
        response = json_response(exc.answer)
    except web.HTTPException as exc:
        code = exc.reason.lower().replace(" ", "_")
        response = json_response(error_answer(exc.status, code, exc.reason))
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
    except Exception:
        logger.exception("unexpected error on %s %s", request.method, request.path)
        response = json_response(error_answer(500, "internal_error", "simulator bug"))
    response.headers["X-Request-ID"] = request[REQUEST_ID]
    quota = request.get(QUOTA) or request.app[PARTNER].window.peek()
    response.headers.update(quota.headers())
    return response


def build_app(simulator: SimulatorState, partner_name: str) -> web.Application:
    app = web.Application(middlewares=[common_headers])
    app[SIMULATOR] = simulator
    app[PARTNER] = simulator.partners[partner_name]
    if partner_name == INVENTORY:
        app.router.add_post("/v1/reservations", operation_handler(RESERVE))
        app.router.add_delete("/v1/reservations/{order_id}", operation_handler(RELEASE))
    else:
        app.router.add_post("/v1/charges", operation_handler(CHARGE))
        app.router.add_post("/v1/refunds", operation_handler(REFUND))
    app.router.add_get("/_sim/health", health)
    app.router.add_get("/_sim/config", get_config)
    app.router.add_post("/_sim/config", post_config)
    app.router.add_get("/_sim/script", get_scripts)
    app.router.add_post("/_sim/script", post_script)
    app.router.add_post("/_sim/reset", post_reset)
    app.router.add_get("/_sim/ledger", get_ledger)
    app.router.add_get("/_sim/ledger/{order_id}", get_order_ledger)
    app.router.add_get("/_sim/requests", get_requests)
    return app


# --- running ----------------------------------------------------------------------


async def serve(settings: SimulatorSettings, stop: asyncio.Event) -> None:
    """Serve both partners until ``stop`` is set, then shut down cleanly."""
    simulator = SimulatorState(settings)
    runners = []
    try:
        for name, port in ((INVENTORY, settings.inventory_port), (PAYMENT, settings.payment_port)):
            # handler_cancellation=False: a client that hangs up must not cancel the
            # handler halfway, so an effect that started always lands in the ledger.
            runner = web.AppRunner(
                build_app(simulator, name),
                handler_cancellation=False,
                access_log=None,
                shutdown_timeout=SHUTDOWN_GRACE_S,
            )
            await runner.setup()
            runners.append(runner)
            site = web.TCPSite(runner, settings.host, port, backlog=LISTEN_BACKLOG)
            await site.start()
            print(f"{name} simulator listening on http://{settings.host}:{site.port}", flush=True)
        logger.info("knobs at start: %s", settings.knobs.to_json())
        await stop.wait()
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
        logger.info("simulators stopped")


async def serve_until_signalled(settings: SimulatorSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(settings, stop)


def run(settings: SimulatorSettings) -> None:
    """The one entry point: blocks until SIGTERM or SIGINT."""
    asyncio.run(serve_until_signalled(settings))


# --- command line -------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options, shared by ``python -m`` and the ``run_partners`` command."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--inventory-port", type=int, default=8101)
    parser.add_argument("--payment-port", type=int, default=8102)
    parser.add_argument("--inventory-token", default=DEV_INVENTORY_TOKEN)
    parser.add_argument("--payment-key", default=DEV_PAYMENT_KEY)
    parser.add_argument(
        "--latency-ms",
        default="20-80",
        help="uniform latency range MIN-MAX, or one number (default 20-80)",
    )
    parser.add_argument(
        "--error-rate",
        default="0.0",
        help="share of requests answered 5xx/408/429 before the effect",
    )
    parser.add_argument(
        "--decline-rate", default="0.0", help="share of reservations/charges declined (409/402)"
    )
    parser.add_argument(
        "--drop-rate",
        default="0.0",
        help="share of requests whose connection drops after the effect",
    )
    parser.add_argument("--rate-limit", default="1000/1", help="LIMIT/WINDOW_SECONDS")
    parser.add_argument(
        "--seed", type=int, default=None, help="seed the random faults, for repeatable chaos runs"
    )
    parser.add_argument("--log-level", default="INFO")


def settings_from_options(options: dict[str, Any]) -> SimulatorSettings:
    """Build settings from parsed options; a bad value raises ValueError."""
    latency_min, latency_max = parse_latency(options["latency_ms"])
    limit, window = parse_rate_limit(options["rate_limit"])
    knobs = Knobs(
        latency_min_ms=latency_min,
        latency_max_ms=latency_max,
        error_rate=parse_probability("error rate", options["error_rate"]),
        decline_rate=parse_probability("decline rate", options["decline_rate"]),
        drop_rate=parse_probability("drop rate", options["drop_rate"]),
        rate_limit=limit,
        rate_window_s=window,
    )
    return SimulatorSettings(
        host=options["host"],
        inventory_port=options["inventory_port"],
        payment_port=options["payment_port"],
        inventory_token=options["inventory_token"],
        payment_key=options["payment_key"],
        knobs=knobs,
        seed=options["seed"],
    )


def run_from_options(options: dict[str, Any]) -> None:
    logging.basicConfig(
        level=str(options.get("log_level") or "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    run(settings_from_options(options))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.simulators",
        description="Run the inventory and payment partner simulators.",
    )
    add_arguments(parser)
    options = vars(parser.parse_args(argv))
    try:
        settings_from_options(options)
    except ValueError as exc:
        parser.error(str(exc))
    with contextlib.suppress(KeyboardInterrupt):
        run_from_options(options)


if __name__ == "__main__":
    main(sys.argv[1:])

"""How a partner request is answered: the stages, in order, and the ``Call`` that runs them.

Both partners keep the partner API contract (partner-apis.md, shared with the partners)
exactly; any other server that keeps it must work with dualsend too, so nothing here may
be something only our client relies on.

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
idempotency keys and rate limit window. ``/_sim/*`` control endpoints
(``control_endpoints.py``) need no auth and spend no quota.
"""

import asyncio
import base64
import binascii
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from devstack.simulators.answers import Answer, error_answer, json_response
from devstack.simulators.effects import Operation
from devstack.simulators.faults import FaultStep, pick_random_error
from devstack.simulators.ledger import KeyState, RequestRecord, now_pair, request_fingerprint
from devstack.simulators.state import INVENTORY, PARTNER, QUOTA, REQUEST_ID, SIMULATOR

logger = logging.getLogger(__name__)

INVALID_JSON = object()  # what Call.parsed holds until a body parses


class Call:
    """One partner request on its way through the stages in the module docstring."""

    def __init__(self, request: web.Request, operation: Operation) -> None:
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
            traceparent=request.headers.get("traceparent"),
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
        step = self.simulator.scripts.next_gateway_step(self.record.request_id, self.operation.name)
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


def operation_handler(
    operation: Operation,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The aiohttp handler of one partner operation: each request is a ``Call``."""

    async def handle(request: web.Request) -> web.StreamResponse:
        call = Call(request, operation)
        try:
            return await call.run()
        finally:
            call.finish()

    handle.__name__ = f"handle_{operation.name}"
    return handle

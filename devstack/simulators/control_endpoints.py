"""The ``/_sim/*`` control API: health, knobs, scripted faults, reset, the ledger and the
request log. No auth, no quota spent; ``control.SimulatorControl`` is its client.

Knobs (``/_sim/config``) are per partner; the ledger, the request log, the scripts and
``/_sim/reset`` are shared by both partners, so either port will do.
"""

import json
import logging
from typing import Any

from aiohttp import web

from devstack.simulators.answers import error_answer
from devstack.simulators.state import PARTNER, SIMULATOR

logger = logging.getLogger(__name__)


class ControlError(Exception):
    """A control request refused; the middleware answers with ``answer``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.answer = error_answer(status, code, message)


async def read_control_json(request: web.Request) -> Any:
    try:
        return json.loads(await request.read() or b"{}")
    except ValueError:
        raise ControlError(400, "invalid_json", "the body is not valid JSON") from None


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

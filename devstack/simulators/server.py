"""The inventory and payment partner simulators: two aiohttp apps, one process.

Both keep the partner API contract (partner-apis.md, shared with the partners)
exactly. Run them with::

    python -m devstack.simulators --inventory-port 8101 --payment-port 8102

This module wires the two apps and runs them, with the options ``python -m`` and
``manage.py run_partners`` share. How a partner request is answered, stage by stage,
is told in ``pipeline.py``.
"""

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from devstack.simulators.answers import error_answer, json_response, new_id
from devstack.simulators.control_endpoints import (
    ControlError,
    get_config,
    get_ledger,
    get_order_ledger,
    get_requests,
    get_scripts,
    health,
    post_config,
    post_reset,
    post_script,
)
from devstack.simulators.effects import CHARGE, REFUND, RELEASE, RESERVE
from devstack.simulators.faults import Knobs, parse_latency, parse_probability, parse_rate_limit
from devstack.simulators.pipeline import operation_handler
from devstack.simulators.state import (
    DEV_INVENTORY_TOKEN,
    DEV_PAYMENT_KEY,
    INVENTORY,
    PARTNER,
    PAYMENT,
    QUOTA,
    REQUEST_ID,
    SIMULATOR,
    SimulatorSettings,
    SimulatorState,
)

logger = logging.getLogger(__name__)

# aiohttp waits this long for in-flight handlers on shutdown, then cancels them.
SHUTDOWN_GRACE_S = 2.0
# Hundreds of clients connect at once in the benchmarks; the default 128 drops SYNs.
LISTEN_BACKLOG = 2048


# --- apps -----------------------------------------------------------------------


@web.middleware
async def common_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
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
        logger.exception("unexpected error on %s %r", request.method, request.path)
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

"""dualsend's development tooling: never imported by the product, absent from its image.

    simulators/  the two partner APIs as real HTTP servers (`manage.py run_partners`)
    stack/       child processes, and a whole dualsend stack started as real processes
    traffic/     the API client that places orders and waits for them to settle
    demo/        `manage.py demo`: the stack end to end, a summary
    chaos/       `manage.py chaos`: the stack under fire, then a verdict
    bench/       `manage.py bench`: latency and throughput against the slower call
    management/  the Django app's commands (this package is an app: `devstack`)

The tests reach the tooling only through the names this module exports.
"""

from devstack.chaos.broker import RABBITMQ_HOST, RABBITMQ_PORT, rabbitmq_answers
from devstack.demo.database import (
    DEMO_USERNAME,
    NotTheDemoDatabase,
    demo_database_url,
    refresh_demo_user,
)
from devstack.simulators.control import SimulatorControl
from devstack.simulators.server import add_arguments as add_simulator_arguments
from devstack.stack.processes import (
    StartupError,
    clean_environment,
    free_port,
    redis_server_binary,
)
from devstack.stack.services import QUEUE_WORKERS, Faults, Stack

__all__ = [
    "DEMO_USERNAME",
    "QUEUE_WORKERS",
    "RABBITMQ_HOST",
    "RABBITMQ_PORT",
    "Faults",
    "NotTheDemoDatabase",
    "SimulatorControl",
    "Stack",
    "StartupError",
    "add_simulator_arguments",
    "clean_environment",
    "demo_database_url",
    "free_port",
    "rabbitmq_answers",
    "redis_server_binary",
    "refresh_demo_user",
]

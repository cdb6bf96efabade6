"""What the simulators keep in memory: their settings, each partner's own state (knobs,
idempotency keys, rate limit window, randomness) and what both partners share (the
ledger and the script table).
"""

import random
from dataclasses import dataclass, field

from aiohttp import web

from devstack.simulators.faults import Knobs, Quota, RateLimitWindow, ScriptTable
from devstack.simulators.ledger import IdempotencyStore, Ledger

INVENTORY = "inventory"
PAYMENT = "payment"

# The simulators' published development credentials: not secrets, the demo's defaults.
DEV_INVENTORY_TOKEN = "dev-inventory-token"  # noqa: S105
DEV_PAYMENT_KEY = "dev-payment-key"


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

    def __init__(self, name: str, startup_knobs: Knobs, credential: str, seed: int | None) -> None:
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

    def __init__(self, settings: SimulatorSettings) -> None:
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


# Where a request's handler finds the state: on its app, and on the request itself.
SIMULATOR = web.AppKey("simulator", SimulatorState)
PARTNER = web.AppKey("partner", PartnerState)
REQUEST_ID = web.RequestKey("request_id", str)
QUOTA = web.RequestKey("quota", Quota)

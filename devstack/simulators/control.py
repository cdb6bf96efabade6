"""A small client of a simulator's ``/_sim/*`` control endpoints.

Used by the tests, the demo and the chaos run::

    inventory = SimulatorControl("http://127.0.0.1:8101")
    inventory.wait_ready(timeout=10)
    inventory.reset()
    inventory.configure(latency_ms=[0, 5], error_rate=0.1)
    inventory.script("req-1", "reserve", [{"status": 503}, {"normal": True}])
    inventory.ledger("order-1")["reserved"]

One instance talks to one partner's port. Knobs are per partner, so
``configure`` changes only that partner; the ledger, the request log, the
scripts and ``reset`` are shared by both partners, so either port will do.
"""

import time
from typing import Any

import requests

CONTROL_TIMEOUT_S = 5.0


class SimulatorControl:
    def __init__(self, base_url: str, *, timeout: float = CONTROL_TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()

    def _url(self, path: str) -> str:
        return f"{self.base_url}/_sim/{path}"

    def _get(self, path: str, **params: Any) -> Any:
        response = self._session.get(self._url(path), params=params, timeout=self.timeout)
        response.raise_for_status()
        return response.json()

    def _post(self, path: str, payload: dict[str, Any]) -> Any:
        response = self._session.post(self._url(path), json=payload, timeout=self.timeout)
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        """Empty the ledger, keys and scripts of both partners; knobs back to start-up."""
        self._post("reset", {})

    def configure(self, **knobs: Any) -> dict[str, Any]:
        """Change this partner's knobs, e.g. ``latency_ms=[0, 5]``, ``error_rate=0.2``,
        ``rate_limit={"limit": 10, "window": 1}``. Returns the knobs now in force."""
        if isinstance(knobs.get("latency_ms"), tuple):
            knobs["latency_ms"] = list(knobs["latency_ms"])
        return self._post("config", knobs)

    def config(self) -> dict[str, Any]:
        return self._get("config")

    def script(self, request_id: str, operation: str, responses: list[dict[str, Any]]) -> None:
        """Script the next answers to ``operation`` for requests with this X-Request-ID."""
        self._post(
            "script",
            {"request_id": request_id, "operation": operation, "responses": responses},
        )

    def ledger(self, order_id: str | None = None) -> dict[str, Any]:
        """One order's counters (zeros if unknown), or ``{"orders": {...}}`` for all."""
        if order_id is None:
            return self._get("ledger")
        return self._get(f"ledger/{requests.utils.quote(order_id, safe='')}")

    def requests_log(
        self, request_id: str | None = None, order_id: str | None = None
    ) -> list[dict[str, Any]]:
        """The partner requests logged by both simulators, oldest first (each with the
        `traceparent` header it carried, or None)."""
        params = {
            name: value
            for name, value in (("request_id", request_id), ("order_id", order_id))
            if value is not None
        }
        return self._get("requests", **params)

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the health endpoint answers; TimeoutError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                response = self._session.get(self._url("health"), timeout=1.0)
                if response.status_code == 200:
                    return
            except requests.RequestException:
                pass  # not listening yet
            if time.monotonic() >= deadline:
                raise TimeoutError(f"simulator at {self.base_url} not ready after {timeout} s")
            time.sleep(0.05)

    def close(self) -> None:
        self._session.close()

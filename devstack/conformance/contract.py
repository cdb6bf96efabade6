"""What partner-apis.md says each partner's calls look like, as the kit sends and judges them.

| partner   | effect                       | its id           | undo (compensation)                |
| --------- | ---------------------------- | ---------------- | ---------------------------------- |
| inventory | POST /v1/reservations → 201  | `reservation_id` | DELETE /v1/reservations/{order_id} |
|           | `"status": "reserved"`       |                  | → 200 `"status": "released"`       |
| payment   | POST /v1/charges → 201       | `charge_id`      | POST /v1/refunds                   |
|           | `"status": "captured"`       |                  | → 201 `"status": "refunded"`       |

Auth: inventory `Bearer <token>`, payment HTTP Basic with the key as user name and an
empty password. The request bodies are the contract's own examples; the SKU, amount,
currency and card source can be changed for a sandbox that wants other test data.
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from dualsend_app.partners import inventory, payment

INVENTORY = inventory.PARTNER
PAYMENT = payment.PARTNER


@dataclass(frozen=True)
class SandboxData:
    """The test data the kit sends: partner-apis.md's examples (one unit of the SKU)."""

    sku: str = "SKU-1"
    quantity: int = 1
    amount: int = 1999
    currency: str = "usd"
    card_source: str = "tok_visa"


class NoAuth(requests.auth.AuthBase):
    """No Authorization header at all. Passed explicitly because with `auth=None`,
    requests would fill one in from ~/.netrc and spoil the 'no credentials' check."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers.pop("Authorization", None)
        return request


@dataclass(frozen=True)
class Credentials:
    """An auth to send and how the table names it (never the secret itself)."""

    auth: requests.auth.AuthBase
    label: str
    sent: bool = True  # False for no credentials at all


@dataclass(frozen=True)
class Side:
    """The names one partner's side of the contract uses."""

    effect: str
    undo: str
    create_path: str
    id_field: str
    created_status: str
    scheme: str
    credential_name: str
    auth: Callable[[str], requests.auth.AuthBase]


SIDES = {
    INVENTORY: Side(
        effect="reservation",
        undo="release",
        create_path="/v1/reservations",
        id_field="reservation_id",
        created_status="reserved",
        scheme="Bearer",
        credential_name="token",
        auth=inventory.auth,
    ),
    PAYMENT: Side(
        effect="charge",
        undo="refund",
        create_path="/v1/charges",
        id_field="charge_id",
        created_status="captured",
        scheme="Basic",
        credential_name="key",
        auth=payment.auth,
    ),
}


@dataclass(frozen=True)
class PartnerUnderTest:
    """One partner's sandbox: where it is, its credential, and its side of the contract."""

    name: str
    base_url: str
    credential: str
    data: SandboxData

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))

    @property
    def side(self) -> Side:
        return SIDES[self.name]

    def create_body(self, order_id: str) -> dict[str, Any]:
        if self.name == INVENTORY:
            return {
                "order_id": order_id,
                "items": [{"sku": self.data.sku, "quantity": self.data.quantity}],
            }
        return {
            "order_id": order_id,
            "amount": self.data.amount,
            "currency": self.data.currency,
            "source": self.data.card_source,
        }

    def expected_fields(self, order_id: str) -> dict[str, Any]:
        """The fields of a 2xx answer to `create_body(order_id)` that the contract fixes
        (not the currency's case, which a partner may normalise)."""
        fields: dict[str, Any] = {"order_id": order_id, "status": self.side.created_status}
        if self.name == PAYMENT:
            fields["amount"] = self.data.amount
        return fields

    def undo_request(self, order_id: str) -> tuple[str, str, dict[str, Any] | None]:
        """(method, path, body) of the compensation for an order."""
        if self.name == INVENTORY:
            return "DELETE", f"/v1/reservations/{order_id}", None
        return "POST", "/v1/refunds", {"order_id": order_id, "amount": self.data.amount}

    def good_credentials(self) -> Credentials:
        return Credentials(self.side.auth(self.credential), f"{self.side.scheme} ••••")

    def wrong_credentials(self) -> Credentials:
        wrong = f"wrong-{uuid.uuid4().hex}"
        label = f"{self.side.scheme} with a wrong {self.side.credential_name}"
        return Credentials(self.side.auth(wrong), label)

    @staticmethod
    def no_credentials() -> Credentials:
        return Credentials(NoAuth(), "no Authorization", sent=False)

    def secrets(self) -> tuple[str, ...]:
        """What the table must never show: the credential, and the card source."""
        if self.name == PAYMENT:
            return (self.credential, self.data.card_source)
        return (self.credential,)

"""A partner's answer before it is sent, the contract's one error shape, and new ids."""

import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from devstack.simulators.ledger import StoredAnswer


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

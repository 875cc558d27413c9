"""Request-scoped dependencies: the caller, its idempotency key, and the engine."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

import orjson
from fastapi import Depends, Header, Request
from fastapi.responses import Response

from commands.engine import LedgerEngine, Outcome
from commands.model import Command, CommandRequest, Principal
from commands.problems import RequestProblem

PROBLEM_JSON = "application/problem+json"


class Authenticator(Protocol):
    def authenticate(self, raw: str) -> Principal | None: ...


@dataclass
class ApiContext:
    """Set on ``app.state.ledger`` by the composition root."""

    engine: LedgerEngine
    authenticator: Authenticator


def _context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ledger
    return ctx


async def authenticate(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    """Resolve the bearer key. Async on purpose: a sync dependency costs a thread-pool hop
    per request, and the key store answers from its cache (a miss is one indexed query)."""
    if not authorization or not authorization.startswith("Bearer "):
        raise RequestProblem(
            "unauthorized", "Unauthorized", 401, "send 'Authorization: Bearer <api key>'"
        )
    principal = _context(request).authenticator.authenticate(authorization[7:].strip())
    if principal is None:
        raise RequestProblem("unauthorized", "Unauthorized", 401, "unknown or revoked API key")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(authenticate)]


def json_response(outcome: Outcome) -> Response:
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else {}
    media = PROBLEM_JSON if outcome.status >= 400 else "application/json"
    return Response(
        orjson.dumps(outcome.body), status_code=outcome.status, media_type=media, headers=headers
    )


def request_hash(method: str, path: str, raw: bytes) -> str:
    """Hash of what the request asks for: the same JSON in another key order is the same."""
    try:
        canonical = orjson.dumps(orjson.loads(raw or b"null"), option=orjson.OPT_SORT_KEYS)
    except orjson.JSONDecodeError:
        canonical = raw
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).hexdigest()


@dataclass
class Writer:
    """Runs one command for one API request through the engine."""

    request: Request
    principal: Principal
    key: str

    async def run(self, command: Command) -> Response:
        raw = await self.request.body()
        req = CommandRequest(
            command=command,
            principal=self.principal,
            correlation_id=self.request.headers.get("X-Request-Id") or str(uuid.uuid4()),
            idempotency_key=self.key,
            request_hash=request_hash(self.request.method, self.request.url.path, raw),
        )
        future = _context(self.request).engine.submit(req)
        outcome = await asyncio.wrap_future(future)
        return json_response(outcome)


async def writer(
    request: Request,
    principal: CurrentPrincipal,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Writer:
    if not principal.can_write:
        raise RequestProblem("forbidden", "Forbidden", 403, f"role {principal.role!r} is read-only")
    if idempotency_key is None or not idempotency_key.strip():
        raise RequestProblem(
            "idempotency-key-missing",
            "Idempotency-Key header required",
            400,
            "every POST needs an Idempotency-Key header (for example a UUID)",
        )
    if len(idempotency_key) > 255:
        raise RequestProblem(
            "validation-error", "Invalid request", 400, "Idempotency-Key is longer than 255"
        )
    return Writer(request, principal, idempotency_key)


CommandWriter = Annotated[Writer, Depends(writer)]


def problem_response(status: int, body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON)

"""The fast lane: the hottest writes (a transfer, a batch, a deposit, a withdrawal) served
without FastAPI's per-request routing and dependency solving.

FastAPI 0.165 spends about a third of a single transfer's HTTP time solving the route's
dependencies (a header parameter alone costs several introspection calls per request)
and a tenth matching the path against every route. The lane sits inside the body-size
limit, in front of the router, and answers a request only when everything about it is
in order: a JSON body that parses and validates against the route's own model, a known
key allowed to write, an Idempotency-Key, no card number. It then runs the very same
command through the very same engine call as the route (``run_command``). Anything
else, every refusal included, goes on to the FastAPI route with the body it read, so
the routes stay the one place that decides what an error looks like; a differential
test (tests/unit/test_command_lane.py) sends the same requests through both and
compares answers and the commands the engine received.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from starlette.types import Message, Receive, Scope, Send

from commands.api.deps import (
    ApiContext,
    parsed_request_hash,
    principal_for,
    run_command,
    writer_key,
)
from commands.api.errors import known_error_response
from commands.model import Command, Principal
from commands.problems import RequestProblem
from domain.errors import LedgerError
from domain.pan import json_may_hold_pan


@dataclass(frozen=True, slots=True)
class LaneRoute:
    """A POST path, the body model its FastAPI route declares, and its command."""

    model: type[BaseModel]
    command: Callable[[Any], Command]


class CommandLane:
    """ASGI middleware: serves ``routes`` (exact POST paths) when a request needs no
    refusal, and passes everything else to the app behind it."""

    def __init__(self, app: Any, context: ApiContext, routes: dict[str, LaneRoute]) -> None:
        self.app = app
        self.context = context
        self.routes = routes
        self.served = 0  # requests answered by the lane (the tests read it)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = None
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            route = self.routes.get(scope["path"])
        if route is None:
            await self.app(scope, receive, send)
            return
        raw = await _read_body(receive)
        if raw is None:  # the client went away
            return
        admitted = self._admit(scope, route, raw)
        if admitted is None:
            await self.app(scope, _replay(raw, receive), send)
            return
        self.served += 1
        try:
            response = await run_command(self.context.engine, *admitted)
        except Exception as exc:  # what the route's exception handlers would answer
            known = known_error_response(exc)
            if known is None:
                raise
            response = known
        await response(scope, receive, send)

    def _admit(
        self, scope: Scope, route: LaneRoute, raw: bytes
    ) -> tuple[Command, Principal, str, str | None, str] | None:
        """The command and its caller when nothing about the request calls for a refusal;
        None sends the request on to the route."""
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name, value)
        media = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if media != b"application/json" or json_may_hold_pan(raw):
            return None
        try:
            principal = principal_for(self.context, _text(headers.get(b"authorization")))
            key = writer_key(principal, _text(headers.get(b"idempotency-key")))
        except RequestProblem:
            return None
        try:
            body = orjson.loads(raw)
            command = route.command(route.model.model_validate(body))
        except (orjson.JSONDecodeError, ValidationError, LedgerError):
            return None
        digest = parsed_request_hash("POST", scope["path"], body)
        return command, principal, key, _text(headers.get(b"x-request-id")), digest


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(raw: bytes, receive: Receive) -> Receive:
    """A receive that gives the body already read, then whatever the client sends next."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    return replayed

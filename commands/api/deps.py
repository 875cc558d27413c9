"""Request-scoped dependencies: the caller, its idempotency key, and the engine."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

import orjson
from fastapi import Depends, Header, Request
from fastapi.responses import Response

from commands.engine import LedgerEngine, Outcome
from commands.model import Command, CommandRequest, Principal, RecordAnswer
from commands.payments.service import PaymentServices
from commands.problems import RequestProblem, key_in_use
from domain.pan import find_pan, json_may_hold_pan

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class Authenticator(Protocol):
    def authenticate(self, raw: str) -> Principal | None: ...


class InFlight:
    """Idempotency keys whose multi-step request (a payment) is running in this process."""

    def __init__(self) -> None:
        self._keys: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def reserve(self, scope: tuple[str, str]) -> Iterator[None]:
        with self._lock:
            if scope in self._keys:
                raise key_in_use()
            self._keys.add(scope)
        try:
            yield
        finally:
            with self._lock:
                self._keys.discard(scope)


@dataclass
class ApiContext:
    """Set on ``app.state.ledger`` by the composition root."""

    engine: LedgerEngine
    authenticator: Authenticator
    payments: PaymentServices | None = None
    flows: InFlight = field(default_factory=InFlight)


def _context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ledger
    return ctx


def principal_for(context: ApiContext, authorization: str | None) -> Principal:
    """The caller of a bearer API key, or a 401 problem."""
    if not authorization or not authorization.startswith("Bearer "):
        raise RequestProblem(
            "unauthorized", "Unauthorized", 401, "send 'Authorization: Bearer <api key>'"
        )
    principal = context.authenticator.authenticate(authorization[7:].strip())
    if principal is None:
        raise RequestProblem("unauthorized", "Unauthorized", 401, "unknown or revoked API key")
    return principal


async def authenticate(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    """Resolve the bearer key. Async on purpose: a sync dependency costs a thread-pool hop
    per request, and the key store answers from its cache (a miss is one indexed query)."""
    return principal_for(_context(request), authorization)


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
        return parsed_request_hash(method, path, orjson.loads(raw or b"null"))
    except orjson.JSONDecodeError:
        return _digest(method, path, raw)


def parsed_request_hash(method: str, path: str, body: Any) -> str:
    """``request_hash`` of a body already parsed from JSON."""
    return _digest(method, path, orjson.dumps(body, option=orjson.OPT_SORT_KEYS))


def _digest(method: str, path: str, canonical: bytes) -> str:
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).hexdigest()


async def run_command(
    engine: LedgerEngine,
    command: Command,
    principal: Principal,
    key: str,
    request_id: str | None,
    digest: str,
) -> Response:
    """One command of one API request through the engine, answered as JSON."""
    req = CommandRequest(
        command=command,
        principal=principal,
        correlation_id=request_id or str(uuid.uuid4()),
        idempotency_key=key,
        request_hash=digest,
    )
    outcome = await asyncio.wrap_future(engine.submit(req))
    return json_response(outcome)


@dataclass
class Writer:
    """Runs one command for one API request through the engine."""

    request: Request
    principal: Principal
    key: str

    async def run(self, command: Command) -> Response:
        raw = await self.request.body()
        return await run_command(
            _context(self.request).engine,
            command,
            self.principal,
            self.key,
            self.request.headers.get("X-Request-Id"),
            request_hash(self.request.method, self.request.url.path, raw),
        )

    async def flow(
        self,
        first: Command,
        drive: Callable[[str], object] | None,
        answer: Callable[[Outcome], Command],
    ) -> Response:
        """A request that takes several steps (a payment: create, call the provider,
        record): ``first`` runs, then ``drive`` (in a worker thread), then ``answer`` is
        run with the request's idempotency key and stored as the answer that retries
        replay. A crash in between leaves no answer stored, so a retry runs the steps
        again: ``first`` finds what it made (derived ids) and ``drive`` resumes it."""
        context = _context(self.request)
        raw = await self.request.body()
        corr = self.request.headers.get("X-Request-Id") or str(uuid.uuid4())
        digest = request_hash(self.request.method, self.request.url.path, raw)
        keyed = CommandRequest(first, self.principal, corr, self.key, digest)
        with context.flows.reserve((self.principal.merchant_id, self.key)):
            stored = await asyncio.to_thread(context.engine.stored_answer, keyed)
            if stored is not None:
                return json_response(stored)
            out = await asyncio.wrap_future(
                context.engine.submit(CommandRequest(first, self.principal, corr))
            )
            if out.status >= 400:
                final: Command = RecordAnswer(out.status, out.body)
            else:
                if drive is not None:
                    try:
                        await asyncio.to_thread(drive, corr)
                    except Exception:  # the payment says what is in flight: resumed later
                        log.exception("payment step failed; the recovery loop resumes it")
                final = answer(out)
            done = await asyncio.wrap_future(
                context.engine.submit(CommandRequest(final, self.principal, corr, self.key, digest))
            )
        return json_response(done)


def writer_key(principal: Principal, idempotency_key: str | None) -> str:
    """The write's Idempotency-Key, once the caller is known to be allowed to write."""
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
    return idempotency_key


async def writer(
    request: Request,
    principal: CurrentPrincipal,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Writer:
    return Writer(request, principal, writer_key(principal, idempotency_key))


CommandWriter = Annotated[Writer, Depends(writer)]


def problem_response(status: int, body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON)


async def reject_card_numbers(request: Request) -> None:
    """A card number anywhere in a request body is refused (422) before anything reads the
    body: it is never stored, logged or echoed (the answer names only where it was)."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    raw = await request.body()
    if not raw or not json_may_hold_pan(raw):
        return
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return  # not JSON: the body's validation answers
    where = find_pan(body, root="body")
    if where is not None:
        raise RequestProblem(
            "card-number-rejected",
            "Card number rejected",
            422,
            f"{where} holds a card number; send the provider's payment method token instead",
        )

"""The read schema as a plain ASGI app, the one the service mounts at ``/graphql``.

It answers exactly like ``router.create_graphql_router`` (same schema, limits, context,
errors, GraphiQL) without FastAPI's per-request dependency solving, which cost more CPU
than executing a small query. Contexts come from one ``ContextFactory``, shared with the
FastAPI router.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio.to_thread
import orjson
from cross_web import HTTPException
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import MissingQueryError
from strawberry.http import process_result
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from domain.principal import Principal
from read_api.context import (
    DEFAULT_MIN_POSITION_TIMEOUT_S,
    MIN_POSITION_HEADER,
    ReadContext,
    ThreadedReads,
)
from read_api.payment_ports import PaymentReadQueries, ProviderHealthPort
from read_api.ports import AsyncReadQueries, ReadQueries
from read_api.schedule_ports import ScheduleReadQueries
from read_api.schema import DEFAULT_MAX_DEPTH, build_schema

NO_KEY = "send 'Authorization: Bearer <api key>'"
BAD_KEY = "unknown or revoked API key"
# How long an authenticated key is trusted without asking ``authenticate`` again. Short:
# a revoked key must stop working soon, and the key store keeps its own, longer cache.
KEY_TRUST_S = 1.0
RECHECK_S = 0.25  # at most this much longer while one request asks again


def bearer_key(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, else None."""
    if not authorization:
        return None
    scheme, _, key = authorization.strip().partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


class ContextFactory:
    """Builds each request's ``ReadContext`` from its headers.

    ``authenticate`` may block (a key-store query on a cache miss), so it runs in a worker
    thread; a key it accepted is then trusted for ``KEY_TRUST_S`` without that hop (and
    by other requests for up to ``RECHECK_S`` more while one request asks again).
    ``reads`` (which the caller may swap) is the read port resolvers use: the given one,
    else ``queries`` in worker threads.
    """

    def __init__(
        self,
        queries: ReadQueries,
        authenticate: Callable[[str], Principal | None],
        *,
        min_position_timeout_s: float = DEFAULT_MIN_POSITION_TIMEOUT_S,
        payments: PaymentReadQueries | None = None,
        providers: ProviderHealthPort | None = None,
        schedules: ScheduleReadQueries | None = None,
        reads: AsyncReadQueries | None = None,
    ) -> None:
        if min_position_timeout_s <= 0:
            raise ValueError("min_position_timeout_s must be positive")
        self.queries = queries
        self.authenticate = authenticate
        self.min_position_timeout_s = min_position_timeout_s
        self.payments = payments
        self.providers = providers
        self.schedules = schedules
        self.reads: AsyncReadQueries = ThreadedReads(queries) if reads is None else reads
        self._trusted: dict[bytes, tuple[Principal, float]] = {}

    async def principal(self, key: str) -> Principal | None:
        digest = hashlib.sha256(key.encode()).digest()
        now = time.monotonic()
        hit = self._trusted.get(digest)
        if hit is not None:
            if hit[1] > now:
                return hit[0]
            # This request asks again; the requests arriving meanwhile keep the answer
            # rather than all asking at once.
            self._trusted[digest] = (hit[0], now + RECHECK_S)
        principal = await anyio.to_thread.run_sync(self.authenticate, key)
        if principal is None:
            self._trusted.pop(digest, None)
            return None
        if len(self._trusted) >= 10_000:
            self._trusted.clear()
        self._trusted[digest] = (principal, now + KEY_TRUST_S)
        return principal

    async def __call__(self, headers: Mapping[str, str]) -> ReadContext:
        key = bearer_key(headers.get("authorization"))
        principal = None if key is None else await self.principal(key)
        return ReadContext(
            self.queries,
            principal,
            min_position=headers.get(MIN_POSITION_HEADER),
            min_position_timeout_s=self.min_position_timeout_s,
            unauthorized_detail=NO_KEY if key is None else BAD_KEY,
            payments=self.payments,
            providers=self.providers,
            schedules=self.schedules,
            reads=self.reads,
        )


_POST_OPERATIONS = frozenset(OperationType.from_http("POST"))
_JSON_HEADERS = [(b"content-type", b"application/json")]


class LedgerGraphQL(GraphQL[ReadContext, None]):
    """Strawberry's ASGI view with the ledger's context; JSON read and written by orjson.

    The lane: a plain ``POST`` of ``application/json`` holding one well-formed operation
    (what every client sends) is executed by the schema directly, without the view's
    general request handling (a response object, a sub-response, content negotiation),
    and answered with what the view would answer. Anything else (GET, GraphiQL, batches,
    streaming ``Accept`` headers, malformed fields, an operation the schema refuses to
    run over HTTP) goes to the view on the same request, whose body it keeps. A
    differential test (tests/unit/test_graphql_lane.py) sends the same requests both ways.
    """

    def __init__(self, contexts: ContextFactory, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        super().__init__(build_schema(max_depth), graphql_ide="graphiql")
        self.contexts = contexts
        self.lane = True
        self.served = 0  # requests answered by the lane (the tests read it)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (self.lane and scope["type"] == "http" and scope["method"] == "POST"):
            await super().__call__(scope, receive, send)
            return
        request = Request(scope, receive)
        headers = request.headers
        accept = headers.get("accept", "")
        if (
            headers.get("content-type") != "application/json"
            or "multipart/" in accept
            or "event-stream" in accept
        ):
            await super().__call__(scope, receive, send)
            return
        try:
            raw = await request.body()  # kept by the request, for the view too
        except ClientDisconnect:
            return
        result = await self._lane_execute(raw, headers)
        if result is None:
            # The view, as Strawberry's own ``__call__`` runs it, on the same request.
            try:
                response = await self.run(request)
            except HTTPException as exc:
                response = PlainTextResponse(exc.reason, status_code=exc.status_code)
            await response(scope, receive, send)
            return
        self.served += 1
        body = self.encode_json(process_result(result))
        body = body if isinstance(body, bytes) else body.encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _lane_execute(self, raw: bytes, headers: Headers) -> ExecutionResult | None:
        """The operation's result, or None when the view must answer the request."""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(data, dict):
            return None
        query, variables = data.get("query"), data.get("variables")
        extensions, name = data.get("extensions"), data.get("operationName")
        if not (
            isinstance(query, str)
            and isinstance(variables, dict | None)
            and isinstance(extensions, dict | None)
            and isinstance(name, str | None)
        ):
            return None
        context = await self.contexts(headers)
        try:
            result = await self.schema.execute(
                query,
                variable_values=variables,
                context_value=context,
                operation_name=name,
                allowed_operation_types=_POST_OPERATIONS,
                operation_extensions=extensions,
            )
        except (CannotGetOperationTypeError, InvalidOperationTypeError, MissingQueryError):
            return None  # the view turns these into 400s
        return result if isinstance(result, ExecutionResult) else None

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> ReadContext:
        return await self.contexts(request.headers)

    def parse_json(self, data: str | bytes) -> Any:
        parsed = super().parse_json(data)
        if not isinstance(parsed, dict | list):  # Strawberry would fail on it with a 500
            raise HTTPException(400, "The request body must be a JSON object")
        return parsed

    def decode_json(self, data: str | bytes) -> object:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:  # what orjson refuses (NaN, huge ints), json may not
            return super().decode_json(data)

    def encode_json(self, data: object) -> str | bytes:
        try:
            return orjson.dumps(data)
        except TypeError:  # what orjson refuses (an int beyond 64 bits), json.dumps may not
            return super().encode_json(data)


def create_graphql_app(
    queries: ReadQueries,
    authenticate: Callable[[str], Principal | None],
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    min_position_timeout_s: float = DEFAULT_MIN_POSITION_TIMEOUT_S,
    payments: PaymentReadQueries | None = None,
    providers: ProviderHealthPort | None = None,
    schedules: ScheduleReadQueries | None = None,
    reads: AsyncReadQueries | None = None,
) -> LedgerGraphQL:
    """The ASGI app answering GraphQL (GraphiQL enabled) from ``queries``, or from
    ``reads``, their non-blocking form, when given; the other ports as in ``ReadContext``.
    """
    if max_depth < 1:
        raise ValueError("max_depth must be at least 1")
    contexts = ContextFactory(
        queries,
        authenticate,
        min_position_timeout_s=min_position_timeout_s,
        payments=payments,
        providers=providers,
        schedules=schedules,
        reads=reads,
    )
    return LedgerGraphQL(contexts, max_depth)

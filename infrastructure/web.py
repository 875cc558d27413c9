"""The ASGI app: command API (REST) and read API (GraphQL at /graphql) on one server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from commands.api.app import install_command_api
from commands.api.deps import ApiContext
from commands.api.errors import BodySizeLimit
from infrastructure.container import Container
from infrastructure.payment_read_queries import PgPaymentReadQueries
from infrastructure.payments import BreakerHealth
from infrastructure.read_queries import BatchedReads, PgReadQueries
from infrastructure.schedule_queries import PgScheduleListing
from infrastructure.schedule_read_queries import PgScheduleReadQueries
from read_api.asgi import create_graphql_app
from read_api.router import create_graphql_router

_NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def create_app(container: Container, *, manage_lifecycle: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        container.start_background()
        try:
            async with graphql_reads():
                yield
        finally:
            if manage_lifecycle:
                container.close()

    app = _LedgerApp(
        title="Payments Ledger",
        version="0.1.0",
        summary="Event-sourced double-entry ledger: wallets, transfers, holds, batches.",
        lifespan=lifespan,
        # Off unless asked for: even with no OpenTelemetry provider configured, FastAPI
        # looks the providers up on every request.
        telemetry=None if container.settings.otel_telemetry else _NO_TELEMETRY,
    )
    install_command_api(
        app,
        ApiContext(
            engine=container.engine, authenticator=container.api_keys, payments=container.payments
        ),
        container.health,
        container.settings.max_body_bytes,
    )
    app.state.scheduled_payments = PgScheduleListing(container.pool)
    graphql_reads = _mount_graphql(app, container)
    return app


class _LedgerApp(FastAPI):
    """FastAPI, with HTTP requests to exactly ``/graphql`` handed to ``graphql_front``
    (when set) before FastAPI's own middleware and routing."""

    graphql_front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        front = self.graphql_front
        if front is not None and scope["type"] == "http" and scope["path"] == "/graphql":
            scope["app"] = self
            await front(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def _provider_health(container: Container) -> BreakerHealth | None:
    services = container.payments
    if services is None or services.board is None:
        return None
    return BreakerHealth(services.board, services.providers)


def _mount_graphql(
    app: _LedgerApp, container: Container
) -> Callable[[], AbstractAsyncContextManager[None]]:
    """Mount /graphql; return the context the lifespan serves in: inside it, one-wallet
    lookups made together on the serving loop share one query (``BatchedReads``)."""
    settings = container.settings
    queries = PgReadQueries(container.pool)
    ports: dict[str, Any] = {
        "max_depth": settings.graphql_max_depth,
        "min_position_timeout_s": settings.min_position_wait_s,
        "payments": PgPaymentReadQueries(container.pool),
        "providers": _provider_health(container),
        "schedules": PgScheduleReadQueries(container.pool),
    }
    graphql = create_graphql_app(queries, container.api_keys.authenticate, **ports)
    # Also first in the routing table, for what reaches the router (websockets).
    app.router.routes.insert(0, Route("/graphql", graphql, include_in_schema=False))
    # In front of the FastAPI stack altogether (``_LedgerApp``): its middleware cost as
    # much CPU as executing a small query. The same body limit and 500 answer as there.
    app.graphql_front = ServerErrorMiddleware(
        BodySizeLimit(graphql, limit=settings.max_body_bytes),
        handler=app.exception_handlers[Exception],
    )
    # Never reached (the front and the route above answer first); it documents /graphql
    # in OpenAPI, as before.
    router = create_graphql_router(queries, container.api_keys.authenticate, **ports)
    app.include_router(router, prefix="/graphql")

    @asynccontextmanager
    async def batched_reads() -> AsyncIterator[None]:
        unbatched, graphql.contexts.reads = graphql.contexts.reads, BatchedReads(queries)
        try:
            yield
        finally:
            graphql.contexts.reads = unbatched

    return batched_reads

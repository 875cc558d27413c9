"""The FastAPI router serving the read schema; the caller mounts it at ``/graphql``::

    app.include_router(create_graphql_router(queries, authenticate), prefix="/graphql")

GraphiQL answers ``GET /graphql`` in a browser. Queries go as ``POST /graphql`` (or GET
with ``?query=``) with ``Authorization: Bearer <api key>``; errors are GraphQL errors in an
HTTP 200 body, each with a problem ``extensions.type`` (see ``read_api.errors``), and an
unmet ``Ledger-Min-Position`` too (see ``read_api.context``).
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request
from strawberry.fastapi import GraphQLRouter

from domain.principal import Principal
from read_api.asgi import ContextFactory, bearer_key
from read_api.context import DEFAULT_MIN_POSITION_TIMEOUT_S, ReadContext
from read_api.payment_ports import PaymentReadQueries, ProviderHealthPort
from read_api.ports import ReadQueries
from read_api.schedule_ports import ScheduleReadQueries
from read_api.schema import DEFAULT_MAX_DEPTH, build_schema

__all__ = ["bearer_key", "create_graphql_router"]


def create_graphql_router(
    queries: ReadQueries,
    authenticate: Callable[[str], Principal | None],
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    min_position_timeout_s: float = DEFAULT_MIN_POSITION_TIMEOUT_S,
    payments: PaymentReadQueries | None = None,
    providers: ProviderHealthPort | None = None,
    schedules: ScheduleReadQueries | None = None,
) -> GraphQLRouter[ReadContext, None]:
    """A GraphQL router (GraphiQL enabled) answering from ``queries`` (and ``payments``
    and ``providers`` for the payment fields, ``schedules`` for the scheduled-payment
    fields, see ``ReadContext``).

    ``authenticate`` maps an API key to its principal (None if unknown or revoked); it may
    block, so it runs in a worker thread, as do all ``queries`` calls. The service mounts
    ``asgi.create_graphql_app`` instead: the same answers without FastAPI's per-request
    dependency solving.
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
    )

    async def get_context(request: Request) -> ReadContext:
        return await contexts(request.headers)

    return GraphQLRouter[ReadContext, None](
        build_schema(max_depth),
        context_getter=get_context,
        graphql_ide="graphiql",
    )

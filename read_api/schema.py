"""The GraphQL read API: a Strawberry schema over the ``ReadQueries`` port.

Lists are Relay connections, forward only (``first``/``after``; see ``pagination``):
wallets by id, transfers by the position of their latest change (a transfer that changes
while a client pages may show up again on a later page; none is skipped), statement
entries by ``(at, position)`` with ``from`` inclusive and ``to`` exclusive. Scoping and
argument rules are in ``resolvers``; errors in ``errors``; ``Ledger-Min-Position`` in
``context``. Queries nested deeper than ``max_depth`` are rejected before execution.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import strawberry
from graphql import ASTValidationRule, DocumentNode, GraphQLError, GraphQLResolveInfoHelpers, parse
from strawberry.extensions import MaxAliasesLimiter, QueryDepthLimiter, SchemaExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext, validate_document
from strawberry.types import ExecutionContext

from read_api import resolvers
from read_api.context import hold_until_min_position
from read_api.errors import is_expected, shape_errors
from read_api.payments import PaymentQuery
from read_api.schedules import ScheduleQuery
from read_api.types import (
    BIGINT_SCALAR,
    BalanceAt,
    BigInt,
    Connection,
    StatementEntry,
    Transfer,
    Wallet,
)

DEFAULT_MAX_DEPTH = 8
MAX_ALIASES = 15
MAX_DOCUMENTS = 1024


@strawberry.type
class Query(PaymentQuery, ScheduleQuery):
    """The ledger's fields here; the payment fields come from ``PaymentQuery``, the
    scheduled-payment fields from ``ScheduleQuery``."""

    wallet: Wallet | None = strawberry.field(
        resolver=resolvers.wallet,
        description="One wallet; null with a not-found error if missing or not visible.",
    )
    wallets: Connection[Wallet] | None = strawberry.field(
        resolver=resolvers.wallets,
        description="Visible wallets ordered by id; first is capped at 500.",
    )
    transfer: Transfer | None = strawberry.field(
        resolver=resolvers.transfer,
        description="One transfer; null with a not-found error if missing or not visible.",
    )
    transfers: Connection[Transfer] | None = strawberry.field(
        resolver=resolvers.transfers,
        description="Visible transfers ordered by the position of their latest change;"
        " with walletId those debiting or crediting that wallet.",
    )
    statement: Connection[StatementEntry] | None = strawberry.field(
        resolver=resolvers.statement,
        description="A wallet's postings ordered by (at, position); from inclusive, to exclusive.",
    )
    balance_at: BalanceAt | None = strawberry.field(
        resolver=resolvers.balance_at,
        description="The posted balance as of an instant (0 before the first posting).",
    )


class LedgerSchema(strawberry.Schema):
    """Logs only unexpected errors: not-found and friends are answers, not incidents."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        unexpected = [e for e in errors if not is_expected(e)]
        if unexpected:
            super().process_errors(unexpected, execution_context)


class AcyclicExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's graphql-core executor, without the reference cycle each one makes.

    graphql-core 3.3 gives every executor helpers holding its own bound methods, so an
    executor (with its caches, the context and the result's pieces: ~50 objects a query)
    is freed only by the cyclic garbage collector, whose pauses then grow with the load.
    The helpers here reach the executor through a weak reference; the executor is alive
    whenever they are called (resolvers run during its execution).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        executor = weakref.ref(self)

        def gather(*items: Any, **options: Any) -> Any:
            return _alive(executor).gather_async_work(*items, **options)

        def track(*items: Any, **options: Any) -> Any:
            return _alive(executor).track_async_work(*items, **options)

        self.async_helpers = GraphQLResolveInfoHelpers(gather=gather, track=track)


def _alive(executor: weakref.ref[AcyclicExecutionContext]) -> AcyclicExecutionContext:
    alive = executor()
    if alive is None:  # pragma: no cover - only if a helper outlived its execution
        raise RuntimeError("the GraphQL execution this helper belongs to has finished")
    return alive


class PreparedDocuments:
    """Query texts parsed and validated once per schema: clients send the same few
    documents again and again.

    Keyed by the text alone: the schema and the rules (Strawberry's, then ``rules``) are
    fixed for the schema's life. A text that does not parse is never kept (its syntax
    error is raised again each time). At most ``MAX_DOCUMENTS`` texts; when full, it
    starts again empty.
    """

    def __init__(self, rules: list[type[ASTValidationRule]]) -> None:
        self.rules = tuple(rules)
        self._known: dict[str, tuple[DocumentNode, list[GraphQLError]]] = {}

    def prepare(self, context: ExecutionContext) -> tuple[DocumentNode, list[GraphQLError]]:
        query = context.query or ""
        known = self._known.get(query)
        if known is None:
            document = parse(query, **context.parse_options)
            rules = (*context.validation_rules, *self.rules)
            errors = validate_document(context.schema._schema, document, rules)
            if len(self._known) >= MAX_DOCUMENTS:
                self._known.clear()
            known = self._known[query] = (document, errors)
        return known


class ReadExtension(SchemaExtension):
    """All the read schema adds to an operation, as one hook (Strawberry sets up every
    extension's hooks again for each request, at a cost per hook): cached parsing and
    validation with the depth and alias limits, the ``Ledger-Min-Position`` gate
    (``context``) and problem types on errors (``errors``).

    It hands Strawberry the prepared document and its validation errors, so Strawberry
    neither parses nor validates again; a text that does not parse is left to Strawberry,
    which raises the same syntax error. The gate holds only an operation Strawberry will
    execute: valid, of a type it can tell and allows.
    """

    def __init__(self, documents: PreparedDocuments) -> None:
        super().__init__()
        self.documents = documents

    async def on_operation(self) -> AsyncIterator[None]:
        context = self.execution_context
        if context.query:
            try:
                document, errors = self.documents.prepare(context)
            except GraphQLError:
                pass
            else:
                context.graphql_document, context.pre_execution_errors = document, errors
                if not errors and _allowed(context):
                    await hold_until_min_position(context)
        yield
        shape_errors(context)


def _allowed(context: ExecutionContext) -> bool:
    try:
        return context.operation_type in context.allowed_operations
    except RuntimeError:  # no such operation, or several and none named
        return False


def build_schema(max_depth: int = DEFAULT_MAX_DEPTH) -> strawberry.Schema:
    """The read schema, rejecting operations nested deeper than ``max_depth``."""
    # The depth and alias rules are built once: the limiter extensions would build a new
    # rule class per request.
    documents = PreparedDocuments(
        [
            *QueryDepthLimiter(max_depth=max_depth).validation_rules,
            *MaxAliasesLimiter(max_alias_count=MAX_ALIASES).validation_rules,
        ]
    )
    # A factory, not an instance: Strawberry builds fresh extensions for every request.
    extensions: list[Any] = [partial(ReadExtension, documents)]
    return LedgerSchema(
        query=Query,
        extensions=extensions,
        execution_context_class=AcyclicExecutionContext,
        config=StrawberryConfig(scalar_map={BigInt: BIGINT_SCALAR}),
    )

"""The GraphQL read API: a Strawberry schema over the ``ReadQueries`` port.

Lists are Relay connections, forward only (``first``/``after``; see ``pagination``):
wallets by id, transfers by the position of their latest change (a transfer that changes
while a client pages may show up again on a later page; none is skipped), statement
entries by ``(at, position)`` with ``from`` inclusive and ``to`` exclusive. Scoping and
argument rules are in ``resolvers``; errors in ``errors``; ``Ledger-Min-Position`` in
``context``. Queries nested deeper than ``max_depth`` are rejected before execution.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from read_api import resolvers
from read_api.context import MinPositionGate
from read_api.errors import ProblemErrors, is_expected
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


def build_schema(max_depth: int = DEFAULT_MAX_DEPTH) -> strawberry.Schema:
    """The read schema, rejecting operations nested deeper than ``max_depth``."""
    # Factories, not instances: Strawberry builds fresh extensions for every request.
    # The depth and alias rules are built once: the limiter extensions would build a new
    # rule class per request, and ValidationCache keys on the rules, so it never hit.
    rules = [
        *QueryDepthLimiter(max_depth=max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=MAX_ALIASES).validation_rules,
    ]
    # Factories, not instances: Strawberry builds fresh extensions for every request.
    extensions: list[Any] = [
        partial(AddValidationRules, rules),
        # Clients send the same few documents again and again: parse and validate each
        # once per process.
        partial(ParserCache, maxsize=1024),
        partial(ValidationCache, maxsize=1024),
        MinPositionGate,
        ProblemErrors,
    ]
    return LedgerSchema(
        query=Query,
        extensions=extensions,
        config=StrawberryConfig(scalar_map={BigInt: BIGINT_SCALAR}),
    )

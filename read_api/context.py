"""Per-request GraphQL context, and the ``Ledger-Min-Position`` gate.

Reading your writes: a command response carries the event position it produced; a client
sends it back as ``Ledger-Min-Position: N`` and the request waits (asynchronously,
polling ``positions()`` every ``POLL_S``) until every projection the
schema reads has reached ``N``, for at most the configured timeout.

When the timeout passes first, the answer is HTTP 200 with ``data: null`` and one GraphQL
error whose ``extensions.type`` is ``/problems/position-not-reached`` (the client may
retry). A header that is not a non-negative integer is a ``validation-error``. Requests
without a principal do not wait: they are answered ``unauthorized`` at once.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import TypeVar

import anyio
import anyio.to_thread
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import GraphQLError
from strawberry.fastapi import BaseContext
from strawberry.types import ExecutionContext

from domain.errors import LedgerError, ValidationError
from domain.principal import Principal
from read_api.errors import PositionNotReached, Unauthorized, problem_extensions
from read_api.payment_ports import PAYMENT_PROJECTIONS, PaymentReadQueries, ProviderHealthPort
from read_api.ports import (
    READ_PROJECTIONS,
    AsyncReadQueries,
    ReadQueries,
    Scope,
    StatementRecord,
    TransferRecord,
    WalletRecord,
)
from read_api.schedule_ports import SCHEDULE_PROJECTIONS, ScheduleReadQueries

MIN_POSITION_HEADER = "Ledger-Min-Position"
POLL_S = 0.01
DEFAULT_MIN_POSITION_TIMEOUT_S = 5.0

# The projections ``Ledger-Min-Position`` waits for, by (payments wired, schedules wired).
_READ_PROJECTIONS = {
    (p, s): READ_PROJECTIONS
    + (PAYMENT_PROJECTIONS if p else ())
    + (SCHEDULE_PROJECTIONS if s else ())
    for p in (False, True)
    for s in (False, True)
}
_DIGITS = re.compile(r"[0-9]{1,19}")
R = TypeVar("R")


class ThreadedReads:
    """``AsyncReadQueries`` over a blocking ``ReadQueries``: each call in a worker thread."""

    def __init__(self, queries: ReadQueries) -> None:
        self.queries = queries

    async def wallet(self, wallet_id: str, scope: Scope) -> WalletRecord | None:
        return await anyio.to_thread.run_sync(self.queries.wallet, wallet_id, scope)

    async def wallets(
        self,
        scope: Scope,
        *,
        merchant_id: str | None,
        currency: str | None,
        after: str | None,
        limit: int,
    ) -> list[WalletRecord]:
        fn = partial(
            self.queries.wallets,
            scope,
            merchant_id=merchant_id,
            currency=currency,
            after=after,
            limit=limit,
        )
        return await anyio.to_thread.run_sync(fn)

    async def transfer(self, transfer_id: str, scope: Scope) -> TransferRecord | None:
        return await anyio.to_thread.run_sync(self.queries.transfer, transfer_id, scope)

    async def transfers(
        self,
        scope: Scope,
        *,
        wallet_id: str | None,
        status: str | None,
        after: int | None,
        limit: int,
    ) -> list[TransferRecord]:
        fn = partial(
            self.queries.transfers,
            scope,
            wallet_id=wallet_id,
            status=status,
            after=after,
            limit=limit,
        )
        return await anyio.to_thread.run_sync(fn)

    async def statement(
        self,
        wallet_id: str,
        *,
        start: datetime | None,
        end: datetime | None,
        after: tuple[datetime, int] | None,
        limit: int,
    ) -> list[StatementRecord]:
        fn = partial(
            self.queries.statement, wallet_id, start=start, end=end, after=after, limit=limit
        )
        return await anyio.to_thread.run_sync(fn)

    async def posted_at(self, wallet_id: str, at: datetime) -> int | None:
        return await anyio.to_thread.run_sync(self.queries.posted_at, wallet_id, at)

    async def positions(self) -> dict[str, int]:
        return await anyio.to_thread.run_sync(self.queries.positions)


class ReadContext(BaseContext):
    """What resolvers need: the ports, the caller, and the read-your-writes request.

    ``payments``, ``providers`` and ``schedules`` are optional: the payment fields need
    the first and the scheduled-payment fields the third (and with either,
    ``Ledger-Min-Position`` waits for its projections too); without the second
    ``providers`` answers an empty list. Resolvers read through ``reads``: the given
    non-blocking port, else ``queries`` in worker threads.
    """

    def __init__(
        self,
        queries: ReadQueries,
        principal: Principal | None,
        *,
        min_position: str | None = None,
        min_position_timeout_s: float = DEFAULT_MIN_POSITION_TIMEOUT_S,
        unauthorized_detail: str = "send 'Authorization: Bearer <api key>'",
        payments: PaymentReadQueries | None = None,
        providers: ProviderHealthPort | None = None,
        schedules: ScheduleReadQueries | None = None,
        reads: AsyncReadQueries | None = None,
    ) -> None:
        super().__init__()
        self.queries = queries
        self.reads: AsyncReadQueries = ThreadedReads(queries) if reads is None else reads
        self.payments = payments
        self.providers = providers
        self.schedules = schedules
        self.read_projections = _READ_PROJECTIONS[payments is not None, schedules is not None]
        self.principal = principal
        self.min_position = min_position
        self.min_position_timeout_s = min_position_timeout_s
        self.unauthorized_detail = unauthorized_detail

    def scope(self) -> Scope:
        """The caller's scope; ``Unauthorized`` without a principal."""
        if self.principal is None:
            raise Unauthorized(self.unauthorized_detail)
        return Scope.of(self.principal)

    async def run(self, fn: Callable[[], R]) -> R:
        """Run a blocking port call in a worker thread."""
        return await anyio.to_thread.run_sync(fn)

    async def wait_for_min_position(self) -> None:
        """Return once the read models reached ``min_position``; raise otherwise."""
        if self.min_position is None or self.principal is None:
            return
        raw = self.min_position.strip()
        if not _DIGITS.fullmatch(raw):
            raise ValidationError(
                f"{MIN_POSITION_HEADER} must be a non-negative integer, not {raw[:40]!r}"
            )
        target = int(raw)
        deadline = time.monotonic() + self.min_position_timeout_s
        while True:
            positions = await self.reads.positions()
            lowest = min(positions.get(name, 0) for name in self.read_projections)
            if lowest >= target:
                return
            if time.monotonic() >= deadline:
                raise PositionNotReached(
                    f"read models are at position {lowest}, not yet {target}, after"
                    f" {self.min_position_timeout_s:g} s; retry the request"
                )
            await anyio.sleep(POLL_S)


async def hold_until_min_position(execution_context: ExecutionContext) -> None:
    """Wait for ``Ledger-Min-Position``; when it is not reached (or malformed), set the
    operation's result to that one error, so nothing is executed."""
    context = execution_context.context
    if isinstance(context, ReadContext):
        try:
            await context.wait_for_min_position()
        except LedgerError as exc:
            error = GraphQLError(exc.detail, original_error=exc, extensions=problem_extensions(exc))
            execution_context.result = GraphQLExecutionResult(data=None, errors=[error])

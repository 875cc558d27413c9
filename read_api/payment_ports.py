"""The read side's ports for payments and pay-outs, and for the providers' health.

``PaymentReadQueries`` answers from the payment projections' tables (infrastructure
implements it on PostgreSQL: ``PgPaymentReadQueries``); its rows are the projections' own
(``projections.payments``). Like ``ReadQueries``, visibility is part of every query that
can return another merchant's rows, and every method blocks: callers run it in a thread.

``ProviderHealthPort`` reports the providers as the circuit breakers see them; the
composition root implements it. Both are optional in the GraphQL context: without the
first the payment fields fail, without the second ``providers`` is an empty list.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from projections.payment_timeline import TimelineRow
from projections.payments import PaymentRow, RefundRow
from projections.payouts import PayoutRow
from read_api.ports import Scope

# The projections these ports read; ``Ledger-Min-Position`` waits for them too.
PAYMENT_PROJECTIONS = ("payments", "refunds", "payouts", "payment_timeline")


@dataclass(frozen=True, slots=True)
class PaymentFilter:
    """AND-ed conditions; ``created_after`` inclusive, ``created_before`` exclusive."""

    status: str | None = None
    provider: str | None = None
    method: str | None = None
    currency: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class PayoutFilter:
    status: str | None = None
    provider: str | None = None
    currency: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class ProviderHealthRow:
    """One provider as its circuit breaker sees it over its window."""

    name: str
    health: str  # e.g. healthy, degraded, down
    breaker_state: str  # closed, open, half_open
    success_rate: float | None  # 0..1; None before any call
    p99_latency_ms: float | None
    calls_in_window: int


class PaymentReadQueries(Protocol):
    """Blocking queries of the payment read models. Lists return at most ``limit`` rows
    in key order strictly after the ``after`` key (keyset pagination): payments, disputes
    and pay-outs by ``created_position``, timelines by ``position``."""

    def payment(self, payment_id: str, scope: Scope) -> PaymentRow | None:
        """The payment if it exists and ``scope`` may see it."""
        ...

    def payments(
        self, scope: Scope, where: PaymentFilter, *, after: int | None, limit: int
    ) -> list[PaymentRow]:
        """Visible payments matching ``where``, in the order they were created."""
        ...

    def disputes(
        self, scope: Scope, *, status: str | None, after: int | None, limit: int
    ) -> list[PaymentRow]:
        """Visible payments with a dispute (``open``, ``won`` or ``lost`` if given)."""
        ...

    def refunds(self, payment_id: str) -> list[RefundRow]:
        """The payment's refunds in the order they were asked for (or reported).

        Does not check visibility: the caller looks the payment up with its scope first.
        """
        ...

    def timeline(self, owner_id: str, *, after: int | None, limit: int) -> list[TimelineRow]:
        """A payment's or pay-out's timeline in position order (no visibility check)."""
        ...

    def payout(self, payout_id: str, scope: Scope) -> PayoutRow | None:
        """The pay-out if it exists and ``scope`` may see it."""
        ...

    def payouts(
        self, scope: Scope, where: PayoutFilter, *, after: int | None, limit: int
    ) -> list[PayoutRow]:
        """Visible pay-outs matching ``where``, in the order they were requested."""
        ...


class ProviderHealthPort(Protocol):
    def providers(self) -> list[ProviderHealthRow]:
        """Every configured provider, in a stable order. Must not block for long: it is
        called on the event loop's worker thread like the other ports."""
        ...

"""Ports the projectors write through. infrastructure/ implements them on PostgreSQL.

A catch-up writes hundreds of thousands of rows, so they travel as the projectors make
them from the events' stored state, with no object per row: plain tuples in the table's
column order or positional arguments; ids as text; timestamps as the RFC 3339 text the
events were stored with (``projections.stored``); amounts as integer minor units.
"""

from __future__ import annotations

from typing import Any, Protocol

# (wallet_id, position, transfer_id, kind, amount, posted_after, counterparty_id, at);
# amount is signed: credits positive, debits negative.
StatementRow = tuple[str, int, str, str, int, int, str, str]

# (transfer_id, merchant_id, kind, debit_account_id, credit_account_id, amount, currency,
#  status, posted_amount, pending, expires_at, metadata, created_at, updated_at, position)
TransferRow = tuple[
    str, str, str, str, str, int, str, str, int, bool, str | None, dict[str, Any], str, str, int
]


class BalancesWriter(Protocol):
    def wallet_opened(
        self,
        wallet_id: str,
        merchant_id: str,
        currency: str,
        credit_limit: int,
        metadata: dict[str, Any],
        at: str,
        position: int,
    ) -> None: ...

    def wallet_changed(
        self, wallet_id: str, column: str, value: Any, version: int, at: str, position: int
    ) -> None:
        """Set ``column`` (``posted``, ``pending`` or ``status``) of a wallet to ``value``."""

    def world_moved(
        self, wallet_id: str, currency: str, delta: int, at: str, position: int
    ) -> None:
        """Add ``delta`` to the posted balance of a ``world`` account, created if new."""


class StatementsWriter(Protocol):
    def add_entry(self, row: StatementRow) -> None: ...


class TransfersWriter(Protocol):
    def transfer_created(self, row: TransferRow) -> None: ...

    def transfer_changed(
        self, transfer_id: str, status: str, posted_amount: int | None, at: str, position: int
    ) -> None:
        """``posted_amount`` None keeps the row's."""

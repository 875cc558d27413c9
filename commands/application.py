"""The eventsourcing application that stores Wallet and Transfer aggregates."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application

from domain.errors import NotFound
from domain.transfer import Transfer
from domain.wallet import Wallet


class LedgerApplication(Application[UUID]):
    """Named ``Ledger``: its events live in the table ``ledger_events``.

    Persistence is configured entirely by the environment the composition root passes in.
    """

    name = "Ledger"

    def get_wallet(self, wallet_id: UUID) -> Wallet:
        agg = self._get(wallet_id)
        if not isinstance(agg, Wallet):
            raise NotFound(f"wallet {wallet_id} not found")
        return agg

    def get_transfer(self, transfer_id: UUID) -> Transfer:
        agg = self._get(transfer_id)
        if not isinstance(agg, Transfer):
            raise NotFound(f"transfer {transfer_id} not found")
        return agg

    def _get(self, aggregate_id: UUID) -> Any:
        try:
            return self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise NotFound(f"{aggregate_id} not found") from None

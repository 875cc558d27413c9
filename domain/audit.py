"""Replay every event and check every invariant of the ledger.

The replayer rebuilds each aggregate from its events (exactly as the repository does) and
checks, event by event:

- versions are contiguous per aggregate;
- each wallet posting moves ``posted`` by exactly its amount, each hold ``pending``;
- no wallet's available balance (posted - pending + credit limit) ever goes below zero;
- every wallet posting belongs to a transfer, and each transfer's posted amount appears
  once as a debit and once as a credit (world sides excepted): every entry balances;
- per currency, wallets plus ``world`` sum to zero;
- each wallet's pending equals the sum of its still-pending transfers.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

from domain.ledger import world_account_id
from domain.transfer import PENDING, Transfer
from domain.wallet import Wallet


@dataclass
class Violation:
    position: int
    aggregate_id: str
    message: str

    def __str__(self) -> str:
        return f"position {self.position}: {self.aggregate_id}: {self.message}"


@dataclass
class Replayer:
    wallets: dict[str, Wallet] = field(default_factory=dict)
    transfers: dict[str, Transfer] = field(default_factory=dict)
    # transfer id -> (sum debited on wallets, sum credited on wallets)
    postings: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    world: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    violations: list[Violation] = field(default_factory=list)
    events: int = 0
    last_position: int = 0
    min_available: dict[str, int] = field(default_factory=dict)

    def _fail(self, position: int, aggregate_id: Any, message: str) -> None:
        if len(self.violations) < 1000:
            self.violations.append(Violation(position, str(aggregate_id), message))

    def apply(self, event: Any, position: int) -> None:
        self.events += 1
        self.last_position = position
        key = str(event.originator_id)
        if isinstance(event, Wallet.Event):
            self._wallet_event(event, key, position)
        elif isinstance(event, Transfer.Event):
            self._transfer_event(event, key, position)
        else:
            self._fail(position, key, f"unknown event type {type(event).__name__}")

    def _mutate(self, store: dict[str, Any], event: Any, key: str, position: int) -> Any:
        current = store.get(key)
        expected = 1 if current is None else current.version + 1
        if event.originator_version != expected:
            self._fail(position, key, f"version {event.originator_version}, expected {expected}")
            if current is not None:  # the library refuses a gap: report it and replay on
                event = replace(event, originator_version=expected)
        aggregate = event.mutate(current)
        store[key] = aggregate
        return aggregate

    def _wallet_event(self, event: Wallet.Event, key: str, position: int) -> None:
        before = self.wallets.get(key)
        posted_before = before.posted if before else 0
        pending_before = before.pending if before else 0
        wallet: Wallet = self._mutate(self.wallets, event, key, position)
        if isinstance(event, Wallet.Debited | Wallet.Credited):
            sign = 1 if isinstance(event, Wallet.Credited) else -1
            if event.amount <= 0:
                self._fail(position, key, f"non-positive posting {event.amount}")
            if posted_before + sign * event.amount != event.posted_after:
                self._fail(position, key, "posted_after does not equal balance plus amount")
            self.postings[event.transfer_id][0 if sign < 0 else 1] += event.amount
            currency = wallet.currency
            if event.counterparty_id == str(world_account_id(currency)):
                self.world[currency] -= sign * event.amount
        elif isinstance(event, Wallet.HoldPlaced | Wallet.HoldReleased):
            sign = 1 if isinstance(event, Wallet.HoldPlaced) else -1
            if pending_before + sign * event.amount != event.pending_after:
                self._fail(position, key, "pending_after does not equal pending plus hold")
            if event.pending_after < 0:
                self._fail(position, key, "pending went below zero")
        available = wallet.posted - wallet.pending + wallet.credit_limit
        # A capture releases the hold and then debits within one command; only a debit
        # or a new hold can push available below zero, so check after those.
        if isinstance(event, Wallet.Debited | Wallet.HoldPlaced) and available < 0:
            self._fail(position, key, f"available balance went below zero ({available})")
        self.min_available[key] = min(self.min_available.get(key, available), available)

    def _transfer_event(self, event: Transfer.Event, key: str, position: int) -> None:
        self._mutate(self.transfers, event, key, position)

    def finish(self) -> None:
        """End-of-history checks: every entry balances, currencies sum to zero, holds."""
        world_ids = {str(world_account_id(c)) for c in {w.currency for w in self.wallets.values()}}
        for tid in self.postings:
            if tid not in self.transfers:
                self._fail(self.last_position, tid, "wallet posting without a transfer")
        held: dict[str, int] = defaultdict(int)
        for tid, transfer in self.transfers.items():
            debited, credited = self.postings.get(tid, [0, 0])
            posted = transfer.posted_amount
            want_debit = 0 if transfer.debit_account_id in world_ids else posted
            want_credit = 0 if transfer.credit_account_id in world_ids else posted
            if (debited, credited) != (want_debit, want_credit):
                self._fail(
                    self.last_position,
                    tid,
                    f"journal entry unbalanced: posted {posted}, wallets debited {debited}, "
                    f"credited {credited}",
                )
            if transfer.status == PENDING:
                held[transfer.debit_account_id] += transfer.amount
        totals: dict[str, int] = defaultdict(int)
        for wid, wallet in self.wallets.items():
            totals[wallet.currency] += wallet.posted
            if wallet.pending != held.get(wid, 0):
                self._fail(
                    self.last_position,
                    wid,
                    f"pending {wallet.pending} differs from its pending transfers "
                    f"{held.get(wid, 0)}",
                )
        for currency, total in totals.items():
            if total + self.world[currency] != 0:
                self._fail(
                    self.last_position,
                    f"world:{currency}",
                    f"wallets sum to {total}, world to {self.world[currency]}: not zero",
                )

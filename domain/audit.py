"""Replay every event and check every invariant of the ledger.

The replayer rebuilds each aggregate from its events (exactly as the repository does) and
checks, event by event:

- versions are contiguous per aggregate;
- each wallet posting moves ``posted`` by exactly its amount, each hold ``pending``;
- no wallet's available balance (posted - pending + credit limit) ever goes below zero;
- every wallet posting belongs to a transfer, and each transfer's posted amount appears
  once as a debit and once as a credit (world sides excepted): every entry balances;
- per currency, wallets plus ``world`` sum to zero;
- each wallet's pending equals the sum of its still-pending transfers;
- payments keep ``0 <= refunded <= captured <= authorized <= amount`` and ``fees <=
  captured``, and every captured, refunded or disputed amount is in the ledger exactly
  once, under the posting's derived transfer id (``domain/payment_ledger.py``); every
  pay-out's hold is posted when paid, released when failed, and still held otherwise;
- every occurrence a scheduled payment started has its payment, under the id derived from
  the occurrence (``domain/schedule.py``).

A forced posting (a provider's fact, ``FORCED_KINDS``) may take a wallet below zero; any
other debit may not, unless it only posts a hold it just released.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

from domain.ledger import world_account_id
from domain.payment import DISPUTED, LOST, WON, Payment
from domain.payment_ledger import FORCED_KINDS, entry_id
from domain.payout import FAILED as PAYOUT_FAILED
from domain.payout import PAID as PAYOUT_PAID
from domain.payout import Payout
from domain.schedule import ScheduledPayment, occurrence_payment_id
from domain.transfer import PENDING, POSTED, VOIDED, Transfer
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
    payments: dict[str, Payment] = field(default_factory=dict)
    payouts: dict[str, Payout] = field(default_factory=dict)
    schedules: dict[str, ScheduledPayment] = field(default_factory=dict)
    # payment id of each started occurrence -> its schedule's id
    occurrence_payments: dict[str, str] = field(default_factory=dict)
    # the last hold released for a posting: (wallet id, transfer id, amount)
    _released: tuple[str, str, int] | None = None
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
        elif isinstance(event, Payment.Event):
            self._payment_event(event, key, position)
        elif isinstance(event, Payout.Event):
            self._mutate(self.payouts, event, key, position)
        elif isinstance(event, ScheduledPayment.Event):
            self._mutate(self.schedules, event, key, position)
            if isinstance(event, ScheduledPayment.OccurrenceStarted):
                if event.payment_id != str(occurrence_payment_id(key, event.number)):
                    self._fail(position, key, f"occurrence {event.number}: foreign payment id")
                self.occurrence_payments[event.payment_id] = key
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
        # or a new hold can push available below zero, so check after those. A forced
        # posting records a provider's fact, and posting a hold just released takes no
        # more than was held: neither lowers what was available before.
        exempt = isinstance(event, Wallet.Debited) and (
            event.kind in FORCED_KINDS
            or (
                self._released is not None
                and self._released[:2] == (key, event.transfer_id)
                and event.amount <= self._released[2]
            )
        )
        if isinstance(event, Wallet.Debited | Wallet.HoldPlaced) and available < 0 and not exempt:
            self._fail(position, key, f"available balance went below zero ({available})")
        self._released = None
        if isinstance(event, Wallet.HoldReleased) and event.reason == "posted":
            self._released = (key, event.transfer_id, event.amount)
        self.min_available[key] = min(self.min_available.get(key, available), available)

    def _transfer_event(self, event: Transfer.Event, key: str, position: int) -> None:
        self._mutate(self.transfers, event, key, position)

    def _payment_event(self, event: Payment.Event, key: str, position: int) -> None:
        p: Payment = self._mutate(self.payments, event, key, position)
        if not (
            0 <= p.refunded_amount <= p.captured_amount <= p.authorized_amount <= p.amount
            and 0 <= p.fees <= p.captured_amount
            and p.disputed_amount + p.refunded_amount <= p.captured_amount
        ):
            self._fail(
                position,
                key,
                f"payment amounts out of order: amount {p.amount}, authorized "
                f"{p.authorized_amount}, captured {p.captured_amount}, refunded "
                f"{p.refunded_amount}, fees {p.fees}, disputed {p.disputed_amount}",
            )

    def _posted(self, tid: Any) -> int:
        t = self.transfers.get(str(tid))
        return t.posted_amount if t is not None and t.status == POSTED else 0

    def _check_payment(self, pid: str, p: Payment) -> None:
        want: list[tuple[str, int, int]] = [
            ("capture", p.captured_amount - p.fees, self._posted(entry_id(p.id, "capture"))),
            ("fee", p.fees, self._posted(entry_id(p.id, "fee"))),
        ]
        for rid, minor in p.refunds.items():
            got = self._posted(entry_id(p.id, f"refund:{rid}")) + self._posted(
                entry_id(p.id, f"provider-refund:{rid}")
            )
            want.append((f"refund {rid}", minor, got))
        for op in p.operations.values():
            if op.kind == "refund":
                held = self.transfers.get(str(entry_id(p.id, f"refund:{op.operation_id}")))
                got = held.amount if held is not None and held.status == PENDING else 0
                want.append((f"held refund {op.operation_id}", op.amount, got))
        disputed = p.disputed_amount if p.dispute_id else 0
        want.append(("dispute", disputed, self._posted(entry_id(p.id, "dispute"))))
        want.append(
            ("dispute won", disputed if p.status == WON else 0,
             self._posted(entry_id(p.id, "dispute-won")))
        )  # fmt: skip
        want.append(
            ("dispute lost", disputed if p.status == LOST else 0,
             self._posted(entry_id(p.id, "dispute-lost")))
        )  # fmt: skip
        for label, expected, got in want:
            if expected != got:
                self._fail(
                    self.last_position,
                    pid,
                    f"payment {label}: {expected} expected in the ledger, {got} posted",
                )
        if p.status == DISPUTED and disputed <= 0:
            self._fail(self.last_position, pid, "an open dispute holds nothing")

    def _check_payout(self, pid: str, po: Payout) -> None:
        held = self.transfers.get(po.transfer_id)
        status = held.status if held is not None else None
        want = {PAYOUT_PAID: POSTED, PAYOUT_FAILED: VOIDED}.get(po.status, PENDING)
        if status != want or (held is not None and held.amount != po.amount):
            self._fail(
                self.last_position, pid, f"payout {po.status}: its hold is {status}, not {want}"
            )
        fee = self._posted(entry_id(po.id, "fee"))
        if fee != (po.fee if po.status == PAYOUT_PAID else 0):
            self._fail(self.last_position, pid, f"payout fee {po.fee}, {fee} posted")

    def finish(self) -> None:
        """End-of-history checks: every entry balances, currencies sum to zero, holds,
        payments and pay-outs in the ledger exactly once."""
        for pid, payment in self.payments.items():
            self._check_payment(pid, payment)
        for pid, payout in self.payouts.items():
            self._check_payout(pid, payout)
        for pid, schedule_id in self.occurrence_payments.items():
            if pid not in self.payments:
                self._fail(self.last_position, schedule_id, f"started occurrence without {pid}")
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

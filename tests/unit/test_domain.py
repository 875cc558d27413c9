"""The domain in memory (no database): Wallet, Transfer, the journal-entry functions of
``domain.ledger`` and the audit ``Replayer``.

Every guard raises its own error and leaves the aggregates untouched; events carry the
command's ids and time; replaying the events rebuilds the same state.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.domain import Aggregate
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
)

from domain import ledger
from domain.audit import Replayer
from domain.context import CommandContext
from domain.errors import (
    BalanceOverflow,
    CurrencyMismatch,
    InsufficientFunds,
    InvalidAmount,
    InvalidWalletState,
    LedgerError,
    PostExceedsPending,
    SameAccount,
    TransferExpired,
    TransferNotPending,
    ValidationError,
    WalletClosed,
    WalletFrozen,
    WalletNotEmpty,
)
from domain.ledger import world_account_id
from domain.money import MAX_AMOUNT, MAX_BALANCE, Currency, Money
from domain.transfer import (
    DEPOSIT,
    EXPIRED,
    PENDING,
    POSTED,
    TRANSFER,
    VOIDED,
    WITHDRAWAL,
    Transfer,
)
from domain.wallet import ACTIVE, CLOSED, FROZEN, Wallet

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
USD = Currency.of("USD")
JPY = Currency.of("JPY")
_ids = itertools.count(1)


def new_id() -> UUID:
    return UUID(int=next(_ids))


def ctx(now: datetime = T0, corr: str = "corr-1", cause: str = "cause-1") -> CommandContext:
    return CommandContext(now=now, correlation_id=corr, causation_id=cause)


def usd(minor: int) -> Money:
    return Money.of(minor, USD)


def state(agg: Aggregate) -> dict[str, Any]:
    """Everything an aggregate holds, except its list of not-yet-saved events."""
    return {k: v for k, v in vars(agg).items() if k != "_pending_events"}


class Book:
    """An in-memory event log: what a save would have stored, in order."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def save(self, *aggregates: Aggregate | None) -> None:
        for agg in aggregates:
            if agg is not None:
                self.events.extend(agg.collect_events())

    def replay(self) -> dict[UUID, Aggregate]:
        """Rebuild every aggregate the way the repository does."""
        rebuilt: dict[UUID, Any] = {}
        for e in self.events:
            rebuilt[e.originator_id] = e.mutate(rebuilt.get(e.originator_id))
        return rebuilt

    def audit(self) -> Replayer:
        replayer = Replayer()
        for position, e in enumerate(self.events, start=1):
            replayer.apply(e, position)
        replayer.finish()
        return replayer


def open_wallet(
    book: Book | None = None,
    currency: Currency = USD,
    limit: int = 0,
    c: CommandContext | None = None,
    merchant: str = "acme",
) -> Wallet:
    w = Wallet.open(new_id(), merchant, currency, limit, {"k": "v"}, c or ctx())
    if book is not None:
        book.save(w)
    return w


def move(
    debit: Wallet | None,
    credit: Wallet | None,
    amount: int | Money,
    *,
    pending: bool = False,
    expires_at: datetime | None = None,
    c: CommandContext | None = None,
    book: Book | None = None,
) -> Transfer:
    wallet = debit or credit
    assert wallet is not None
    money = amount if isinstance(amount, Money) else Money.of(amount, wallet.currency)
    kind = DEPOSIT if debit is None else WITHDRAWAL if credit is None else TRANSFER
    t = ledger.open_transfer(
        new_id(),
        kind=kind,
        debit=debit,
        credit=credit,
        amount=money,
        pending=pending,
        expires_at=expires_at,
        merchant_id=wallet.merchant_id,
        metadata={},
        ctx=c or ctx(),
    )
    if book is not None:
        book.save(debit, credit, t)
    return t


def deposit(
    w: Wallet, amount: int, book: Book | None = None, c: CommandContext | None = None
) -> Transfer:
    return move(None, w, amount, book=book, c=c)


def funded(minor: int, book: Book | None = None, **kw: Any) -> Wallet:
    w = open_wallet(book, **kw)
    if minor:
        deposit(w, minor, book)
    w.collect_events()
    return w


def assert_refused(
    error: type[LedgerError], aggregates: Iterable[Aggregate | None], action: Callable[[], Any]
) -> LedgerError:
    """``action`` raises exactly ``error`` and leaves every aggregate as it was, with no
    new pending events."""
    aggs = [a for a in aggregates if a is not None]
    for a in aggs:
        a.collect_events()
    before = [state(a) for a in aggs]
    with pytest.raises(LedgerError) as info:
        action()
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    for a, snapshot in zip(aggs, before, strict=True):
        assert a.pending_events == [], f"{type(a).__name__} got events {a.pending_events}"
        assert state(a) == snapshot
    return info.value


# ---- Wallet: opening and balances -------------------------------------------------------------


def test_open_wallet_starts_empty_and_active() -> None:
    c = ctx(corr="open-corr", cause="open-cause")
    w = Wallet.open(new_id(), "acme", USD, 2500, {"name": "main"}, c)
    assert (w.merchant_id, w.currency, w.credit_limit, w.metadata) == (
        "acme",
        "USD",
        2500,
        {"name": "main"},
    )
    assert (w.posted, w.pending, w.available, w.status, w.version) == (0, 0, 2500, ACTIVE, 1)
    [opened] = w.pending_events
    assert isinstance(opened, Wallet.Opened)
    assert (opened.correlation_id, opened.causation_id, opened.timestamp) == (
        "open-corr",
        "open-cause",
        T0,
    )
    assert w.created_on == T0


@pytest.mark.parametrize("limit", [-1, -(10**6), 1.5, 10.0, True, "100", None, MAX_BALANCE + 1])
def test_open_wallet_rejects_a_bad_credit_limit(limit: Any) -> None:
    with pytest.raises(ValidationError) as info:
        Wallet.open(new_id(), "acme", USD, limit, {}, ctx())
    assert type(info.value) is ValidationError


def test_open_wallet_accepts_zero_and_maximum_credit_limit() -> None:
    assert Wallet.open(new_id(), "acme", USD, 0, {}, ctx()).available == 0
    assert Wallet.open(new_id(), "acme", USD, MAX_BALANCE, {}, ctx()).available == MAX_BALANCE


def test_open_wallet_requires_a_merchant() -> None:
    with pytest.raises(ValidationError):
        Wallet.open(new_id(), "", USD, 0, {}, ctx())


# ---- deposits, withdrawals and transfers --------------------------------------------------------


def test_deposit_credits_the_wallet_from_world() -> None:
    w = open_wallet()
    w.collect_events()
    t = deposit(w, 1234)
    assert (w.posted, w.pending, w.available) == (1234, 0, 1234)
    world = str(world_account_id("USD"))
    assert (t.kind, t.status, t.amount, t.posted_amount, t.currency) == (
        DEPOSIT,
        POSTED,
        1234,
        1234,
        "USD",
    )
    assert (t.debit_account_id, t.credit_account_id) == (world, str(w.id))
    [credited] = w.pending_events
    assert isinstance(credited, Wallet.Credited)
    assert (credited.amount, credited.posted_after, credited.counterparty_id) == (1234, 1234, world)
    assert credited.transfer_id == str(t.id)


def test_world_ids_are_stable_per_currency() -> None:
    assert world_account_id("USD") == world_account_id("USD")
    assert world_account_id("USD") != world_account_id("JPY")


def test_withdrawal_debits_the_wallet_to_world() -> None:
    w = funded(1000)
    t = move(w, None, 400)
    assert (w.posted, w.available) == (600, 600)
    assert (t.kind, t.credit_account_id) == (WITHDRAWAL, str(world_account_id("USD")))


def test_withdrawal_above_available_is_insufficient_funds() -> None:
    w = funded(1000)
    assert_refused(InsufficientFunds, [w], lambda: move(w, None, 1001))
    move(w, None, 1000)
    assert w.posted == 0
    assert_refused(InsufficientFunds, [w], lambda: move(w, None, 1))


def test_transfer_moves_money_between_wallets() -> None:
    a, b = funded(1000), funded(0)
    t = move(a, b, 300)
    assert (a.posted, b.posted) == (700, 300)
    assert (t.kind, t.debit_account_id, t.credit_account_id) == (TRANSFER, str(a.id), str(b.id))
    [debited] = a.pending_events
    [credited] = b.pending_events
    assert isinstance(debited, Wallet.Debited) and isinstance(credited, Wallet.Credited)
    assert (debited.counterparty_id, credited.counterparty_id) == (str(b.id), str(a.id))
    assert debited.amount == credited.amount == 300


def test_transfer_above_available_is_refused_without_touching_either_wallet() -> None:
    a, b = funded(1000), funded(50)
    assert_refused(InsufficientFunds, [a, b], lambda: move(a, b, 1001))


def test_credit_limit_allows_going_negative_down_to_minus_limit() -> None:
    a = open_wallet(limit=500)
    b = funded(0)
    a.collect_events()
    move(a, b, 300)
    assert (a.posted, a.available) == (-300, 200)
    move(a, None, 200)
    assert (a.posted, a.available) == (-500, 0)
    assert_refused(InsufficientFunds, [a, b], lambda: move(a, b, 1))
    deposit(a, 100)
    assert (a.posted, a.available) == (-400, 100)


def test_same_account_is_refused() -> None:
    a = funded(1000)
    err = assert_refused(SameAccount, [a], lambda: move(a, a, 10))
    assert isinstance(err, ValidationError)
    assert_refused(SameAccount, [a], lambda: move(a, a, 10, pending=True))


def test_currency_mismatch_between_wallets() -> None:
    a, j = funded(1000), funded(1000, currency=JPY)
    assert_refused(CurrencyMismatch, [a, j], lambda: move(a, j, 10))
    assert_refused(CurrencyMismatch, [a, j], lambda: move(j, a, 10))
    assert_refused(CurrencyMismatch, [a, j], lambda: move(a, j, 10, pending=True))


def test_currency_mismatch_between_wallet_and_amount() -> None:
    w = funded(1000)
    yen = Money.of(10, JPY)
    assert_refused(CurrencyMismatch, [w], lambda: move(None, w, yen))
    assert_refused(CurrencyMismatch, [w], lambda: move(w, None, yen))
    assert_refused(CurrencyMismatch, [w], lambda: move(w, None, yen, pending=True))
    b = funded(0)
    assert_refused(CurrencyMismatch, [w, b], lambda: move(w, b, yen))


@pytest.mark.parametrize("minor", [0, -1, -500, MAX_AMOUNT + 1])
def test_non_positive_or_huge_amounts_are_invalid(minor: int) -> None:
    a, b = funded(MAX_AMOUNT), funded(0)
    deposit(a, MAX_AMOUNT)  # enough that only the amount itself can be wrong
    amount = usd(minor)
    assert_refused(InvalidAmount, [b], lambda: move(None, b, amount))
    assert_refused(InvalidAmount, [a], lambda: move(a, None, amount))
    assert_refused(InvalidAmount, [a, b], lambda: move(a, b, amount))
    assert_refused(InvalidAmount, [a, b], lambda: move(a, b, amount, pending=True))


def test_a_transfer_needs_a_wallet() -> None:
    with pytest.raises(ValidationError) as info:
        ledger.open_transfer(
            new_id(), kind=TRANSFER, debit=None, credit=None, amount=usd(10), pending=False,
            expires_at=None, merchant_id="acme", metadata={}, ctx=ctx(),
        )  # fmt: skip
    assert type(info.value) is ValidationError


def test_deposit_above_the_balance_bound_overflows() -> None:
    w = open_wallet()
    while MAX_BALANCE - w.posted >= MAX_AMOUNT:
        deposit(w, MAX_AMOUNT)
        w.collect_events()
    deposit(w, MAX_BALANCE - w.posted)
    assert w.posted == MAX_BALANCE
    assert_refused(BalanceOverflow, [w], lambda: deposit(w, 1))
    src = funded(10)
    assert_refused(BalanceOverflow, [src, w], lambda: move(src, w, 1))


# ---- wallet states ----------------------------------------------------------------------------------


def test_frozen_wallet_can_neither_pay_nor_be_paid() -> None:
    a, b = funded(1000), funded(1000)
    a.freeze("fraud check", ctx())
    assert a.status == FROZEN
    assert_refused(WalletFrozen, [a], lambda: deposit(a, 10))
    assert_refused(WalletFrozen, [a], lambda: move(a, None, 10))
    assert_refused(WalletFrozen, [a, b], lambda: move(a, b, 10))
    assert_refused(WalletFrozen, [a, b], lambda: move(b, a, 10))
    assert_refused(WalletFrozen, [a, b], lambda: move(a, b, 10, pending=True))
    a.unfreeze(ctx())
    assert a.status == ACTIVE
    move(a, b, 10)
    assert (a.posted, b.posted) == (990, 1010)


def test_freeze_and_unfreeze_only_from_the_right_state() -> None:
    w = funded(0)
    assert_refused(InvalidWalletState, [w], lambda: w.unfreeze(ctx()))
    w.freeze("x", ctx())
    assert_refused(InvalidWalletState, [w], lambda: w.freeze("again", ctx()))
    w.unfreeze(ctx())
    w.close(ctx())
    assert w.status == CLOSED
    assert_refused(InvalidWalletState, [w], lambda: w.freeze("x", ctx()))
    assert_refused(InvalidWalletState, [w], lambda: w.unfreeze(ctx()))


def test_closed_wallet_is_closed_for_business() -> None:
    w, other = funded(0), funded(100)
    w.close(ctx())
    assert_refused(WalletClosed, [w], lambda: deposit(w, 10))
    assert_refused(WalletClosed, [w, other], lambda: move(other, w, 10))
    assert_refused(WalletClosed, [w], lambda: w.close(ctx()))


def test_a_frozen_empty_wallet_can_be_closed() -> None:
    w = funded(0)
    w.freeze("x", ctx())
    w.close(ctx())
    assert w.status == CLOSED


def test_close_only_at_zero_balance() -> None:
    w = funded(100)
    assert_refused(WalletNotEmpty, [w], lambda: w.close(ctx()))
    move(w, None, 100)
    w.close(ctx())
    assert w.status == CLOSED


def test_close_refused_with_a_negative_balance_or_a_hold() -> None:
    neg = open_wallet(limit=100)
    move(neg, None, 50)
    assert_refused(WalletNotEmpty, [neg], lambda: neg.close(ctx()))

    held = open_wallet(limit=100)
    t = move(held, None, 40, pending=True)
    assert (held.posted, held.pending) == (0, 40)
    assert_refused(WalletNotEmpty, [held], lambda: held.close(ctx()))
    ledger.void_transfer(t, held, ctx())
    held.close(ctx())


# ---- pending (two-phase) transfers -------------------------------------------------------------------


def test_pending_hold_reduces_available_not_posted() -> None:
    a, b = funded(1000), funded(0)
    t = move(a, b, 300, pending=True)
    assert (t.status, t.pending, t.posted_amount) == (PENDING, True, 0)
    assert (a.posted, a.pending, a.available) == (1000, 300, 700)
    assert b.posted == 0
    [hold] = a.pending_events
    assert isinstance(hold, Wallet.HoldPlaced)
    assert (hold.amount, hold.pending_after, hold.transfer_id) == (300, 300, str(t.id))
    assert b.pending_events == []
    assert_refused(InsufficientFunds, [a, b], lambda: move(a, b, 701, pending=True))
    assert_refused(InsufficientFunds, [a], lambda: move(a, None, 701))
    move(a, None, 700, pending=True)
    assert (a.pending, a.available) == (1000, 0)


def test_full_post_captures_the_hold() -> None:
    a, b = funded(1000), funded(0)
    t = move(a, b, 300, pending=True)
    a.collect_events()
    posted = ledger.post_transfer(t, a, b, None, ctx())
    assert posted == usd(300)
    assert (a.posted, a.pending, a.available) == (700, 0, 700)
    assert b.posted == 300
    assert (t.status, t.posted_amount, t.amount) == (POSTED, 300, 300)
    release, debited = a.pending_events
    assert isinstance(release, Wallet.HoldReleased) and release.reason == "posted"
    assert (release.amount, release.pending_after) == (300, 0)
    assert isinstance(debited, Wallet.Debited) and debited.amount == 300
    [posted_event] = t.pending_events[1:]
    assert isinstance(posted_event, Transfer.Posted) and posted_event.amount == 300


def test_partial_post_releases_the_rest() -> None:
    a, b = funded(1000), funded(0)
    t = move(a, b, 300, pending=True)
    ledger.post_transfer(t, a, b, usd(120), ctx())
    assert (a.posted, a.pending, a.available) == (880, 0, 880)
    assert b.posted == 120
    assert (t.status, t.posted_amount, t.amount) == (POSTED, 120, 300)


def test_partial_post_leaves_other_holds_alone() -> None:
    a, b = funded(1000), funded(0)
    t1 = move(a, b, 300, pending=True)
    move(a, b, 200, pending=True)
    ledger.post_transfer(t1, a, b, usd(100), ctx())
    assert (a.posted, a.pending, a.available) == (900, 200, 700)


def test_post_of_a_pending_withdrawal_pays_out_to_world() -> None:
    a = funded(1000)
    t = move(a, None, 250, pending=True)
    assert t.credit_account_id == str(world_account_id("USD"))
    ledger.post_transfer(t, a, None, None, ctx())
    assert (a.posted, a.pending) == (750, 0)


def test_post_above_the_pending_amount_is_refused() -> None:
    a, b = funded(1000), funded(0)
    t = move(a, b, 300, pending=True)
    assert_refused(
        PostExceedsPending, [t, a, b], lambda: ledger.post_transfer(t, a, b, usd(301), ctx())
    )
    ledger.post_transfer(t, a, b, usd(300), ctx())


@pytest.mark.parametrize("minor", [0, -1])
def test_post_of_a_non_positive_amount_is_refused(minor: int) -> None:
    a, b = funded(1000), funded(0)
    t = move(a, b, 300, pending=True)
    assert_refused(
        InvalidAmount, [t, a, b], lambda: ledger.post_transfer(t, a, b, usd(minor), ctx())
    )


def test_post_in_another_currency_is_refused() -> None:
    a, b = funded(1000), funded(0)
    t = move(a, b, 300, pending=True)
    yen = Money.of(100, JPY)
    assert_refused(CurrencyMismatch, [t, a, b], lambda: ledger.post_transfer(t, a, b, yen, ctx()))


def test_post_or_void_of_a_settled_transfer_is_refused() -> None:
    a, b = funded(1000), funded(0)
    immediate = move(a, b, 100)
    assert_refused(
        TransferNotPending,
        [immediate, a, b],
        lambda: ledger.post_transfer(immediate, a, b, None, ctx()),
    )
    assert_refused(
        TransferNotPending, [immediate, a], lambda: ledger.void_transfer(immediate, a, ctx())
    )

    posted = move(a, b, 100, pending=True)
    ledger.post_transfer(posted, a, b, None, ctx())
    assert_refused(
        TransferNotPending, [posted, a, b], lambda: ledger.post_transfer(posted, a, b, None, ctx())
    )
    assert_refused(TransferNotPending, [posted, a], lambda: ledger.void_transfer(posted, a, ctx()))

    voided = move(a, b, 100, pending=True)
    ledger.void_transfer(voided, a, ctx())
    assert voided.status == VOIDED
    assert_refused(
        TransferNotPending, [voided, a, b], lambda: ledger.post_transfer(voided, a, b, None, ctx())
    )
    assert_refused(TransferNotPending, [voided, a], lambda: ledger.void_transfer(voided, a, ctx()))
    assert (a.posted, a.pending, b.posted) == (800, 0, 200)


def test_void_releases_the_hold() -> None:
    a, b = funded(1000), funded(0)
    t = move(a, b, 300, pending=True)
    a.collect_events()
    ledger.void_transfer(t, a, ctx())
    assert (a.posted, a.pending, a.available, b.posted) == (1000, 0, 1000, 0)
    assert t.status == VOIDED and t.posted_amount == 0
    [release] = a.pending_events
    assert isinstance(release, Wallet.HoldReleased) and release.reason == "voided"


def test_post_is_refused_while_a_wallet_is_frozen() -> None:
    a, b = funded(1000), funded(0)
    t = move(a, b, 300, pending=True)
    a.freeze("x", ctx())
    assert_refused(WalletFrozen, [t, a, b], lambda: ledger.post_transfer(t, a, b, None, ctx()))
    a.unfreeze(ctx())
    b.freeze("x", ctx())
    assert_refused(WalletFrozen, [t, a, b], lambda: ledger.post_transfer(t, a, b, None, ctx()))
    b.unfreeze(ctx())
    ledger.post_transfer(t, a, b, None, ctx())


def test_a_pending_transfer_must_debit_a_wallet() -> None:
    w = funded(0)
    assert_refused(ValidationError, [w], lambda: move(None, w, 10, pending=True))


# ---- expiry -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("delta", [timedelta(0), timedelta(microseconds=-1), timedelta(days=-1)])
def test_expiry_must_be_in_the_future(delta: timedelta) -> None:
    a, b = funded(1000), funded(0)
    assert_refused(
        ValidationError, [a, b], lambda: move(a, b, 10, pending=True, expires_at=T0 + delta)
    )


def test_only_a_pending_transfer_can_expire() -> None:
    a, b = funded(1000), funded(0)
    later = T0 + timedelta(hours=1)
    assert_refused(ValidationError, [a, b], lambda: move(a, b, 10, expires_at=later))
    assert_refused(ValidationError, [a], lambda: move(a, None, 10, expires_at=later))


def _pending_with_expiry(seconds: int = 60) -> tuple[Wallet, Wallet, Transfer, datetime]:
    a, b = funded(1000), funded(0)
    expires = T0 + timedelta(seconds=seconds)
    t = move(a, b, 300, pending=True, expires_at=expires)
    assert t.expires_at == expires
    return a, b, t, expires


def test_post_just_before_expiry_succeeds() -> None:
    a, b, t, expires = _pending_with_expiry()
    ledger.post_transfer(t, a, b, None, ctx(now=expires - timedelta(microseconds=1)))
    assert t.status == POSTED and b.posted == 300


def test_void_just_before_expiry_succeeds() -> None:
    a, _, t, expires = _pending_with_expiry()
    ledger.void_transfer(t, a, ctx(now=expires - timedelta(microseconds=1)))
    assert t.status == VOIDED


@pytest.mark.parametrize("after", [timedelta(0), timedelta(microseconds=1), timedelta(days=3)])
def test_post_and_void_at_or_after_expiry_are_refused(after: timedelta) -> None:
    a, b, t, expires = _pending_with_expiry()
    at = ctx(now=expires + after)
    assert t.is_expired_at(expires + after)
    assert_refused(TransferExpired, [t, a, b], lambda: ledger.post_transfer(t, a, b, None, at))
    assert_refused(TransferExpired, [t, a, b], lambda: ledger.post_transfer(t, a, b, usd(1), at))
    assert_refused(TransferExpired, [t, a], lambda: ledger.void_transfer(t, a, at))


def test_expiry_is_decided_by_command_time_not_the_wall_clock() -> None:
    """A transfer from 2001 whose command time is before its expiry is still postable."""
    past = datetime(2001, 1, 1, tzinfo=UTC)
    a, b = funded(1000), funded(0)
    t = move(a, b, 300, pending=True, expires_at=past + timedelta(seconds=60), c=ctx(now=past))
    assert not t.is_expired_at(past + timedelta(seconds=59))
    ledger.post_transfer(t, a, b, usd(100), ctx(now=past + timedelta(seconds=59)))
    assert (t.status, b.posted) == (POSTED, 100)
    # And a far-future expiry counts as expired once the command time reaches it.
    future = datetime(2999, 1, 1, tzinfo=UTC)
    t2 = move(a, b, 100, pending=True, expires_at=future)
    assert_refused(
        TransferExpired, [t2, a, b], lambda: ledger.post_transfer(t2, a, b, None, ctx(now=future))
    )


def test_expire_releases_the_hold_exactly_from_the_expiry_instant() -> None:
    a, b, t, expires = _pending_with_expiry()
    before = ctx(now=expires - timedelta(microseconds=1))
    assert_refused(TransferNotPending, [t, a], lambda: ledger.expire_transfer(t, a, before))
    a.collect_events()
    ledger.expire_transfer(t, a, ctx(now=expires))
    assert t.status == EXPIRED
    assert (a.posted, a.pending, a.available, b.posted) == (1000, 0, 1000, 0)
    [release] = a.pending_events
    assert isinstance(release, Wallet.HoldReleased) and release.reason == "expired"
    # Post and void say "expired" whether or not the sweeper has released the hold yet.
    later = ctx(now=expires + timedelta(hours=1))
    assert_refused(TransferExpired, [t, a, b], lambda: ledger.post_transfer(t, a, b, None, later))
    assert_refused(TransferExpired, [t, a], lambda: ledger.void_transfer(t, a, later))
    assert_refused(TransferNotPending, [t, a], lambda: ledger.expire_transfer(t, a, later))


def test_expire_of_a_transfer_without_timeout_or_not_pending_is_refused() -> None:
    a, b = funded(1000), funded(0)
    forever = move(a, b, 100, pending=True)
    far = ctx(now=datetime(2999, 1, 1, tzinfo=UTC))
    assert_refused(
        TransferNotPending, [forever, a], lambda: ledger.expire_transfer(forever, a, far)
    )
    done = move(a, b, 100)
    assert_refused(TransferNotPending, [done, a], lambda: ledger.expire_transfer(done, a, far))


# ---- events: ids, time, and replay ----------------------------------------------------------------------


def _scenario() -> tuple[Book, list[tuple[CommandContext, list[Any]]]]:
    """One of every command, each with its own context; returns the log and, per command,
    the context and the events it produced."""
    book = Book()
    produced: list[tuple[CommandContext, list[Any]]] = []
    step = itertools.count()

    def run(action: Callable[[CommandContext], Iterable[Aggregate | None]]) -> None:
        i = next(step)
        c = ctx(now=T0 + timedelta(seconds=i), corr=f"corr-{i}", cause=f"cause-{i}")
        aggs = list(action(c))
        before = len(book.events)
        book.save(*aggs)
        produced.append((c, book.events[before:]))

    holder: dict[str, Any] = {}

    def open_(name: str, limit: int = 0) -> Callable[[CommandContext], Iterable[Aggregate]]:
        def act(c: CommandContext) -> Iterable[Aggregate]:
            holder[name] = Wallet.open(new_id(), "acme", USD, limit, {}, c)
            return [holder[name]]

        return act

    def tx(name: str, d: str | None, cr: str | None, amount: int, **kw: Any):  # type: ignore[no-untyped-def]
        def act(c: CommandContext) -> Iterable[Aggregate | None]:
            debit, credit = holder.get(d or ""), holder.get(cr or "")
            holder[name] = move(debit, credit, amount, c=c, **kw)
            return [debit, credit, holder[name]]

        return act

    def then(
        names: list[str], effect: Callable[[CommandContext], object]
    ) -> Callable[[CommandContext], Iterable[Aggregate]]:
        """Run ``effect``; the command touched the aggregates called ``names``."""

        def act(c: CommandContext) -> Iterable[Aggregate]:
            effect(c)
            return [holder[n] for n in names]

        return act

    h = holder
    run(open_("a"))
    run(open_("b", limit=1000))
    run(tx("d1", None, "a", 5000))
    run(tx("t1", "a", "b", 1200))
    run(tx("w1", "b", None, 1700))  # b goes to -500 on its credit limit
    run(tx("p1", "a", "b", 800, pending=True, expires_at=T0 + timedelta(days=1)))
    run(
        then(["a", "b", "p1"], lambda c: ledger.post_transfer(h["p1"], h["a"], h["b"], usd(300), c))
    )
    run(tx("p2", "a", None, 400, pending=True))
    run(then(["a", "p2"], lambda c: ledger.void_transfer(h["p2"], h["a"], c)))
    run(tx("p3", "a", "b", 100, pending=True, expires_at=T0 + timedelta(seconds=10)))
    run(then(["p3", "a"], lambda c: ledger.expire_transfer(h["p3"], h["a"], c)))
    run(tx("p4", "a", None, 250, pending=True))
    run(then(["a", "p4"], lambda c: ledger.post_transfer(h["p4"], h["a"], None, None, c)))
    run(then(["b"], lambda c: h["b"].freeze("check", c)))
    run(then(["b"], lambda c: h["b"].unfreeze(c)))
    run(open_("c"))
    run(then(["c"], lambda c: h["c"].close(c)))
    book.holder = holder  # type: ignore[attr-defined]
    return book, produced


def test_every_event_carries_its_commands_ids_and_time() -> None:
    book, produced = _scenario()
    assert sum(len(events) for _, events in produced) == len(book.events) > 20
    for c, events in produced:
        assert events, "every command of the scenario writes events"
        for e in events:
            assert e.correlation_id == c.correlation_id, e
            assert e.causation_id == c.causation_id, e
            assert e.timestamp == c.now, e


def test_replaying_the_events_gives_the_same_state() -> None:
    book, _ = _scenario()
    holder = book.holder  # type: ignore[attr-defined]
    rebuilt = book.replay()
    live = {v.id: v for v in holder.values()}
    assert set(rebuilt) == set(live)
    for agg_id, agg in live.items():
        again = rebuilt[agg_id]
        assert type(again) is type(agg)
        assert state(again) == state(agg)
        assert again.pending_events == []
    a, b = holder["a"], holder["b"]
    assert (a.posted, a.pending) == (5000 - 1200 - 300 - 250, 0)
    assert (b.posted, b.pending, b.available) == (1200 - 1700 + 300, 0, 1200 - 1700 + 300 + 1000)
    assert holder["c"].status == CLOSED


def test_replay_of_each_aggregate_event_by_event() -> None:
    """``type(agg)`` is rebuilt by mutate(None) for the first event, then mutate(agg)."""
    book, _ = _scenario()
    by_agg: dict[UUID, list[Any]] = defaultdict(list)
    for e in book.events:
        by_agg[e.originator_id].append(e)
    for agg_id, events in by_agg.items():
        agg = events[0].mutate(None)
        assert agg is not None and agg.id == agg_id and agg.version == 1
        for e in events[1:]:
            agg = e.mutate(agg)
        assert agg.version == len(events)
        original = next(v for v in book.holder.values() if v.id == agg_id)  # type: ignore[attr-defined]
        assert state(agg) == state(original)


# ---- the audit Replayer --------------------------------------------------------------------------------


def test_replayer_passes_a_valid_history() -> None:
    book, _ = _scenario()
    replayer = book.audit()
    assert replayer.violations == []
    holder = book.holder  # type: ignore[attr-defined]
    assert replayer.events == len(book.events)
    # world: -5000 deposited, +1700 and +250 withdrawn
    assert replayer.world["USD"] == -5000 + 1700 + 250
    assert sum(w.posted for w in replayer.wallets.values()) + replayer.world["USD"] == 0
    assert replayer.wallets[str(holder["b"].id)].posted == holder["b"].posted


def _messages(replayer: Replayer) -> str:
    return "\n".join(str(v) for v in replayer.violations)


def test_replayer_finds_a_wrong_posted_after() -> None:
    book, _ = _scenario()
    i = next(i for i, e in enumerate(book.events) if isinstance(e, Wallet.Debited))
    book.events[i] = dataclasses.replace(
        book.events[i], posted_after=book.events[i].posted_after + 1
    )
    replayer = book.audit()
    assert "posted_after does not equal balance plus amount" in _messages(replayer)
    assert str(book.events[i].originator_id) in _messages(replayer)


def test_replayer_finds_a_debit_below_available() -> None:
    book = Book()
    w = funded(100, book)
    # Skip the guard: a debit of 500 from a wallet holding 100 (and no credit limit).
    tid = new_id()
    w.debit(str(tid), usd(500), str(world_account_id("USD")), WITHDRAWAL, ctx())
    t = Transfer.create(
        tid, merchant_id="acme", kind=WITHDRAWAL, debit_account_id=str(w.id),
        credit_account_id=str(world_account_id("USD")), amount=usd(500), pending=False,
        expires_at=None, metadata={}, ctx=ctx(),
    )  # fmt: skip
    book.save(w, t)
    replayer = book.audit()
    assert "available balance went below zero (-400)" in _messages(replayer)
    # The entry itself balances and the currency sums to zero: only the limit is broken.
    assert len(replayer.violations) == 1, _messages(replayer)


def test_replayer_finds_a_hold_beyond_available() -> None:
    book = Book()
    w = funded(100, book)
    tid = new_id()
    w.place_hold(str(tid), usd(150), ctx())
    t = Transfer.create(
        tid, merchant_id="acme", kind=WITHDRAWAL, debit_account_id=str(w.id),
        credit_account_id=str(world_account_id("USD")), amount=usd(150), pending=True,
        expires_at=None, metadata={}, ctx=ctx(),
    )  # fmt: skip
    book.save(w, t)
    assert "available balance went below zero (-50)" in _messages(book.audit())


def test_replayer_finds_an_unbalanced_entry() -> None:
    book = Book()
    a, b = funded(100, book), funded(0, book)
    t = move(a, b, 40, book=book)
    # A second credit of the same transfer: money created from nowhere.
    b.credit(str(t.id), usd(40), str(a.id), TRANSFER, ctx())
    book.save(b)
    messages = _messages(book.audit())
    assert "journal entry unbalanced" in messages
    assert "not zero" in messages


def test_replayer_finds_a_posting_without_a_transfer() -> None:
    book = Book()
    a = funded(0, book)
    a.credit(str(new_id()), usd(10), str(world_account_id("USD")), DEPOSIT, ctx())
    book.save(a)
    assert "wallet posting without a transfer" in _messages(book.audit())


def test_replayer_finds_a_hold_without_a_pending_transfer() -> None:
    book = Book()
    a = funded(100, book)
    a.place_hold(str(new_id()), usd(10), ctx())
    book.save(a)
    assert "differs from its pending transfers" in _messages(book.audit())


def test_replayer_finds_a_missing_event() -> None:
    book, _ = _scenario()
    a_id = book.holder["a"].id  # type: ignore[attr-defined]
    i = [i for i, e in enumerate(book.events) if e.originator_id == a_id][2]
    gone = book.events.pop(i)
    v = gone.originator_version
    messages = _messages(book.audit())  # reported, not raised
    assert f"{a_id}: version {v + 1}, expected {v}" in messages


def test_replayer_finds_a_duplicated_event() -> None:
    book, _ = _scenario()
    i = next(i for i, e in enumerate(book.events) if isinstance(e, Wallet.Credited))
    book.events.insert(i + 1, book.events[i])
    v = book.events[i].originator_version
    messages = _messages(book.audit())
    assert f"version {v}, expected {v + 1}" in messages
    assert "posted_after does not equal balance plus amount" in messages


# ---- property: random operations in memory keep every invariant -------------------------------------------


class InMemoryLedger(RuleBasedStateMachine):
    """Random open / deposit / withdraw / transfer / pending / post / void / expire /
    freeze / unfreeze / close / clock steps, straight on the domain."""

    wallets = Bundle("wallets")
    transfers = Bundle("transfers")

    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.steps = 0
        self.book = Book()
        self.all_wallets: dict[str, Wallet] = {}
        self.all_transfers: dict[str, Transfer] = {}
        self.world: dict[str, int] = defaultdict(int)

    def ctx(self) -> CommandContext:
        self.steps += 1
        return ctx(now=self.now, corr=f"c{self.steps}", cause=f"k{self.steps}")

    def attempt(self, aggs: list[Aggregate | None], action: Callable[[], Any]) -> Any:
        """Run ``action``; on a guard failure nothing may have changed."""
        touched = [a for a in aggs if a is not None]
        assert all(not a.pending_events for a in touched)
        before = [state(a) for a in touched]
        try:
            result = action()
        except LedgerError as exc:
            event(f"refused: {exc.code}")
            for a, snapshot in zip(touched, before, strict=True):
                assert a.pending_events == []
                assert state(a) == snapshot
            return None
        event("applied")
        extra = [result] if isinstance(result, Aggregate) else []
        self.book.save(*touched, *extra)
        return result if result is not None else True

    def wallet_of(self, account_id: str) -> Wallet | None:
        return self.all_wallets.get(account_id)

    @initialize(target=wallets)
    def first_wallet(self) -> Wallet:
        return self.open(USD, 0)

    @rule(
        target=wallets,
        currency=st.sampled_from([USD, JPY]),
        limit=st.sampled_from([0, 0, 300, 5000]),
    )
    def open(self, currency: Currency, limit: int) -> Wallet:
        w = Wallet.open(new_id(), "acme", currency, limit, {}, self.ctx())
        self.book.save(w)
        self.all_wallets[str(w.id)] = w
        return w

    def _record(self, t: Transfer | None) -> Transfer | None:
        if t is not None:
            self.all_transfers[str(t.id)] = t
        return t

    @rule(target=transfers, w=wallets, amount=st.integers(-5, 20_000))
    def deposit(self, w: Wallet, amount: int) -> Any:
        money = Money.of(amount, w.currency)
        c = self.ctx()
        t = self.attempt([w], lambda: move(None, w, money, c=c))
        if t is not None:
            self.world[w.currency] -= amount
        return self._record(t) or multiple()

    @rule(
        target=transfers,
        w=wallets,
        amount=st.integers(-5, 20_000),
        pending=st.booleans(),
        timeout=st.none() | st.integers(-10, 600),
        wrong_currency=st.booleans(),
    )
    def withdraw(
        self, w: Wallet, amount: int, pending: bool, timeout: int | None, wrong_currency: bool
    ) -> Any:
        cur = (JPY if w.currency == "USD" else USD) if wrong_currency else Currency.of(w.currency)
        money = Money.of(amount, cur)
        expires = None if timeout is None else self.now + timedelta(seconds=timeout)
        c = self.ctx()
        t = self.attempt(
            [w], lambda: move(w, None, money, pending=pending, expires_at=expires, c=c)
        )
        if t is not None and not pending:
            self.world[w.currency] += amount
        return self._record(t) or multiple()

    @rule(
        target=transfers,
        a=wallets,
        b=wallets,
        amount=st.integers(-5, 20_000),
        pending=st.booleans(),
        timeout=st.none() | st.integers(-10, 600),
    )
    def transfer(
        self, a: Wallet, b: Wallet, amount: int, pending: bool, timeout: int | None
    ) -> Any:
        money = Money.of(amount, a.currency)
        expires = None if timeout is None else self.now + timedelta(seconds=timeout)
        c = self.ctx()
        t = self.attempt(
            [a, b], lambda: move(a, b, money, pending=pending, expires_at=expires, c=c)
        )
        return self._record(t) or multiple()

    @rule(t=transfers, partial=st.none() | st.integers(-1, 25_000))
    def post(self, t: Transfer, partial: int | None) -> None:
        debit = self.wallet_of(t.debit_account_id)
        credit = self.wallet_of(t.credit_account_id)
        if debit is None:
            return  # a deposit: it has no hold to post
        amount = None if partial is None else Money.of(partial, t.currency)
        c = self.ctx()
        posted = self.attempt(
            [t, debit, credit], lambda: ledger.post_transfer(t, debit, credit, amount, c)
        )
        if posted is not None and credit is None:
            self.world[t.currency] += posted.minor

    @rule(t=transfers)
    def void(self, t: Transfer) -> None:
        debit = self.wallet_of(t.debit_account_id)
        if debit is not None:
            c = self.ctx()
            self.attempt([t, debit], lambda: ledger.void_transfer(t, debit, c))

    @rule(t=transfers)
    def expire(self, t: Transfer) -> None:
        debit = self.wallet_of(t.debit_account_id)
        if debit is not None:
            c = self.ctx()
            self.attempt([t, debit], lambda: ledger.expire_transfer(t, debit, c))

    @rule(w=wallets)
    def freeze(self, w: Wallet) -> None:
        c = self.ctx()
        self.attempt([w], lambda: w.freeze("test", c))

    @rule(w=wallets)
    def unfreeze(self, w: Wallet) -> None:
        c = self.ctx()
        self.attempt([w], lambda: w.unfreeze(c))

    @rule(w=wallets)
    def close(self, w: Wallet) -> None:
        c = self.ctx()
        self.attempt([w], lambda: w.close(c))

    @rule(seconds=st.integers(0, 400))
    def tick(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    # ---- invariants ----

    @invariant()
    def money_is_conserved_per_currency(self) -> None:
        totals: dict[str, int] = defaultdict(int)
        for w in self.all_wallets.values():
            totals[w.currency] += w.posted
        for currency in set(totals) | set(self.world):
            assert totals[currency] + self.world[currency] == 0, (
                currency,
                totals,
                dict(self.world),
            )

    @invariant()
    def available_never_negative(self) -> None:
        for w in self.all_wallets.values():
            assert w.available >= 0, (w.id, w.posted, w.pending, w.credit_limit)
            assert w.pending >= 0
            assert w.posted >= -w.credit_limit

    @invariant()
    def pending_is_the_sum_of_pending_transfers(self) -> None:
        held: dict[str, int] = defaultdict(int)
        for t in self.all_transfers.values():
            if t.status == PENDING:
                held[t.debit_account_id] += t.amount
        for wid, w in self.all_wallets.items():
            assert w.pending == held[wid], (wid, w.pending, held[wid])

    @invariant()
    def closed_wallets_are_empty(self) -> None:
        for w in self.all_wallets.values():
            if w.status == CLOSED:
                assert (w.posted, w.pending) == (0, 0)

    @invariant()
    def events_replay_to_the_live_state_and_pass_the_audit(self) -> None:
        rebuilt = self.book.replay()
        live: dict[UUID, Aggregate] = {w.id: w for w in self.all_wallets.values()}
        live.update({t.id: t for t in self.all_transfers.values()})
        assert set(rebuilt) == set(live)
        for agg_id, agg in live.items():
            assert state(rebuilt[agg_id]) == state(agg)
        replayer = self.book.audit()
        assert replayer.violations == [], _messages(replayer)
        for currency, world in self.world.items():
            assert replayer.world[currency] == world


TestInMemoryLedger = InMemoryLedger.TestCase
TestInMemoryLedger.settings = settings(max_examples=100, stateful_step_count=50)  # cheap: no I/O

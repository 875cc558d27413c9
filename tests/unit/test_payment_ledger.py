"""Payments and pay-outs in the ledger, through the real command handlers on an in-memory
store: every posting balances, money is conserved, and the audit finds each captured,
refunded, disputed and paid-out amount in the ledger exactly once."""

from __future__ import annotations

import copy
import os
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from commands.dispatch import handle
from commands.handlers import UnitOfWork
from commands.model import (
    AcceptDispute,
    ApplyPayoutUpdate,
    ApplyProviderUpdate,
    CreatePayment,
    CreatePayout,
    Deposit,
    ExpireAuthorization,
    FailPaymentOperation,
    OpenWallet,
    RequestPaymentOperation,
    StartPaymentAttempt,
)
from domain.audit import Replayer
from domain.context import CommandContext
from domain.errors import LedgerError, NotFound
from domain.money import Currency, Money
from domain.payment import Payment, ProviderUpdate
from domain.payment_ledger import CLEARING, DISPUTES, FEES, system_account_id
from domain.principal import Principal

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SYSTEM = Principal("system", "admin")
ACME = Principal("acme", "merchant")


class Ledger:
    """The engine's unit of work over a dict: a failed command leaves nothing behind."""

    def __init__(self) -> None:
        self.aggregates: dict[UUID, Any] = {}
        self.events: list[Any] = []
        self.now = T0
        self.seq = 0

    def _load(self, aggregate_id: UUID) -> Any:
        agg = self.aggregates.get(aggregate_id)
        if agg is None:
            raise NotFound(f"{aggregate_id} not found")
        return copy.deepcopy(agg)

    def run(self, command: Any, principal: Principal = SYSTEM) -> tuple[int, dict[str, Any]]:
        self.seq += 1
        ctx = CommandContext(self.now, f"corr-{self.seq}", f"cause-{self.seq}")
        uow = UnitOfWork(self._load, principal, ctx, f"seed-{self.seq}")
        status, body = handle(command, uow)
        for agg in uow.touched():
            self.events.extend(agg.collect_events())
            self.aggregates[agg.id] = agg
        return status, body

    def audit(self) -> Replayer:
        replayer = Replayer()
        for position, event in enumerate(self.events, start=1):
            replayer.apply(event, position)
        replayer.finish()
        return replayer

    def posted(self, wallet_id: UUID) -> int:
        wallet = self.aggregates.get(wallet_id)
        return wallet.posted if wallet is not None else 0

    def payment(self, payment_id: UUID) -> Payment:
        p = self.aggregates[payment_id]
        assert isinstance(p, Payment)
        return p


def usd(text: str) -> Money:
    return Money.parse(text, "USD")


def setup_merchant(ledger: Ledger, funds: str = "0") -> UUID:
    _, body = ledger.run(OpenWallet("acme", Currency.of("USD")), ACME)
    wallet_id = UUID(body["wallet"]["id"])
    if funds != "0":
        ledger.run(Deposit(wallet_id, usd(funds)), ACME)
    return wallet_id


def new_payment(
    ledger: Ledger, wallet_id: UUID, amount: str = "100.00", capture: str = "manual"
) -> UUID:
    payment_id = uuid4()
    ledger.run(
        CreatePayment(payment_id, wallet_id, usd(amount), "card", "tok_zenith_1", capture, "fp"),
        ACME,
    )
    ledger.run(StartPaymentAttempt(payment_id, "zenith"))
    return payment_id


def provider(ledger: Ledger, payment_id: UUID, status: str, event: str, **kw: Any) -> str:
    _, body = ledger.run(
        ApplyProviderUpdate(payment_id, ProviderUpdate(status, provider_event_id=event, **kw))
    )
    return str(body["update_outcome"])


def clearing() -> UUID:
    return system_account_id(CLEARING, "USD", "zenith")


def test_a_capture_credits_the_merchant_net_of_fees_through_clearing() -> None:
    ledger = Ledger()
    wallet = setup_merchant(ledger)
    pid = new_payment(ledger, wallet, "100.00", capture="automatic")
    assert provider(ledger, pid, "captured", "e1", fee=320, provider_ref="pz_1") == "applied"
    assert ledger.posted(wallet) == 9_680
    assert ledger.posted(system_account_id(FEES, "USD")) == 320
    assert ledger.posted(clearing()) == -10_000
    # A duplicate webhook posts nothing more.
    assert provider(ledger, pid, "captured", "e1", fee=320) == "duplicate"
    assert ledger.posted(wallet) == 9_680
    assert ledger.audit().violations == []


def test_a_refund_is_held_from_the_request_and_posted_or_released_by_the_answer() -> None:
    ledger = Ledger()
    wallet = setup_merchant(ledger)
    pid = new_payment(ledger, wallet, "100.00", capture="automatic")
    provider(ledger, pid, "captured", "e1", fee=0)
    ledger.run(RequestPaymentOperation(pid, "refund", "r1", "fp", "30.00"), ACME)
    merchant = ledger.aggregates[wallet]
    assert (merchant.posted, merchant.pending) == (10_000, 3_000)
    # The merchant cannot spend what is being refunded...
    ledger.run(RequestPaymentOperation(pid, "refund", "r2", "fp", "50.00"), ACME)
    assert ledger.aggregates[wallet].available == 2_000
    # ...the provider refuses r2 (released) and does r1 (posted).
    ledger.run(FailPaymentOperation(pid, "r2", "processing_error", "refused"))
    assert provider(ledger, pid, "refunded", "e2", refund_id="r1", amount=3_000) == "applied"
    merchant = ledger.aggregates[wallet]
    assert (merchant.posted, merchant.pending) == (7_000, 0)
    assert ledger.posted(clearing()) == -7_000
    assert ledger.payment(pid).refunded_amount == 3_000
    assert ledger.audit().violations == []


def test_a_refund_over_the_merchants_balance_is_refused_but_a_provider_refund_is_recorded() -> None:
    ledger = Ledger()
    wallet = setup_merchant(ledger)
    pid = new_payment(ledger, wallet, "100.00", capture="automatic")
    provider(ledger, pid, "captured", "e1", fee=0)
    ledger.run(
        CreatePayout(
            uuid4(),
            wallet,
            usd("90.00"),
            "zenith",
            {"account_number": "0123456789", "bank_code": "011"},
            "fp",
        ),
        ACME,
    )
    with pytest.raises(LedgerError) as info:
        ledger.run(RequestPaymentOperation(pid, "refund", "r1", "fp", "50.00"), ACME)
    assert info.value.code == "insufficient-funds"
    # The provider refunded on its own (a dashboard refund): it happened, it is recorded.
    assert provider(ledger, pid, "refunded", "e2", refund_id="dash-1", amount=5_000) == "applied"
    assert ledger.aggregates[wallet].available == -4_000
    assert ledger.audit().violations == []


def test_a_dispute_takes_the_amount_until_it_is_won_or_lost() -> None:
    ledger = Ledger()
    wallet = setup_merchant(ledger)
    won = new_payment(ledger, wallet, "100.00", capture="automatic")
    provider(ledger, won, "captured", "e1")
    lost = new_payment(ledger, wallet, "40.00", capture="automatic")
    provider(ledger, lost, "captured", "e2")
    assert provider(ledger, won, "dispute_opened", "d1", dispute_id="dp1") == "applied"
    assert (
        provider(ledger, lost, "dispute_opened", "d2", dispute_id="dp2", amount=1_000) == "applied"
    )
    assert ledger.posted(wallet) == 14_000 - 11_000
    assert ledger.posted(system_account_id(DISPUTES, "USD")) == 11_000
    assert provider(ledger, won, "dispute_won", "d3") == "applied"
    ledger.run(AcceptDispute(lost), ACME)
    assert ledger.posted(wallet) == 13_000
    assert ledger.posted(system_account_id(DISPUTES, "USD")) == 0
    assert ledger.posted(clearing()) == -13_000
    assert ledger.audit().violations == []


def test_a_payout_is_held_then_posted_with_its_fee_or_released() -> None:
    ledger = Ledger()
    wallet = setup_merchant(ledger, "500.00")
    dest = {"account_number": "0123456789", "bank_code": "011"}
    paid, failed = uuid4(), uuid4()
    ledger.run(CreatePayout(paid, wallet, usd("100.00"), "zenith", dest, "fp"), ACME)
    ledger.run(CreatePayout(failed, wallet, usd("50.00"), "zenith", dest, "fp"), ACME)
    assert ledger.aggregates[wallet].pending == 15_000
    ledger.run(ApplyPayoutUpdate(paid, "paid", fee=25, provider_event_id="p1"))
    ledger.run(ApplyPayoutUpdate(failed, "failed", reason="account_closed"))
    _, again = ledger.run(ApplyPayoutUpdate(paid, "failed", provider_event_id="p2"))
    assert again["applied"] is False  # settled: a late contrary update changes nothing
    merchant = ledger.aggregates[wallet]
    assert (merchant.posted, merchant.pending) == (50_000 - 10_000 - 25, 0)
    assert ledger.audit().violations == []


def test_a_card_number_never_reaches_the_ledger() -> None:
    ledger = Ledger()
    wallet = setup_merchant(ledger)
    with pytest.raises(LedgerError) as info:
        ledger.run(
            CreatePayment(uuid4(), wallet, usd("1.00"), "card", "4242424242424242", "manual", "fp"),
            ACME,
        )
    assert info.value.code == "card-number-rejected"
    assert not any(isinstance(e, Payment.Created) for e in ledger.events)


def test_an_expired_authorization_moves_no_money() -> None:
    ledger = Ledger()
    wallet = setup_merchant(ledger)
    pid = new_payment(ledger, wallet)
    provider(ledger, pid, "authorized", "a1", authorization_expires_at=T0 + timedelta(minutes=5))
    ledger.now = T0 + timedelta(minutes=5)
    ledger.run(ExpireAuthorization(pid))
    assert ledger.payment(pid).status == "canceled"
    assert ledger.posted(wallet) == 0
    with pytest.raises(LedgerError) as info:
        ledger.run(RequestPaymentOperation(pid, "capture", "c1", "fp"), ACME)
    assert info.value.code == "authorization-expired"


# ---- random sequences: money conserved, the audit finds everything exactly once ----------------

AMOUNTS = st.integers(min_value=1, max_value=50_000)
NEXT = {
    "created": ["authorized", "captured"],
    "processing": ["authorized", "captured", "failed"],
    "authorized": ["captured", "canceled"],
    "captured": ["dispute_opened", "refunded"],
    "partially_refunded": ["dispute_opened", "refunded"],
    "disputed": ["dispute_won", "dispute_lost", "refunded"],
}


class PaymentsInTheLedger(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger()
        self.wallet = setup_merchant(self.ledger, "100.00")
        self.payments: list[UUID] = []
        self.payouts: list[UUID] = []
        self.n = 0

    def _try(self, command: Any, principal: Principal = SYSTEM) -> None:
        events = len(self.ledger.events)
        try:
            self.ledger.run(command, principal)
        except LedgerError:
            assert len(self.ledger.events) == events  # a refused command writes nothing

    def _event(self) -> str:
        self.n += 1
        return f"evt-{self.n}"

    @precondition(lambda self: len(self.payments) < 4)  # few payments, deep histories
    @rule(amount=AMOUNTS, manual=st.booleans())
    def pay(self, amount: int, manual: bool) -> None:
        pid = uuid4()
        self._try(
            CreatePayment(
                pid,
                self.wallet,
                Money.of(amount, "USD"),
                "card",
                "tok",
                "manual" if manual else "automatic",
                "fp",
            ),
            ACME,
        )
        self._try(StartPaymentAttempt(pid, "zenith"))
        self.payments.append(pid)

    @precondition(lambda self: self.payments)
    @rule(
        data=st.data(),
        status=st.sampled_from(
            [
                "authorized",
                "captured",
                "failed",
                "canceled",
                "dispute_opened",
                "dispute_won",
                "dispute_lost",
                "refunded",
            ]
        ),
        fee=st.integers(min_value=0, max_value=500),
        part=st.integers(min_value=1, max_value=100),
        duplicate=st.booleans(),
    )
    def provider_says(
        self, data: st.DataObject, status: str, fee: int, part: int, duplicate: bool
    ) -> None:
        pid = data.draw(st.sampled_from(self.payments))
        p = self.ledger.aggregates.get(pid)
        if p is None:
            return
        if data.draw(st.integers(0, 3)):  # mostly what could come next, sometimes anything
            status = data.draw(st.sampled_from(NEXT.get(p.status, [status])))
        kw: dict[str, Any] = {}
        if status == "captured":
            kw = {"fee": min(fee, p.amount)}
        if status == "refunded":
            ops = [op for op in p.operations.values() if op.kind == "refund"]
            if ops and data.draw(st.booleans()):
                kw = {"refund_id": ops[0].operation_id, "amount": ops[0].amount}
            else:
                kw = {
                    "refund_id": f"dash-{self.n}",
                    "amount": max(1, p.captured_amount * part // 100),
                }
        if status == "dispute_opened":
            kw = {"amount": max(1, (p.captured_amount - p.refunded_amount) * part // 100)}
        event = self._event()
        self._try(ApplyProviderUpdate(pid, ProviderUpdate(status, provider_event_id=event, **kw)))
        if duplicate:
            self._try(
                ApplyProviderUpdate(pid, ProviderUpdate(status, provider_event_id=event, **kw))
            )

    @precondition(lambda self: self.payments)
    @rule(
        data=st.data(),
        kind=st.sampled_from(["capture", "cancel", "refund"]),
        part=st.integers(1, 100),
    )
    def merchant_asks(self, data: st.DataObject, kind: str, part: int) -> None:
        pid = data.draw(st.sampled_from(self.payments))
        p = self.ledger.aggregates.get(pid)
        if p is None:
            return
        base = p.authorized_amount if kind == "capture" else p.captured_amount
        amount = Money.of(max(1, base * part // 100), "USD").format() if kind != "cancel" else None
        self._try(RequestPaymentOperation(pid, kind, f"op-{self._event()}", "fp", amount), ACME)

    @precondition(lambda self: self.payments)
    @rule(data=st.data(), refuse=st.booleans())
    def provider_answers_an_operation(self, data: st.DataObject, refuse: bool) -> None:
        pid = data.draw(st.sampled_from(self.payments))
        p = self.ledger.aggregates.get(pid)
        if p is None or not p.operations:
            return
        op = next(iter(p.operations.values()))
        if refuse:
            self._try(FailPaymentOperation(pid, op.operation_id, "refused", "no"))
            return
        status = {"capture": "captured", "void": "canceled", "refund": "refunded"}[op.kind]
        kw: dict[str, Any] = {"amount": op.amount} if op.kind != "void" else {}
        if op.kind == "refund":
            kw["refund_id"] = op.operation_id
        self._try(
            ApplyProviderUpdate(pid, ProviderUpdate(status, provider_event_id=self._event(), **kw))
        )

    @precondition(lambda self: self.payments)
    @rule(data=st.data())
    def merchant_accepts_a_dispute(self, data: st.DataObject) -> None:
        self._try(AcceptDispute(data.draw(st.sampled_from(self.payments))), ACME)

    @rule(amount=AMOUNTS)
    def pay_out(self, amount: int) -> None:
        pid = uuid4()
        dest = {"account_number": "0123456789", "bank_code": "011"}
        self._try(
            CreatePayout(pid, self.wallet, Money.of(amount, "USD"), "zenith", dest, "fp"), ACME
        )
        if pid in self.ledger.aggregates:
            self.payouts.append(pid)

    @precondition(lambda self: self.payouts)
    @rule(data=st.data(), paid=st.booleans(), fee=st.integers(0, 100))
    def payout_settles(self, data: st.DataObject, paid: bool, fee: int) -> None:
        pid = data.draw(st.sampled_from(self.payouts))
        self._try(
            ApplyPayoutUpdate(
                pid, "paid" if paid else "failed", fee=fee, provider_event_id=self._event()
            )
        )

    @invariant()
    def the_audit_passes_and_money_is_conserved(self) -> None:
        replayer = self.ledger.audit()
        assert replayer.violations == [], [str(v) for v in replayer.violations[:5]]
        total = sum(w.posted for w in replayer.wallets.values()) + replayer.world["USD"]
        assert total == 0


TestPaymentsInTheLedger = PaymentsInTheLedger.TestCase
TestPaymentsInTheLedger.settings = settings(
    max_examples=80 if os.environ.get("CI") else 40, stateful_step_count=60, deadline=None
)

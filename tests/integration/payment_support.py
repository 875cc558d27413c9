"""Payments and pay-outs made through the domain and saved through the application's event
store, with their ledger postings (``domain.payment_ledger``), for the payment projection
and GraphQL tests (not a test module)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from domain.context import CommandContext
from domain.money import Currency, Money
from domain.payment import Payment, ProviderUpdate
from domain.payment_ledger import (
    CLEARING,
    DISPUTES,
    FEES,
    PLATFORM,
    Accounts,
    entry_id,
    hold_payout,
    post_payment_events,
    settle_payout,
    system_account_id,
    system_credit_limit,
)
from domain.payout import Payout
from domain.transfer import Transfer
from domain.wallet import Wallet

PROVIDER = "zenith"


def ctx(now: datetime | None = None) -> CommandContext:
    return CommandContext(
        now=now or datetime.now(UTC),
        correlation_id=f"corr-{uuid.uuid4().hex[:8]}",
        causation_id=f"cause-{uuid.uuid4().hex[:8]}",
    )


class Books:
    """One merchant's wallet and the platform accounts of one provider and currency."""

    def __init__(self, app: Any, merchant: str = "acme", share: Books | None = None) -> None:
        """``share``: another merchant's books, whose platform accounts these use too (one
        in-memory copy of each, so their versions never clash)."""
        self.app = app
        self.currency = Currency.of("USD")
        c = ctx()
        self.merchant_id = merchant
        self.merchant = Wallet.open(uuid.uuid4(), merchant, self.currency, 0, {}, c)
        self.accounts = Accounts(
            merchant=self.merchant,
            clearing=share.accounts.clearing if share else self._system(CLEARING, PROVIDER, c),
            fees=share.accounts.fees if share else self._system(FEES, "", c),
            disputes=share.accounts.disputes if share else self._system(DISPUTES, "", c),
        )
        self.transfers: dict[UUID, Transfer] = {}
        self.app.save(*self._wallets())

    def _system(self, role: str, provider: str, c: CommandContext) -> Wallet:
        wid = system_account_id(role, self.currency.code, provider)
        return Wallet.open(
            wid, PLATFORM, self.currency, system_credit_limit(role), {"system": role}, c
        )

    def _wallets(self) -> list[Wallet]:
        a = self.accounts
        return [a.merchant, a.clearing, a.fees, a.disputes]

    def money(self, amount: str) -> Money:
        return Money.parse(amount, self.currency)

    def new_payment(self, amount: str = "100.00", **kw: Any) -> Payment:
        values: dict[str, Any] = {
            "merchant_id": self.merchant_id,
            "amount": self.money(amount),
            "method": "card",
            "wallet_id": str(self.merchant.id),
            "payment_method_token": "tok_visa",
            "capture_method": "automatic",
            "metadata": {"order": "o-1"},
        }
        values.update(kw)
        payment = Payment.create(uuid.uuid4(), ctx=ctx(), **values)
        self.app.save(payment)
        return payment

    def step(
        self, payment: Payment, change: Callable[[CommandContext], Any], now: datetime | None = None
    ) -> Any:
        """Run ``change`` on ``payment`` and save its events with their postings in one go."""
        c = ctx(now)
        answer = change(c)
        events = list(payment.collect_events())
        # collect_events emptied the pending list; the postings need the events only.
        touched = post_payment_events(payment, events, self.accounts, self.transfers.get, c)
        for transfer in touched:
            self.transfers[transfer.id] = transfer
        self.app.events.put(
            [
                *events,
                *(e for t in touched for e in t.collect_events()),
                *(e for w in self._wallets() for e in w.collect_events()),
            ]
        )
        return answer

    def update(self, payment: Payment, status: str, **kw: Any) -> bool:
        update = ProviderUpdate(status, **kw)
        return bool(self.step(payment, lambda c: payment.apply_provider_update(update, c)))

    def call(
        self, payment: Payment, operation: str, outcome: str, latency_ms: float = 12.5, **kw: Any
    ) -> None:
        """One provider call on the timeline (``code``, ``detail``, ``decision`` in ``kw``)."""
        provider = payment.provider or PROVIDER
        self.step(
            payment,
            lambda c: payment.record_provider_call(
                operation=operation,
                provider=provider,
                outcome=outcome,
                latency_ms=latency_ms,
                ctx=c,
                **kw,
            ),
        )

    def new_payout(self, amount: str, *, paid: bool | None, fee: int = 0) -> Payout:
        """A pay-out held on the merchant's wallet; paid, failed, or (None) still processing."""
        c = ctx()
        payout_id = uuid.uuid4()
        payout = Payout.create(
            payout_id,
            merchant_id=self.merchant_id,
            wallet_id=str(self.merchant.id),
            transfer_id=str(entry_id(payout_id, "payout")),
            amount=self.money(amount),
            provider=PROVIDER,
            destination={
                "account_number": "0123456789",
                "bank_code": "058",
                "account_name": "Acme Ltd",
            },
            metadata={},
            fingerprint="fp",
            ctx=c,
        )
        held = hold_payout(payout, self.merchant, self.accounts.clearing, c)
        self._save_payout(payout, [held])
        c = ctx()
        payout.record_provider_call(outcome="pending", latency_ms=30.0, ctx=c, decision="send")
        self._save_payout(payout, [])
        if paid is None:
            return payout
        c = ctx()
        if paid:
            payout.apply_update(
                "paid", c, provider_event_id="po-evt", provider_ref="ref-1", fee=fee
            )
        else:
            payout.apply_update("failed", c, reason="account closed")
        a = self.accounts
        touched = settle_payout(payout, held, self.merchant, a.clearing, a.fees, c)
        self._save_payout(payout, touched)
        return payout

    def _save_payout(self, payout: Payout, transfers: list[Transfer]) -> None:
        self.app.events.put(
            [
                *payout.collect_events(),
                *(e for t in transfers for e in t.collect_events()),
                *(e for w in self._wallets() for e in w.collect_events()),
            ]
        )


def captured_payment(books: Books, amount: str = "100.00", fee: int = 300) -> Payment:
    payment = books.new_payment(amount)
    books.step(payment, lambda c: payment.start_attempt(PROVIDER, c))
    books.call(payment, "authorize", "ok", decision="routed to zenith: lowest cost")
    books.update(payment, "captured", provider_event_id="e-cap", fee=fee, provider_ref="zen_1")
    return payment


def full_story(books: Books) -> Payment:
    """A payment with every kind of event and posting: attempts (one errored), a capture
    with a fee, a refund asked for and done, one refused, one the provider reported
    unasked, and a dispute opened and won."""
    payment = books.new_payment("100.00")
    books.step(payment, lambda c: payment.start_attempt("ramp", c))
    books.call(payment, "authorize", "error", code="503", detail="unavailable", latency_ms=80)
    books.step(payment, lambda c: payment.record_attempt_error("ramp answered 503", c))
    books.step(payment, lambda c: payment.start_attempt(PROVIDER, c))
    books.call(payment, "authorize", "ok", decision="failover: ramp breaker open")
    books.update(payment, "captured", provider_event_id="e-cap", fee=300, provider_ref="zen_1")
    books.step(payment, lambda c: payment.request_refund("r1", books.money("20.00"), c))
    books.update(payment, "refunded", provider_event_id="e-r1", refund_id="r1", amount=2000)
    books.step(payment, lambda c: payment.request_refund("r2", books.money("10.00"), c))
    books.step(payment, lambda c: payment.fail_operation("r2", "insufficient", "no funds", c))
    books.update(payment, "refunded", provider_event_id="e-r3", refund_id="r3", amount=500)
    books.update(
        payment, "dispute_opened", provider_event_id="e-d1", dispute_id="dp_1", amount=3000
    )
    books.update(payment, "dispute_won", provider_event_id="e-d2")
    return payment


def expired_authorization(books: Books, expires_at: datetime) -> Payment:
    payment = books.new_payment("50.00", capture_method="manual")
    books.step(payment, lambda c: payment.start_attempt(PROVIDER, c))
    books.update(
        payment,
        "authorized",
        provider_event_id=f"e-a-{payment.id}",
        authorization_expires_at=expires_at,
    )
    return payment


def past(seconds: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)

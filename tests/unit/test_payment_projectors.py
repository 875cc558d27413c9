"""The payment and pay-out projectors in memory: over random sequences of commands and
provider updates (duplicates, late, out of order), the rows they fold from the events say
what the aggregates say; every event becomes one timeline row."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from hypothesis import given
from hypothesis import strategies as st

from domain.context import CommandContext
from domain.errors import LedgerError
from domain.money import Currency, Money
from domain.payment import Payment, ProviderUpdate
from domain.payout import Payout
from projections.payment_timeline import PaymentTimelineProjector, PostingChange, TimelineRow
from projections.payments import (
    REFUND_PENDING,
    REFUND_SUCCEEDED,
    PaymentsProjector,
    RefundsProjector,
)
from projections.payouts import PayoutsProjector

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
USD = Currency.of("USD")
PROVIDERS = ("zenith", "ramp")
IDS = ("a", "b", "c")


class Rows:
    """``RowWriter`` and ``TimelineWriter`` in memory: changes applied at once."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, ...], Any] = {}
        self.timeline: list[TimelineRow] = []
        self.posting_changes: list[PostingChange] = []

    def change(self, key: tuple[str, ...], change: Callable[[Any], Any]) -> None:
        row = change(self.rows.get(key))
        if row is not None:
            self.rows[key] = row

    def add(self, row: TimelineRow) -> None:
        self.timeline.append(row)

    def add_posting_change(self, change: PostingChange) -> None:
        self.posting_changes.append(change)


def usd(minor: int) -> Money:
    return Money.of(minor, USD)


amounts = st.integers(min_value=1, max_value=12_000)
ids = st.sampled_from(IDS)
providers = st.sampled_from(PROVIDERS)
maybe_provider = st.one_of(st.none(), providers)
event_ids = st.one_of(st.none(), st.sampled_from(("e1", "e2", "e3", "e4")))


def provider_update() -> st.SearchStrategy[ProviderUpdate]:
    common = {"provider_event_id": event_ids, "provider": maybe_provider}
    return st.one_of(
        st.builds(
            ProviderUpdate,
            status=st.just("authorized"),
            authorization_expires_at=st.one_of(
                st.none(), st.just(T0 + timedelta(hours=1)), st.just(T0 - timedelta(hours=1))
            ),
            provider_ref=st.one_of(st.none(), st.just("ref-1")),
            **common,
        ),
        st.builds(
            ProviderUpdate,
            status=st.just("captured"),
            amount=st.one_of(st.none(), amounts),
            fee=st.integers(min_value=0, max_value=300),
            provider_ref=st.one_of(st.none(), st.just("ref-2")),
            **common,
        ),
        st.builds(ProviderUpdate, status=st.sampled_from(("failed", "canceled")), **common),
        st.builds(
            ProviderUpdate, status=st.just("refunded"), refund_id=ids, amount=amounts, **common
        ),
        st.builds(
            ProviderUpdate,
            status=st.sampled_from(("dispute_opened", "dispute_won", "dispute_lost")),
            amount=st.one_of(st.none(), amounts),
            dispute_id=st.one_of(st.none(), st.just("dp")),
            **common,
        ),
    )


def step() -> st.SearchStrategy[tuple[str, Any]]:
    frequent = st.one_of(
        st.tuples(st.just("start"), providers),
        st.tuples(st.just("error"), st.none()),
        st.tuples(st.just("update"), provider_update()),
        st.tuples(st.just("update"), provider_update()),
        st.tuples(st.just("capture"), st.one_of(st.none(), amounts)),
        st.tuples(st.just("request_capture"), ids),
        st.tuples(st.just("request_refund"), st.tuples(ids, amounts)),
        st.tuples(st.just("fail_operation"), ids),
        st.tuples(st.just("refund"), st.tuples(ids, amounts)),
        st.tuples(st.just("dispute"), st.none()),
        st.tuples(st.just("accept"), st.none()),
        st.tuples(st.just("call"), providers),
    )
    # Steps that end a payment early: rarer, so walks reach refunds and disputes.
    rare = st.one_of(
        st.tuples(st.just("cancel"), st.none()),
        st.tuples(st.just("fail"), st.none()),
        st.tuples(st.just("request_cancel"), ids),
        st.tuples(st.just("evidence"), st.none()),
        st.tuples(st.just("expire"), st.none()),
    )
    return st.one_of(frequent, frequent, frequent, frequent, rare)


# Where a walk starts: new, or already at the provider, authorized or captured.
PREFIXES: dict[str, list[tuple[str, Any]]] = {
    "new": [],
    "processing": [("start", "zenith")],
    "authorized": [("start", "zenith"), ("update", ProviderUpdate("authorized", "e0"))],
    "captured": [("start", "zenith"), ("update", ProviderUpdate("captured", "e0", fee=100))],
}


def run(p: Payment, name: str, arg: Any, c: CommandContext) -> None:
    actions: dict[str, Callable[[], Any]] = {
        "start": lambda: p.start_attempt(arg, c),
        "error": lambda: p.record_attempt_error("refused", c),
        "update": lambda: p.apply_provider_update(arg, c),
        "capture": lambda: p.capture(c, None if arg is None else usd(arg)),
        "cancel": lambda: p.cancel(c),
        "fail": lambda: p.fail("gave up", c),
        "request_capture": lambda: p.request_capture(arg, c),
        "request_cancel": lambda: p.request_cancel(arg, c),
        "request_refund": lambda: p.request_refund(arg[0], usd(arg[1]), c),
        "fail_operation": lambda: p.fail_operation(arg, "declined", "no", c),
        "refund": lambda: p.refund(arg[0], usd(arg[1]), c),
        "dispute": lambda: p.open_dispute("dp", c),
        "accept": lambda: p.accept_dispute(c),
        "evidence": lambda: p.submit_dispute_evidence({"note": "receipt"}, c),
        "call": lambda: p.record_provider_call(
            operation="authorize", provider=arg, outcome="ok", latency_ms=3.2, ctx=c
        ),
        "expire": lambda: p.expire_authorization(c),
    }
    try:
        actions[name]()
    except LedgerError:
        pass


@given(
    capture_method=st.sampled_from(("automatic", "manual")),
    prefix=st.sampled_from(sorted(PREFIXES)),
    steps=st.lists(step(), max_size=30),
)
def test_the_rows_say_what_the_payment_says(
    capture_method: str, prefix: str, steps: list[Any]
) -> None:
    clock = itertools.count()

    def c() -> CommandContext:
        return CommandContext(T0 + timedelta(minutes=next(clock)), "corr", "cause")

    p = Payment.create(
        UUID(int=1),
        merchant_id="acme",
        amount=usd(10_000),
        method="card",
        payment_method_token="tok_1",
        capture_method=capture_method,
        metadata={},
        ctx=c(),
    )
    events = list(p.collect_events())
    for name, arg in [*PREFIXES[prefix], *steps]:
        run(p, name, arg, c())
        events += p.collect_events()

    rows = Rows()
    projectors = (PaymentsProjector(), RefundsProjector(), PaymentTimelineProjector())
    for position, event in enumerate(events, start=1):
        for projector in projectors:
            projector.process(event, position, rows)
    # Applying everything again changes nothing: a change at or below a row's position is
    # ignored.
    before = dict(rows.rows)
    for position, event in enumerate(events, start=1):
        PaymentsProjector().process(event, position, rows)
        RefundsProjector().process(event, position, rows)
    assert rows.rows == before

    row = rows.rows[(str(p.id),)]
    assert (row.status, row.provider, row.provider_ref) == (p.status, p.provider, p.provider_ref)
    assert (
        row.authorized_amount,
        row.captured_amount,
        row.released_amount,
        row.refunded_amount,
        row.fees,
    ) == (p.authorized_amount, p.captured_amount, p.released_amount, p.refunded_amount, p.fees)
    assert (row.dispute_id, row.disputed_amount) == (p.dispute_id, p.disputed_amount)
    assert (row.failure_reason, row.cancel_reason) == (p.failure_reason, p.cancel_reason)
    assert row.authorization_expires_at == p.authorization_expires_at
    assert row.attempts == len(p.attempts)
    assert row.last_attempt_outcome == (p.attempts[-1].outcome if p.attempts else None)
    assert row.outcome_unknown == p.outcome_unknown
    assert {k: (o.kind, o.amount) for k, o in row.operations.items()} == {
        k: (o.kind, o.amount) for k, o in p.operations.items()
    }
    assert (row.version, row.position, row.updated_at) == (
        p.version,
        len(events),
        p.modified_on,
    )

    refunds = {key[1]: r for key, r in rows.rows.items() if len(key) == 2}
    done = {k: r.amount for k, r in refunds.items() if r.status == REFUND_SUCCEEDED}
    assert done == p.refunds
    pending = {k: r.amount for k, r in refunds.items() if r.status == REFUND_PENDING}
    assert pending == {k: o.amount for k, o in p.operations.items() if o.kind == "refund"}

    assert [t.position for t in rows.timeline] == list(range(1, len(events) + 1))
    assert [t.event_type for t in rows.timeline] == [type(e).__qualname__ for e in events]
    assert all(t.owner_id == str(p.id) and t.owner_kind == "payment" for t in rows.timeline)


@given(
    updates=st.lists(
        st.one_of(
            st.tuples(st.just("call"), st.sampled_from(("pending", "unknown", "ok", "error"))),
            st.tuples(st.just("paid"), st.integers(min_value=0, max_value=99)),
            st.tuples(st.just("failed"), st.none()),
        ),
        max_size=8,
    )
)
def test_the_payout_row_says_what_the_payout_says(updates: list[Any]) -> None:
    c = CommandContext(T0, "corr", "cause")
    payout = Payout.create(
        UUID(int=2),
        merchant_id="acme",
        wallet_id=str(UUID(int=3)),
        transfer_id=str(UUID(int=4)),
        amount=usd(500),
        provider="zenith",
        destination={"account_number": "0123456789", "bank_code": "058"},
        metadata={},
        fingerprint="fp",
        ctx=c,
    )
    for name, arg in updates:
        if name == "call":
            payout.record_provider_call(outcome=arg, latency_ms=5, ctx=c)
        elif name == "paid":
            payout.apply_update("paid", c, provider_event_id=f"p{arg}", fee=arg)
        else:
            payout.apply_update("failed", c, reason="closed")
    rows = Rows()
    for position, event in enumerate(payout.collect_events(), start=1):
        PayoutsProjector().process(event, position, rows)
        PaymentTimelineProjector().process(event, position, rows)
    row = rows.rows[(str(payout.id),)]
    assert (row.status, row.fee, row.calls, row.failure_reason) == (
        payout.status,
        payout.fee,
        payout.calls,
        payout.failure_reason,
    )
    assert row.destination == {
        "account_number_last4": "6789",
        "bank_code": "058",
        "account_name": None,
    }
    assert "0123456789" not in repr(row)
    assert len(rows.timeline) == payout.version

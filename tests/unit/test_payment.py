"""The Payment aggregate in memory: every transition, every guard, provider updates that
arrive twice, late or out of order, and a stateful property over random sequences.

Merchant and engine commands check their guard first and raise a specific error, leaving
the payment untouched; provider updates never raise for being stale, duplicate or out of
order, and never move a payment backwards. Replaying the events rebuilds the same state.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import Mapper
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from domain.context import CommandContext
from domain.errors import (
    AuthorizationExpired,
    CaptureExceedsAuthorized,
    CardNumberRejected,
    CurrencyMismatch,
    DisputeExceedsCaptured,
    InvalidAmount,
    LedgerError,
    PaymentNotCancelable,
    PaymentNotCapturable,
    PaymentNotDisputable,
    PaymentNotDisputed,
    PaymentNotRefundable,
    PaymentNotRoutable,
    PaymentOutcomeUnknown,
    PaymentStateError,
    RefundAlreadyRecorded,
    RefundExceedsCaptured,
    ValidationError,
)
from domain.money import Currency, Money
from domain.payment import (
    ATTEMPT_AUTHORIZED,
    ATTEMPT_CAPTURED,
    ATTEMPT_DECLINED,
    ATTEMPT_ERROR,
    ATTEMPT_PENDING,
    AUTHORIZED,
    AUTOMATIC,
    CANCEL_AUTHORIZATION_EXPIRED,
    CANCEL_BY_PROVIDER,
    CANCEL_REQUESTED,
    CANCELED,
    CAPTURE_METHODS,
    CAPTURED,
    CARD,
    CREATED,
    DEFAULT_AUTHORIZATION_TTL,
    DISPUTED,
    FAILED,
    LOST,
    MANUAL,
    METHODS,
    PARTIALLY_REFUNDED,
    PROCESSING,
    PROVIDER_STATUSES,
    REFUNDED,
    STATES,
    TERMINAL_STATES,
    TRANSITIONS,
    UPI,
    WON,
    Attempt,
    Payment,
    ProviderUpdate,
    UpdateOutcome,
    is_forward,
)
from infrastructure.eventstore import OrjsonTranscoder

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
USD = Currency.of("USD")
EUR = Currency.of("EUR")
PAN = "4242424242424242"
_ids = itertools.count(1)


def new_id() -> UUID:
    return UUID(int=next(_ids))


def ctx(now: datetime = T0, corr: str = "corr-1", cause: str = "cause-1") -> CommandContext:
    return CommandContext(now=now, correlation_id=corr, causation_id=cause)


def usd(minor: int) -> Money:
    return Money.of(minor, USD)


def state(p: Payment) -> dict[str, Any]:
    """A deep copy of everything the payment holds, except its not-yet-saved events (its
    lists, dicts and sets change in place, so a shallow copy would compare equal anyway)."""
    return copy.deepcopy({k: v for k, v in vars(p).items() if k != "_pending_events"})


def new_payment(
    capture_method: str = MANUAL, amount: int = 10_000, method: str = CARD, **kw: Any
) -> Payment:
    p = Payment.create(
        new_id(),
        merchant_id=kw.pop("merchant_id", "acme"),
        amount=usd(amount),
        method=method,
        payment_method_token=kw.pop("token", "tok_visa_abc123"),
        capture_method=capture_method,
        metadata=kw.pop("metadata", {"order": "o-1"}),
        ctx=kw.pop("c", ctx()),
    )
    assert not kw
    return p


def update(status: str, event_id: str | None = None, **kw: Any) -> ProviderUpdate:
    return ProviderUpdate(status=status, provider_event_id=event_id, **kw)


def processing(capture_method: str = MANUAL, amount: int = 10_000) -> Payment:
    p = new_payment(capture_method, amount)
    p.start_attempt("zenith", ctx())
    p.collect_events()
    return p


def authorized(amount: int = 10_000, expires_in: timedelta = timedelta(hours=1)) -> Payment:
    p = processing(MANUAL, amount)
    expires = T0 + expires_in
    assert p.apply_provider_update(
        update("authorized", "evt-auth", authorization_expires_at=expires), ctx()
    )
    p.collect_events()
    return p


def captured(amount: int = 10_000, fee: int = 0) -> Payment:
    p = processing(AUTOMATIC, amount)
    assert p.apply_provider_update(update("captured", "evt-cap", fee=fee), ctx())
    p.collect_events()
    return p


def disputed(amount: int | None = None) -> Payment:
    p = captured()
    p.open_dispute("dp_1", ctx(), None if amount is None else usd(amount))
    p.collect_events()
    return p


def assert_refused(error: type[LedgerError], p: Payment, action: Callable[[], Any]) -> LedgerError:
    """``action`` raises exactly ``error`` and leaves the payment as it was, with no new
    events."""
    p.collect_events()
    before = state(p)
    with pytest.raises(LedgerError) as info:
        action()
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    assert p.pending_events == []
    assert state(p) == before
    return info.value


def assert_ignored(p: Payment, u: ProviderUpdate, outcome: UpdateOutcome) -> None:
    """The update is classified as ``outcome`` and applying it changes nothing."""
    p.collect_events()
    before = state(p)
    assert p.classify_provider_update(u) is outcome
    assert p.apply_provider_update(u, ctx()) is False
    assert p.pending_events == []
    assert state(p) == before


def replay(events: list[Any]) -> Payment:
    rebuilt: Any = None
    for e in events:
        rebuilt = e.mutate(rebuilt)
    assert isinstance(rebuilt, Payment)
    return rebuilt


# ---- the state machine itself -------------------------------------------------------------


def test_the_order_is_a_partial_order_without_cycles() -> None:
    for s in STATES:
        assert not is_forward(s, s) or s == PARTIALLY_REFUNDED  # its only self-loop
        for t in STATES:
            if s != t:
                assert not (is_forward(s, t) and is_forward(t, s)), (s, t)
    assert TERMINAL_STATES == {WON, LOST, REFUNDED, FAILED, CANCELED}
    assert is_forward(CREATED, LOST) and is_forward(AUTHORIZED, DISPUTED)
    assert not is_forward(CAPTURED, AUTHORIZED) and not is_forward(REFUNDED, DISPUTED)
    assert not is_forward(CANCELED, CAPTURED) and not is_forward(FAILED, AUTHORIZED)
    assert set(TRANSITIONS[PROCESSING]) == {AUTHORIZED, CAPTURED, FAILED, CANCELED}


# ---- creation --------------------------------------------------------------------------------


def test_create_records_a_new_payment() -> None:
    c = ctx(corr="pay-corr", cause="pay-cause")
    p = new_payment(MANUAL, 12_345, method=UPI, token="tok_upi_1", c=c)
    assert (p.merchant_id, p.amount, p.currency, p.method, p.payment_method_token) == (
        "acme",
        12_345,
        "USD",
        UPI,
        "tok_upi_1",
    )
    assert (p.status, p.capture_method, p.provider, p.attempts) == (CREATED, MANUAL, None, [])
    assert (p.captured_amount, p.refunded_amount, p.disputed_amount, p.fees) == (0, 0, 0, 0)
    [created] = p.pending_events
    assert isinstance(created, Payment.Created)
    assert (created.correlation_id, created.causation_id, created.timestamp) == (
        "pay-corr",
        "pay-cause",
        T0,
    )
    assert p.created_on == T0


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("capture_method", CAPTURE_METHODS)
def test_every_method_and_capture_method_is_accepted(method: str, capture_method: str) -> None:
    assert new_payment(capture_method, method=method).status == CREATED


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        ({"merchant_id": ""}, ValidationError),
        ({"amount": 0}, InvalidAmount),
        ({"amount": -5}, InvalidAmount),
        ({"method": "cash"}, ValidationError),
        ({"capture_method": "later"}, ValidationError),
        ({"token": ""}, ValidationError),
        ({"token": "t" * 256}, ValidationError),
        ({"token": PAN}, CardNumberRejected),
        ({"token": "4242 4242 4242 4242"}, CardNumberRejected),
        ({"metadata": {"note": f"card {PAN}"}}, CardNumberRejected),
        ({"metadata": {"card": {"number": int(PAN)}}}, CardNumberRejected),
    ],
)
def test_create_refuses_bad_input(kw: dict[str, Any], error: type[LedgerError]) -> None:
    with pytest.raises(LedgerError) as info:
        new_payment(**kw)
    assert type(info.value) is error


def test_a_card_number_is_refused_by_path_and_never_echoed() -> None:
    with pytest.raises(CardNumberRejected) as info:
        new_payment(metadata={"customer": {"note": f"pay with {PAN}"}})
    assert "metadata.customer.note" in info.value.detail
    assert PAN not in str(info.value)
    assert info.value.code == "card-number-rejected" and info.value.status == 422
    assert isinstance(info.value, ValidationError)


# ---- attempts and routing -------------------------------------------------------------------


def test_start_attempt_routes_the_payment() -> None:
    p = new_payment()
    p.collect_events()
    assert p.start_attempt("zenith", ctx(corr="route")) == 1
    assert (p.status, p.provider, p.attempts) == (
        PROCESSING,
        "zenith",
        [Attempt(1, "zenith", ATTEMPT_PENDING)],
    )
    assert p.outcome_unknown
    [started] = p.pending_events
    assert isinstance(started, Payment.AttemptStarted)
    assert (started.attempt_number, started.provider, started.correlation_id) == (
        1,
        "zenith",
        "route",
    )


def test_no_second_attempt_while_the_first_outcome_is_unknown() -> None:
    p = processing()
    err = assert_refused(PaymentOutcomeUnknown, p, lambda: p.start_attempt("ramp", ctx()))
    assert err.code == "payment-outcome-unknown"
    assert_refused(PaymentOutcomeUnknown, p, lambda: p.start_attempt("zenith", ctx()))


def test_a_definite_error_allows_a_retry_at_another_provider() -> None:
    p = processing()
    p.record_attempt_error("connection refused", ctx())
    assert p.attempts == [Attempt(1, "zenith", ATTEMPT_ERROR)]
    assert not p.outcome_unknown and p.status == PROCESSING
    assert p.start_attempt("ramp", ctx()) == 2
    assert p.provider == "ramp"
    assert p.attempts[-1] == Attempt(2, "ramp", ATTEMPT_PENDING)
    assert p.apply_provider_update(update("authorized", "r-1"), ctx())
    assert p.attempts == [
        Attempt(1, "zenith", ATTEMPT_ERROR),
        Attempt(2, "ramp", ATTEMPT_AUTHORIZED),
    ]


def test_record_attempt_error_needs_an_attempt_awaiting_an_answer() -> None:
    p = new_payment()
    assert_refused(PaymentStateError, p, lambda: p.record_attempt_error("x", ctx()))
    p = processing()
    p.record_attempt_error("x", ctx())
    assert_refused(PaymentStateError, p, lambda: p.record_attempt_error("x", ctx()))


def test_only_a_created_or_processing_payment_can_be_routed() -> None:
    p = authorized()
    err = assert_refused(PaymentNotRoutable, p, lambda: p.start_attempt("ramp", ctx()))
    assert isinstance(err, PaymentStateError) and err.status == 409
    p = new_payment()
    assert_refused(ValidationError, p, lambda: p.start_attempt("", ctx()))


def test_the_engine_can_give_up_only_when_nothing_is_in_flight() -> None:
    p = new_payment()
    p.fail("no eligible provider", ctx())
    assert (p.status, p.failure_reason) == (FAILED, "no eligible provider")
    p = processing()
    assert_refused(PaymentOutcomeUnknown, p, lambda: p.fail("gave up", ctx()))
    p.record_attempt_error("503", ctx())
    p.fail("attempts exhausted", ctx())
    assert p.status == FAILED and p.attempts[-1].outcome == ATTEMPT_ERROR
    p = authorized()
    assert_refused(PaymentStateError, p, lambda: p.fail("x", ctx()))


# ---- provider answers: authorize, capture, decline, cancel ------------------------------------


def test_automatic_capture_goes_straight_to_captured() -> None:
    p = processing(AUTOMATIC, 5_000)
    assert p.apply_provider_update(update("captured", "evt-1", fee=145), ctx(corr="wh"))
    assert (p.status, p.captured_amount, p.authorized_amount, p.fees) == (
        CAPTURED,
        5_000,
        5_000,
        145,
    )
    assert p.attempts[-1].outcome == ATTEMPT_CAPTURED
    [cap] = p.pending_events
    assert isinstance(cap, Payment.Captured)
    assert (cap.amount, cap.fee, cap.released, cap.provider_event_id) == (
        5_000,
        145,
        0,
        "zenith:evt-1",
    )
    assert (cap.correlation_id, cap.timestamp) == ("wh", T0)


def test_authorized_records_the_expiry_given_or_the_default() -> None:
    p = authorized(expires_in=timedelta(minutes=30))
    assert (p.status, p.authorized_amount, p.authorization_expires_at) == (
        AUTHORIZED,
        10_000,
        T0 + timedelta(minutes=30),
    )
    assert p.attempts[-1].outcome == ATTEMPT_AUTHORIZED
    q = processing()
    q.apply_provider_update(update("authorized"), ctx())
    assert q.authorization_expires_at == T0 + DEFAULT_AUTHORIZATION_TTL


def test_a_decline_fails_the_payment() -> None:
    p = processing()
    assert p.apply_provider_update(update("failed", "evt-d", reason="insufficient_funds"), ctx())
    assert (p.status, p.failure_reason) == (FAILED, "insufficient_funds")
    assert p.attempts[-1].outcome == ATTEMPT_DECLINED
    assert_refused(PaymentNotRoutable, p, lambda: p.start_attempt("ramp", ctx()))


def test_a_provider_cancel_releases_the_authorization() -> None:
    p = authorized()
    assert p.apply_provider_update(update("canceled", "evt-c"), ctx())
    assert (p.status, p.cancel_reason, p.released_amount) == (CANCELED, CANCEL_BY_PROVIDER, 10_000)


def test_a_partial_authorization_is_a_conflict() -> None:
    p = processing()
    assert_ignored(p, update("authorized", "e", amount=9_000), UpdateOutcome.CONFLICT)


# ---- manual capture ----------------------------------------------------------------------------


def test_manual_capture_of_everything() -> None:
    p = authorized()
    p.capture(ctx(now=T0 + timedelta(minutes=59)), fee=320)
    assert (p.status, p.captured_amount, p.released_amount, p.fees) == (CAPTURED, 10_000, 0, 320)
    [cap] = p.pending_events
    assert isinstance(cap, Payment.Captured) and cap.provider_event_id is None
    assert cap.timestamp == T0 + timedelta(minutes=59)


def test_partial_capture_releases_the_rest() -> None:
    p = authorized()
    p.capture(ctx(), usd(6_000))
    assert (p.status, p.captured_amount, p.released_amount, p.authorized_amount) == (
        CAPTURED,
        6_000,
        4_000,
        10_000,
    )
    assert p.refundable_amount == 6_000


def test_capture_guards() -> None:
    p = authorized()
    err = assert_refused(CaptureExceedsAuthorized, p, lambda: p.capture(ctx(), usd(10_001)))
    assert err.status == 422
    assert_refused(InvalidAmount, p, lambda: p.capture(ctx(), usd(0)))
    assert_refused(InvalidAmount, p, lambda: p.capture(ctx(), usd(100), fee=101))
    assert_refused(InvalidAmount, p, lambda: p.capture(ctx(), usd(100), fee=-1))
    assert_refused(CurrencyMismatch, p, lambda: p.capture(ctx(), Money.of(100, EUR)))
    p.capture(ctx(), usd(100), fee=100)
    err = assert_refused(PaymentNotCapturable, p, lambda: p.capture(ctx()))
    assert err.code == "payment-not-capturable"


def test_only_an_authorized_manual_payment_can_be_captured() -> None:
    for p in (new_payment(), processing()):
        assert_refused(PaymentNotCapturable, p, lambda p=p: p.capture(ctx()))
    auto = processing(AUTOMATIC)
    auto.apply_provider_update(update("authorized", "a"), ctx())
    assert auto.status == AUTHORIZED
    assert_refused(PaymentNotCapturable, auto, lambda: auto.capture(ctx()))


def test_an_expired_authorization_is_never_captured() -> None:
    p = authorized(expires_in=timedelta(hours=1))
    expiry = T0 + timedelta(hours=1)
    assert not p.is_authorization_expired(expiry - timedelta(microseconds=1))
    assert p.is_authorization_expired(expiry)
    err = assert_refused(AuthorizationExpired, p, lambda: p.capture(ctx(now=expiry)))
    assert err.code == "authorization-expired"
    assert_refused(AuthorizationExpired, p, lambda: p.capture(ctx(now=expiry), usd(1)))
    # Once the sweeper has canceled it, the answer is the same.
    p.expire_authorization(ctx(now=expiry))
    assert (p.status, p.cancel_reason, p.released_amount) == (
        CANCELED,
        CANCEL_AUTHORIZATION_EXPIRED,
        10_000,
    )
    assert_refused(AuthorizationExpired, p, lambda: p.capture(ctx(now=expiry)))
    assert_refused(AuthorizationExpired, p, lambda: p.capture(ctx(now=T0)))


def test_capture_just_before_expiry_succeeds() -> None:
    p = authorized(expires_in=timedelta(hours=1))
    p.capture(ctx(now=T0 + timedelta(hours=1) - timedelta(microseconds=1)))
    assert p.status == CAPTURED


def test_expire_authorization_guards() -> None:
    p = authorized(expires_in=timedelta(hours=1))
    assert_refused(PaymentStateError, p, lambda: p.expire_authorization(ctx()))
    q = captured()
    assert_refused(
        PaymentStateError, q, lambda: q.expire_authorization(ctx(now=T0 + timedelta(days=30)))
    )


def test_a_provider_capture_while_still_authorized_is_recorded_even_past_our_expiry() -> None:
    # The provider's clock decided; the money moved, so the ledger must know.
    p = authorized(expires_in=timedelta(hours=1))
    late = ctx(now=T0 + timedelta(hours=2))
    assert p.apply_provider_update(update("captured", "evt-late", amount=7_000), late)
    assert (p.status, p.captured_amount, p.released_amount) == (CAPTURED, 7_000, 3_000)


# ---- cancel -------------------------------------------------------------------------------------


def test_cancel_before_any_attempt() -> None:
    p = new_payment()
    p.cancel(ctx())
    assert (p.status, p.cancel_reason, p.released_amount) == (CANCELED, CANCEL_REQUESTED, 0)


def test_cancel_an_authorization_releases_it() -> None:
    p = authorized()
    p.cancel(ctx())
    assert (p.status, p.released_amount) == (CANCELED, 10_000)
    [canceled] = p.pending_events
    assert isinstance(canceled, Payment.Canceled) and canceled.released == 10_000


def test_cancel_while_the_outcome_is_unknown_is_refused() -> None:
    p = processing()
    assert_refused(PaymentOutcomeUnknown, p, lambda: p.cancel(ctx()))
    p.record_attempt_error("refused", ctx())
    p.cancel(ctx())
    assert p.status == CANCELED


@pytest.mark.parametrize("make", [captured, disputed])
def test_cancel_after_capture_is_refused(make: Callable[[], Payment]) -> None:
    p = make()
    err = assert_refused(PaymentNotCancelable, p, lambda: p.cancel(ctx()))
    assert err.code == "payment-not-cancelable"


# ---- refunds -------------------------------------------------------------------------------------


def test_partial_then_full_refund() -> None:
    p = captured(10_000)
    p.refund("rf_1", usd(2_500), ctx())
    assert (p.status, p.refunded_amount, p.refundable_amount) == (PARTIALLY_REFUNDED, 2_500, 7_500)
    p.refund("rf_2", usd(2_500), ctx())
    assert (p.status, p.refunded_amount) == (PARTIALLY_REFUNDED, 5_000)
    p.refund("rf_3", usd(5_000), ctx())
    assert (p.status, p.refunded_amount, p.refunds) == (
        REFUNDED,
        10_000,
        {"rf_1": 2_500, "rf_2": 2_500, "rf_3": 5_000},
    )
    events = p.collect_events()
    assert [e.refunded_after for e in events] == [2_500, 5_000, 10_000]


def test_a_refund_never_exceeds_captured_minus_refunded() -> None:
    p = authorized()
    p.capture(ctx(), usd(6_000))
    err = assert_refused(RefundExceedsCaptured, p, lambda: p.refund("r", usd(6_001), ctx()))
    assert (err.code, err.status) == ("refund-exceeds-captured", 422)
    p.refund("r1", usd(4_000), ctx())
    assert_refused(RefundExceedsCaptured, p, lambda: p.refund("r2", usd(2_001), ctx()))
    p.refund("r2", usd(2_000), ctx())
    assert p.status == REFUNDED
    assert_refused(PaymentNotRefundable, p, lambda: p.refund("r3", usd(1), ctx()))


def test_refund_guards() -> None:
    p = captured()
    p.refund("r1", usd(10), ctx())
    assert_refused(RefundAlreadyRecorded, p, lambda: p.refund("r1", usd(10), ctx()))
    assert_refused(ValidationError, p, lambda: p.refund("", usd(10), ctx()))
    assert_refused(InvalidAmount, p, lambda: p.refund("r2", usd(0), ctx()))
    assert_refused(CurrencyMismatch, p, lambda: p.refund("r2", Money.of(10, EUR), ctx()))
    for q in (new_payment(), processing(), authorized()):
        assert_refused(PaymentNotRefundable, q, lambda q=q: q.refund("r", usd(1), ctx()))


def test_no_refund_while_a_dispute_is_open() -> None:
    p = disputed()
    err = assert_refused(PaymentNotRefundable, p, lambda: p.refund("r", usd(1), ctx()))
    assert "dispute" in err.detail


# ---- disputes ------------------------------------------------------------------------------------


def test_a_dispute_holds_the_amount_until_won() -> None:
    p = captured(10_000)
    p.refund("r1", usd(3_000), ctx())
    p.open_dispute("dp_1", ctx())
    assert (p.status, p.dispute_id, p.disputed_amount, p.dispute_hold) == (
        DISPUTED,
        "dp_1",
        7_000,
        7_000,
    )
    assert p.apply_provider_update(update("dispute_won", "evt-w"), ctx())
    assert (p.status, p.dispute_hold, p.disputed_amount) == (WON, 0, 7_000)


def test_accepting_a_dispute_loses_it() -> None:
    p = disputed(2_000)
    p.accept_dispute(ctx())
    assert (p.status, p.disputed_amount, p.dispute_hold) == (LOST, 2_000, 0)
    [lost] = p.pending_events
    assert isinstance(lost, Payment.DisputeLost)
    assert (lost.dispute_id, lost.amount) == ("dp_1", 2_000)


def test_a_fully_refunded_payment_cannot_be_disputed() -> None:
    p = captured()
    p.refund("r1", usd(10_000), ctx())
    err = assert_refused(PaymentNotDisputable, p, lambda: p.open_dispute("dp", ctx()))
    assert err.code == "payment-not-disputable"
    assert "fully refunded" in err.detail
    assert_ignored(p, update("dispute_opened", "evt-dp"), UpdateOutcome.CONFLICT)


def test_dispute_guards() -> None:
    for q in (new_payment(), processing(), authorized()):
        assert_refused(PaymentNotDisputable, q, lambda q=q: q.open_dispute("dp", ctx()))
    p = captured(10_000)
    p.refund("r1", usd(4_000), ctx())
    err = assert_refused(DisputeExceedsCaptured, p, lambda: p.open_dispute("dp", ctx(), usd(6_001)))
    assert err.status == 422
    assert_refused(ValidationError, p, lambda: p.open_dispute("", ctx()))
    assert_refused(CurrencyMismatch, p, lambda: p.open_dispute("dp", ctx(), Money.of(1, EUR)))
    p.open_dispute("dp", ctx(), usd(6_000))
    assert_refused(PaymentNotDisputable, p, lambda: p.open_dispute("dp2", ctx()))
    q = captured()
    err = assert_refused(PaymentNotDisputed, q, lambda: q.accept_dispute(ctx()))
    assert err.code == "payment-not-disputed"


def test_a_dispute_from_the_provider_defaults_to_everything_not_refunded() -> None:
    p = captured(10_000)
    p.refund("r1", usd(1_000), ctx())
    assert p.apply_provider_update(update("dispute_opened", "evt-dp", dispute_id="dp_9"), ctx())
    assert (p.status, p.dispute_id, p.disputed_amount) == (DISPUTED, "dp_9", 9_000)
    assert p.apply_provider_update(update("dispute_lost", "evt-dl"), ctx())
    assert p.status == LOST


# ---- provider updates: duplicates, late, out of order, contradictions -------------------------


def test_a_duplicate_webhook_is_ignored() -> None:
    p = processing(AUTOMATIC)
    u = update("captured", "evt-1", fee=10)
    assert p.classify_provider_update(u) is UpdateOutcome.APPLIED
    assert p.apply_provider_update(u, ctx())
    assert_ignored(p, u, UpdateOutcome.DUPLICATE)
    assert p.fees == 10  # counted once
    assert p.provider_event_ids == {"zenith:evt-1"}


def test_a_late_authorized_after_captured_never_moves_backwards() -> None:
    p = captured()
    assert_ignored(p, update("authorized", "evt-old"), UpdateOutcome.STALE)
    assert_ignored(p, update("captured", "evt-again"), UpdateOutcome.STALE)
    p.refund("r1", usd(10_000), ctx())
    assert_ignored(p, update("captured", "evt-old2"), UpdateOutcome.STALE)
    assert p.status == REFUNDED


def test_a_late_dispute_opened_after_the_decision_is_stale() -> None:
    p = disputed()
    p.apply_provider_update(update("dispute_won", "w"), ctx())
    assert_ignored(p, update("dispute_opened", "o"), UpdateOutcome.STALE)
    assert_ignored(p, update("dispute_lost", "l"), UpdateOutcome.CONFLICT)


def test_updates_ahead_of_their_predecessor_wait_for_it() -> None:
    p = authorized()
    assert_ignored(p, update("dispute_opened", "dp"), UpdateOutcome.OUT_OF_ORDER)
    assert_ignored(
        p, update("refunded", "rf", refund_id="r1", amount=5), UpdateOutcome.OUT_OF_ORDER
    )
    q = captured()
    assert_ignored(q, update("dispute_won", "w"), UpdateOutcome.OUT_OF_ORDER)
    # The same event id is not burnt: once its predecessor arrives it applies.
    assert q.apply_provider_update(update("dispute_opened", "dp"), ctx())
    assert q.apply_provider_update(update("dispute_won", "w"), ctx())


def test_contradicting_updates_are_conflicts() -> None:
    canceled = authorized()
    canceled.cancel(ctx())
    assert_ignored(canceled, update("captured", "c"), UpdateOutcome.CONFLICT)
    failed = processing()
    failed.apply_provider_update(update("failed", "f"), ctx())
    assert_ignored(failed, update("authorized", "a"), UpdateOutcome.CONFLICT)
    auto = processing(AUTOMATIC, 5_000)
    assert_ignored(auto, update("captured", "big", amount=5_001), UpdateOutcome.CONFLICT)
    assert_ignored(auto, update("captured", "fee", amount=100, fee=101), UpdateOutcome.CONFLICT)
    cap = captured()
    assert_ignored(cap, update("failed", "f"), UpdateOutcome.CONFLICT)
    assert_ignored(cap, update("canceled", "c"), UpdateOutcome.CONFLICT)


def test_updates_from_another_provider_or_before_routing_are_conflicts() -> None:
    p = processing()
    assert_ignored(p, update("authorized", "a", provider="ramp"), UpdateOutcome.CONFLICT)
    assert p.apply_provider_update(update("authorized", "a", provider="zenith"), ctx())
    fresh = new_payment()
    assert_ignored(fresh, update("authorized", "a"), UpdateOutcome.CONFLICT)


def test_refund_webhooks_are_deduplicated_by_refund_id() -> None:
    p = captured(10_000)
    p.refund("rf_1", usd(4_000), ctx())
    # The provider's webhook confirming our own refund: already recorded.
    assert_ignored(
        p, update("refunded", "evt-r1", refund_id="rf_1", amount=4_000), UpdateOutcome.DUPLICATE
    )
    # A refund made at the provider (its dashboard) is recorded once.
    u = update("refunded", "evt-r2", refund_id="rf_ext", amount=1_000)
    assert p.apply_provider_update(u, ctx())
    assert (p.refunded_amount, p.refunds["rf_ext"]) == (5_000, 1_000)
    assert_ignored(p, u, UpdateOutcome.DUPLICATE)
    assert_ignored(
        p, update("refunded", "evt-r3", refund_id="rf_x", amount=5_001), UpdateOutcome.CONFLICT
    )
    assert_refused(RefundAlreadyRecorded, p, lambda: p.refund("rf_ext", usd(1), ctx()))


def test_a_refund_racing_a_dispute() -> None:
    # Dispute first: the merchant's refund is refused, the provider's refund is a conflict.
    p = disputed()
    assert_refused(PaymentNotRefundable, p, lambda: p.refund("r", usd(1), ctx()))
    assert_ignored(p, update("refunded", "e", refund_id="r", amount=1), UpdateOutcome.CONFLICT)
    # Refund first, of everything: the dispute webhook is a conflict, never a negative hold.
    q = captured()
    q.refund("r", usd(10_000), ctx())
    assert_ignored(q, update("dispute_opened", "d"), UpdateOutcome.CONFLICT)
    # Refund first, of part: the dispute can cover only the rest.
    s = captured()
    s.refund("r", usd(6_000), ctx())
    assert_ignored(s, update("dispute_opened", "d", amount=4_001), UpdateOutcome.CONFLICT)
    assert s.apply_provider_update(update("dispute_opened", "d2"), ctx())
    assert s.disputed_amount == 4_000


def test_an_update_without_an_event_id_relies_on_the_order_alone() -> None:
    p = processing(AUTOMATIC)
    assert p.apply_provider_update(update("captured"), ctx())
    assert_ignored(p, update("captured"), UpdateOutcome.STALE)
    assert p.provider_event_ids == set()


@pytest.mark.parametrize(
    "kw",
    [
        {"status": "settled"},
        {"status": "captured", "provider_event_id": ""},
        {"status": "captured", "amount": 0},
        {"status": "captured", "amount": -1},
        {"status": "captured", "amount": True},
        {"status": "captured", "fee": -1},
        {"status": "refunded", "amount": 10},
        {"status": "refunded", "refund_id": "r"},
    ],
)
def test_malformed_provider_updates_are_refused_by_the_adapter_type(kw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ProviderUpdate(**kw)


def test_every_event_carries_the_command_ids_and_time() -> None:
    p = new_payment(MANUAL, c=ctx(corr="c0", cause="k0"))
    steps: list[Callable[[CommandContext], Any]] = [
        lambda c: p.start_attempt("zenith", c),
        lambda c: p.record_attempt_error("503", c),
        lambda c: p.start_attempt("ramp", c),
        lambda c: p.apply_provider_update(update("authorized", "a", provider="ramp"), c),
        lambda c: p.capture(c, usd(8_000), fee=100),
        lambda c: p.refund("r1", usd(1_000), c),
        lambda c: p.apply_provider_update(update("dispute_opened", "d"), c),
        lambda c: p.apply_provider_update(update("dispute_won", "w"), c),
    ]
    for i, step in enumerate(steps, start=1):
        step(ctx(now=T0 + timedelta(seconds=i), corr=f"c{i}", cause=f"k{i}"))
    events = p.collect_events()
    assert len(events) == len(steps) + 1
    for i, e in enumerate(events):
        assert (e.correlation_id, e.causation_id) == (f"c{i}", f"k{i}")
        assert e.timestamp == T0 + timedelta(seconds=i)
    assert state(replay(list(events))) == state(p)
    assert p.status == WON and p.modified_on == T0 + timedelta(seconds=len(steps))


def test_every_event_round_trips_through_the_event_stores_encoding() -> None:
    """Every payment event survives the mapper and transcoder the event store uses (JSON,
    where only ``timestamp`` and ``expires_at`` come back as datetimes), and the decoded
    events rebuild the same payment."""
    mapper: Mapper[UUID] = Mapper(transcoder=OrjsonTranscoder())
    c = ctx()
    p = new_payment(MANUAL, metadata={"order": "o-9", "tags": ["a", 1]})
    p.start_attempt("zenith", c)
    p.record_attempt_error("503", c)
    p.start_attempt("ramp", c)
    p.apply_provider_update(
        update("authorized", "a", authorization_expires_at=T0 + timedelta(hours=2)), c
    )
    p.capture(c, usd(9_000), fee=90)
    p.refund("r1", usd(1_000), c)
    p.apply_provider_update(update("refunded", "r", refund_id="r2", amount=500), c)
    p.open_dispute("dp", c)
    p.accept_dispute(c)
    q = new_payment(AUTOMATIC)
    q.start_attempt("zenith", c)
    q.apply_provider_update(update("captured", "k", fee=5), c)
    q.open_dispute("dq", c)
    q.apply_provider_update(update("dispute_won", "w"), c)
    f = new_payment()
    f.start_attempt("zenith", c)
    f.apply_provider_update(update("failed", "f", reason="do_not_honor"), c)
    x = new_payment()
    x.start_attempt("zenith", c)
    x.apply_provider_update(update("authorized", "a"), c)
    x.expire_authorization(ctx(now=T0 + DEFAULT_AUTHORIZATION_TTL))
    o = new_payment(MANUAL)
    o.start_attempt("zenith", c)
    o.record_provider_call(
        operation="authorize", provider="zenith", outcome="ok", latency_ms=12.5, ctx=c
    )
    o.apply_provider_update(update("authorized", "a2", provider_ref="pz_1"), c)
    o.request_capture("cap-1", c, usd(5_000))
    o.apply_provider_update(update("captured", "c2", amount=5_000, fee=10), c)
    o.request_refund("rf-1", usd(100), c)
    o.fail_operation("rf-1", "payment_disputed", "disputed at the provider", c)
    o.open_dispute("d", c)
    o.submit_dispute_evidence({"note": "delivered", "tracking": "1Z999"}, c)
    seen: set[type] = set()
    for payment in (p, q, f, x, o):
        events = list(payment.collect_events())
        decoded = [mapper.to_domain_event(mapper.to_stored_event(e)) for e in events]
        assert decoded == events
        assert state(replay(decoded)) == state(payment)  # datetimes come back as datetimes
        seen.update(type(e) for e in events)
    every_event_class = {
        v
        for v in vars(Payment).values()
        if isinstance(v, type) and issubclass(v, Payment.Event) and v is not Payment.Event
    }
    assert seen == every_event_class


def test_error_codes_are_stable() -> None:
    assert {
        e.code
        for e in (
            PaymentStateError,
            PaymentNotRoutable,
            PaymentOutcomeUnknown,
            PaymentNotCapturable,
            AuthorizationExpired,
            CaptureExceedsAuthorized,
            PaymentNotCancelable,
            PaymentNotRefundable,
            RefundExceedsCaptured,
            RefundAlreadyRecorded,
            PaymentNotDisputable,
            DisputeExceedsCaptured,
            PaymentNotDisputed,
            CardNumberRejected,
        )
    } == {
        "payment-state",
        "payment-not-routable",
        "payment-outcome-unknown",
        "payment-not-capturable",
        "authorization-expired",
        "capture-exceeds-authorized",
        "payment-not-cancelable",
        "payment-not-refundable",
        "refund-exceeds-captured",
        "refund-already-recorded",
        "payment-not-disputable",
        "dispute-exceeds-captured",
        "payment-not-disputed",
        "card-number-rejected",
    }


# ---- property: random commands and provider updates keep every invariant ----------------------

PROVIDERS = ["zenith", "ramp", "monnify"]
# Around the payment amounts the machine uses (1, 999, 10_000), and anywhere.
AMOUNTS = st.sampled_from([0, 1, 2, 100, 499, 500, 998, 999, 1_000, 5_000, 10_000, 10_001]) | (
    st.integers(0, 12_000)
)
EVENT_IDS = [f"evt_{i}" for i in range(6)]
REFUND_IDS = [f"rf_{i}" for i in range(4)]


@st.composite
def provider_updates(draw: st.DrawFn) -> dict[str, Any]:
    """The parts of a random provider update; expiry is relative to the machine's clock."""
    status = draw(st.sampled_from(PROVIDER_STATUSES))
    refund = status == "refunded"
    return {
        "status": status,
        "provider_event_id": draw(st.none() | st.sampled_from(EVENT_IDS)),
        "provider": draw(st.sampled_from([None, None, None, "zenith", "ramp"])),
        "amount": draw(
            AMOUNTS.map(lambda a: a or 1) if refund else st.none() | AMOUNTS.filter(bool)
        ),
        "fee": draw(st.sampled_from([0, 0, 30, 500])),
        "refund_id": draw(st.sampled_from(REFUND_IDS)) if refund else None,
        "dispute_id": draw(st.none() | st.just("dp_x")),
        "expires_in": draw(st.none() | st.sampled_from([-60, 60, 3_600, 86_400])),
    }


class RandomPayment(RuleBasedStateMachine):
    """One payment under random merchant and engine commands and random provider updates,
    with duplicates (resent updates), late and out-of-order ones, and a moving clock."""

    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.steps = 0
        self.events: list[Any] = []
        self.sent: list[ProviderUpdate] = []
        self.payment: Payment

    def ctx(self) -> CommandContext:
        self.steps += 1
        return ctx(now=self.now, corr=f"c{self.steps}", cause=f"k{self.steps}")

    @initialize(
        capture_method=st.sampled_from(CAPTURE_METHODS),
        amount=st.sampled_from([1, 999, 10_000]),
        start=st.sampled_from([CREATED, PROCESSING, AUTHORIZED, CAPTURED, CAPTURED]),
    )
    def create(self, capture_method: str, amount: int, start: str) -> None:
        """Start at any of the early states (through the same commands and updates), so that
        the walk explores refunds and disputes as much as routing."""
        p = self.payment = new_payment(capture_method, amount)
        if start != CREATED:
            p.start_attempt("zenith", ctx())
        if start in (AUTHORIZED, CAPTURED):
            p.apply_provider_update(update("authorized", "init-a"), ctx())
        if start == CAPTURED:
            p.apply_provider_update(update("captured", "init-c"), ctx())
        assert p.status == start
        self.events.extend(p.collect_events())

    def command(self, name: str, action: Callable[[CommandContext], Any]) -> bool:
        """Run a command; a guard failure must leave the payment untouched."""
        p = self.payment
        before, status = state(p), p.status
        c = self.ctx()
        try:
            action(c)
        except LedgerError as exc:
            event(f"refused: {exc.code}")
            assert p.pending_events == []
            assert state(p) == before
            return False
        event(f"command applied: {name}")
        new = p.collect_events()
        assert new and all(e.timestamp == c.now for e in new)
        assert all(e.correlation_id == c.correlation_id for e in new)
        self.events.extend(new)
        assert p.status == status or is_forward(status, p.status), (status, p.status)
        return True

    def deliver(self, u: ProviderUpdate) -> None:
        p = self.payment
        before, status = state(p), p.status
        outcome = p.classify_provider_update(u)
        applied = p.apply_provider_update(u, self.ctx())  # never raises
        event(f"update {u.status}: {outcome}")
        assert applied == (outcome is UpdateOutcome.APPLIED)
        new = p.collect_events()
        if not applied:
            assert new == [] and state(p) == before
            return
        assert len(new) == 1
        self.events.extend(new)
        assert p.status == status or is_forward(status, p.status), (status, p.status)
        if u.provider_event_id is not None:
            assert p.classify_provider_update(u) is UpdateOutcome.DUPLICATE

    @rule(provider=st.sampled_from(PROVIDERS))
    def start_attempt(self, provider: str) -> None:
        self.command("start_attempt", lambda c: self.payment.start_attempt(provider, c))

    @rule()
    def record_attempt_error(self) -> None:
        self.command("record_attempt_error", lambda c: self.payment.record_attempt_error("503", c))

    # Ending a payment early (fail, cancel, expire) is drawn one time in four: a walk that
    # ends at once would explore little.
    @rule(go=st.integers(0, 3))
    def fail(self, go: int) -> None:
        if go == 0:
            self.command("fail", lambda c: self.payment.fail("gave up", c))

    @rule(amount=st.none() | AMOUNTS, fee=st.sampled_from([0, 25]))
    def capture(self, amount: int | None, fee: int) -> None:
        expires = self.payment.authorization_expires_at
        money = None if amount is None else usd(amount)
        if self.command("capture", lambda c: self.payment.capture(c, money, fee=fee)):
            assert expires is not None and self.now < expires  # never after expiry

    @rule(go=st.integers(0, 3))
    def cancel(self, go: int) -> None:
        if go == 0:
            self.command("cancel", lambda c: self.payment.cancel(c))

    @rule(go=st.integers(0, 3))
    def expire_authorization(self, go: int) -> None:
        if go == 0:
            self.command("expire_authorization", lambda c: self.payment.expire_authorization(c))

    @rule(
        refund_id=st.sampled_from(REFUND_IDS),
        amount=AMOUNTS,
        share=st.sampled_from([0, 1, 2, 3]),
        nudge=st.sampled_from([-1, 0, 1, 1]),
    )
    def refund(self, refund_id: str, amount: int, share: int, nudge: int) -> None:
        """Any amount, or (mostly) a share of what is refundable, give or take one."""
        if share:
            amount = max(0, self.payment.refundable_amount // share + nudge)
        self.command("refund", lambda c: self.payment.refund(refund_id, usd(amount), c))

    @rule(amount=st.none() | AMOUNTS)
    def open_dispute(self, amount: int | None) -> None:
        money = None if amount is None else usd(amount)
        self.command("open_dispute", lambda c: self.payment.open_dispute("dp_m", c, money))

    @rule()
    def accept_dispute(self) -> None:
        self.command("accept_dispute", lambda c: self.payment.accept_dispute(c))

    @rule(parts=provider_updates(), plausible=st.integers(0, 2), choice=st.integers(0, 99))
    def provider_update(self, parts: dict[str, Any], plausible: int, choice: int) -> None:
        """Two times in three the update a provider would plausibly send next, else any."""
        if plausible:
            self.provider_progress(choice, parts["amount"])
            return
        parts = dict(parts)  # hypothesis reports the drawn value: leave it whole
        expires_in = parts.pop("expires_in")
        expires = None if expires_in is None else self.now + timedelta(seconds=expires_in)
        u = ProviderUpdate(**parts, authorization_expires_at=expires)
        self.sent.append(u)
        self.deliver(u)

    @rule(choice=st.integers(0, 99), amount=st.none() | AMOUNTS.filter(bool))
    def provider_progress(self, choice: int, amount: int | None) -> None:
        """The update a provider would plausibly send next (the happy path, with a fresh
        event id), so that the random walk reaches the later states."""
        p = self.payment
        status = {
            PROCESSING: "captured"
            if p.capture_method == AUTOMATIC and choice % 2
            else "authorized",
            # A manual payment is mostly left for the merchant to capture.
            AUTHORIZED: "captured" if p.capture_method == AUTOMATIC or choice % 4 == 0 else None,
            # Refunds and disputes are mostly left to the merchant's commands.
            CAPTURED: ["refunded", "dispute_opened", None, None, None, None][choice % 6],
            PARTIALLY_REFUNDED: ["refunded", "dispute_opened", None, None, None, None][choice % 6],
            DISPUTED: ["dispute_won", "dispute_lost"][choice % 2],
        }.get(p.status)
        if status is None:
            return
        refund = status == "refunded"
        u = ProviderUpdate(
            status=status,
            provider_event_id=f"auto_{len(self.sent)}",
            amount=max(1, p.refundable_amount // (choice % 4 + 1)) if refund else amount,
            refund_id=f"rf_auto_{len(self.sent)}" if refund else None,
            fee=choice % 3,
            authorization_expires_at=self.now + timedelta(hours=choice % 30),
        )
        self.sent.append(u)
        self.deliver(u)

    @rule(index=st.integers(0, 50))
    def resend(self, index: int) -> None:
        """A webhook delivered again, possibly long after later ones."""
        if self.sent:
            self.deliver(self.sent[index % len(self.sent)])

    @rule(seconds=st.sampled_from([0, 30, 3_600, 86_400, 3 * 86_400]))
    def tick(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    def teardown(self) -> None:
        event(f"ends {self.payment.status}")

    # ---- invariants ----

    @invariant()
    def amounts_are_bounded(self) -> None:
        p = self.payment
        assert 0 <= p.refunded_amount <= p.captured_amount <= p.amount
        assert p.captured_amount <= p.authorized_amount <= p.amount
        assert 0 <= p.fees <= p.captured_amount
        assert sum(p.refunds.values()) == p.refunded_amount
        if p.captured_amount:
            assert p.captured_amount + p.released_amount == p.authorized_amount

    @invariant()
    def status_matches_the_amounts(self) -> None:
        p = self.payment
        if p.status in (CAPTURED, PARTIALLY_REFUNDED, REFUNDED, DISPUTED, WON, LOST):
            assert p.captured_amount > 0
        else:
            assert p.captured_amount == 0 and p.refunded_amount == 0
        if p.status == CAPTURED:
            assert p.refunded_amount == 0
        if p.status == PARTIALLY_REFUNDED:
            assert 0 < p.refunded_amount < p.captured_amount
        if p.status == REFUNDED:
            assert p.refunded_amount == p.captured_amount

    @invariant()
    def disputed_only_when_captured_and_not_fully_refunded(self) -> None:
        p = self.payment
        if p.status in (DISPUTED, WON, LOST):
            assert p.refunded_amount < p.captured_amount
            assert 0 < p.disputed_amount <= p.captured_amount - p.refunded_amount
        else:
            assert p.disputed_amount == 0 and p.dispute_id is None
        assert p.dispute_hold == (p.disputed_amount if p.status == DISPUTED else 0)

    @invariant()
    def attempts_are_numbered_and_only_the_last_may_be_pending(self) -> None:
        p = self.payment
        assert [a.number for a in p.attempts] == list(range(1, len(p.attempts) + 1))
        assert all(a.outcome != ATTEMPT_PENDING for a in p.attempts[:-1])
        if p.attempts:
            assert p.provider == p.attempts[-1].provider
        else:
            assert p.provider is None and p.status in (CREATED, FAILED, CANCELED)

    @invariant()
    def replaying_the_events_rebuilds_the_payment(self) -> None:
        if self.events:
            assert state(replay(self.events)) == state(self.payment)


TestRandomPayment = RandomPayment.TestCase
TestRandomPayment.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


# ---- operations the merchant asks for: recorded before the provider is called ----------


def test_a_capture_request_waits_for_the_provider_and_blocks_a_second_one() -> None:
    p = authorized()
    c = ctx()
    op = p.request_capture("cap-1", c, usd(4_000))
    assert (op.kind, op.amount) == ("capture", 4_000)
    assert p.status == AUTHORIZED  # nothing captured until the provider says so
    assert_refused(PaymentNotCapturable, p, lambda: p.request_capture("cap-2", c))
    assert_refused(PaymentNotCancelable, p, lambda: p.request_cancel("void-1", c))
    assert p.apply_provider_update(update("captured", "c1", amount=4_000, fee=40), c)
    assert (p.status, p.captured_amount, p.released_amount, p.fees) == (CAPTURED, 4_000, 6_000, 40)
    assert p.operations == {}


def test_a_capture_request_is_refused_after_expiry_but_the_provider_answer_is_recorded() -> None:
    p = authorized(expires_in=timedelta(minutes=5))
    assert_refused(
        AuthorizationExpired, p, lambda: p.request_capture("late", ctx(now=T0 + timedelta(hours=1)))
    )
    p.request_capture("cap", ctx(now=T0 + timedelta(minutes=4)))
    # The provider captured just in time by its clock; the answer arrives after ours expired.
    assert p.apply_provider_update(update("captured", "c"), ctx(now=T0 + timedelta(minutes=6)))
    assert p.status == CAPTURED


def test_cancel_voids_an_authorization_through_the_provider_or_cancels_at_once() -> None:
    p = authorized()
    c = ctx()
    op = p.request_cancel("void-1", c)
    assert op is not None and op.kind == "void"
    assert p.status == AUTHORIZED
    assert p.apply_provider_update(update("canceled", "v"), c)
    assert (p.status, p.cancel_reason, p.released_amount) == (CANCELED, "requested", 10_000)
    fresh = new_payment()
    assert fresh.request_cancel("void-2", c) is None
    assert (fresh.status, fresh.cancel_reason) == (CANCELED, "requested")
    unknown = processing()
    assert_refused(PaymentOutcomeUnknown, unknown, lambda: unknown.request_cancel("v", c))


def test_a_void_overtaken_by_a_capture_is_finished_as_refused_not_as_done() -> None:
    p = authorized()
    c = ctx()
    p.request_cancel("void-1", c)
    # The provider captured (its own auto-capture, or a capture sent earlier) first.
    assert p.apply_provider_update(update("captured", "c1", amount=10_000), c)
    assert p.status == CAPTURED and p.operations == {}
    assert p.finished_operations["void-1"] == ("superseded", "payment-not-cancelable")


def test_a_capture_overtaken_by_a_cancel_is_finished_as_refused() -> None:
    p = authorized()
    c = ctx()
    p.request_capture("cap-1", c)
    assert p.apply_provider_update(update("canceled", "v1"), c)
    assert p.status == CANCELED and p.operations == {}
    assert p.finished_operations["cap-1"] == ("superseded", "payment-not-capturable")


def test_an_authorization_does_not_expire_while_a_capture_is_in_flight() -> None:
    p = authorized(expires_in=timedelta(minutes=5))
    p.request_capture("cap", ctx(now=T0 + timedelta(minutes=4)))
    late = ctx(now=T0 + timedelta(minutes=10))
    assert_refused(PaymentStateError, p, lambda: p.expire_authorization(late))
    assert p.status == AUTHORIZED
    p.fail_operation("cap", "processing_error", "refused", late)  # the capture did not happen
    p.expire_authorization(late)
    assert (p.status, p.cancel_reason) == (CANCELED, "authorization_expired")


def test_pending_refunds_count_against_what_can_still_be_refunded() -> None:
    p = captured(10_000)
    c = ctx()
    p.request_refund("r1", usd(6_000), c)
    assert_refused(RefundExceedsCaptured, p, lambda: p.request_refund("r2", usd(4_001), c))
    assert_refused(RefundAlreadyRecorded, p, lambda: p.request_refund("r1", usd(1), c))
    p.request_refund("r2", usd(4_000), c)
    p.fail_operation("r1", "processing_error", "refused", c)
    assert p.pending_refunds() == 4_000
    assert p.apply_provider_update(update("refunded", "e2", refund_id="r2", amount=4_000), c)
    assert (p.status, p.refunded_amount, p.operations) == (PARTIALLY_REFUNDED, 4_000, {})
    assert_refused(PaymentStateError, p, lambda: p.fail_operation("r1", "x", "y", c))


def test_a_refund_sent_before_a_dispute_opened_is_recorded_when_the_provider_confirms() -> None:
    p = captured(10_000)
    c = ctx()
    p.request_refund("r1", usd(3_000), c)
    # The provider refunded first, then the customer disputed the rest.
    assert p.apply_provider_update(update("dispute_opened", "d1", amount=7_000), c)
    assert (
        p.classify_provider_update(update("refunded", "e1", refund_id="r1", amount=3_000))
        is UpdateOutcome.APPLIED
    )
    assert p.apply_provider_update(update("refunded", "e1", refund_id="r1", amount=3_000), c)
    assert (p.status, p.refunded_amount, p.disputed_amount) == (DISPUTED, 3_000, 7_000)
    # A refund nobody asked for, on a disputed payment, stays a conflict.
    q = disputed()
    assert (
        q.classify_provider_update(update("refunded", "e9", refund_id="zz", amount=1))
        is UpdateOutcome.CONFLICT
    )


def test_dispute_evidence_needs_an_open_dispute_and_never_a_card_number() -> None:
    p = disputed()
    c = ctx()
    assert_refused(
        CardNumberRejected,
        p,
        lambda: p.submit_dispute_evidence({"receipt": "paid with 4242 4242 4242 4242"}, c),
    )
    p.submit_dispute_evidence({"tracking": "1Z999AA10123456784"}, c)
    assert p.dispute_evidence == [{"tracking": "1Z999AA10123456784"}]
    assert_refused(
        PaymentNotDisputed, captured(), lambda: captured().submit_dispute_evidence({"a": 1}, c)
    )

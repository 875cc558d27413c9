"""Projector of the causal story of each payment and pay-out (``payment_timeline`` ->
``rm_payment_timeline``): one row per event of the payment or pay-out, and one per event
of each of its ledger postings. Pure, like ``projectors``.

Postings are found by the ``payment_id`` (or ``payout_id``) in the transfer's metadata,
for the transfer kinds of ``domain.payment_ledger`` only (a merchant's own transfer cannot
join another payment's timeline). ``Transfer.Posted``, ``Voided`` and ``Expired`` do not
repeat that metadata: they go to the writer as ``PostingChange``, kept only if the
transfer's creation is on a timeline (the writer looks it up).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from domain import payment as pay
from domain import payment_ledger as postings
from domain.payment import Payment
from domain.payout import Payout
from domain.transfer import Transfer
from projections.stored import Handler, State, stored_state

PAYMENT = "payment"
PAYOUT = "payout"

PAYMENT_POSTING_KINDS = frozenset(
    {
        postings.PAYMENT_CAPTURE,
        postings.PAYMENT_FEE,
        postings.REFUND,
        postings.PROVIDER_REFUND,
        postings.DISPUTE,
        postings.DISPUTE_WON,
        postings.DISPUTE_LOST,
    }
)
PAYOUT_POSTING_KINDS = frozenset({postings.PAYOUT, postings.PAYOUT_FEE})


@dataclass(frozen=True, slots=True)
class TimelineRow:
    """One event of a payment or pay-out (``owner_kind``), or of one of its postings.

    ``event_type`` is the event's class (``Payment.Captured``, ``Transfer.Posted``).
    ``reference`` is the id the event is about: refund, operation, dispute or the
    provider's reference. Amounts are minor units of the owner's currency.
    """

    owner_id: str
    owner_kind: str  # payment, payout
    position: int
    at: datetime
    event_type: str
    attempt_number: int | None = None
    provider: str | None = None
    operation: str | None = None
    outcome: str | None = None
    latency_ms: float | None = None
    decision: str | None = None
    code: str | None = None
    detail: str | None = None
    provider_event_id: str | None = None
    reference: str | None = None
    amount: int | None = None
    fee: int | None = None
    transfer_id: str | None = None
    transfer_kind: str | None = None
    debit_account_id: str | None = None
    credit_account_id: str | None = None
    correlation_id: str = ""
    causation_id: str = ""


@dataclass(frozen=True, slots=True)
class PostingChange:
    """A transfer posted, voided or expired: on the timeline of the payment or pay-out
    whose posting created it, if any (the writer resolves it from the creation's row)."""

    transfer_id: str
    position: int
    at: datetime
    event_type: str
    amount: int | None  # posted amount; None: the created amount (a void releases it all)
    outcome: str  # posted, voided, expired
    correlation_id: str
    causation_id: str


class TimelineWriter(Protocol):
    def add(self, row: TimelineRow) -> None: ...
    def add_posting_change(self, change: PostingChange) -> None: ...


def event_type(event: Any) -> str:
    return type(event).__qualname__


def _text(value: str | None) -> str | None:
    return value or None


def _owner_of_posting(kind: str, metadata: dict[str, Any]) -> tuple[str, str] | None:
    if kind in PAYMENT_POSTING_KINDS:
        owner, raw = PAYMENT, metadata.get("payment_id")
    elif kind in PAYOUT_POSTING_KINDS:
        owner, raw = PAYOUT, metadata.get("payout_id")
    else:
        return None
    if not isinstance(raw, str):
        return None
    try:
        return owner, str(UUID(raw))
    except ValueError:  # never let one odd event stop the projection
        return None


def _payment_entry(e: Any, base: dict[str, Any]) -> TimelineRow:
    """The timeline row of one payment event."""
    if isinstance(e, Payment.Created):
        return TimelineRow(
            **base,
            amount=e.amount,
            detail=f"method={e.method} capture_method={e.capture_method}",
        )
    if isinstance(e, Payment.AttemptStarted):
        return TimelineRow(
            **base,
            attempt_number=e.attempt_number,
            provider=e.provider,
            outcome=pay.ATTEMPT_PENDING,
        )
    if isinstance(e, Payment.AttemptErrored):
        return TimelineRow(
            **base,
            attempt_number=e.attempt_number,
            outcome=pay.ATTEMPT_ERROR,
            detail=_text(e.reason),
        )
    if isinstance(e, Payment.ProviderCalled):
        return _call_entry(e, base)
    if isinstance(e, Payment.Authorized):
        return TimelineRow(
            **base,
            amount=e.amount,
            provider_event_id=e.provider_event_id,
            reference=e.provider_ref,
            detail=f"expires_at={e.expires_at.isoformat()}",
        )
    if isinstance(e, Payment.Captured):
        return TimelineRow(
            **base,
            amount=e.amount,
            fee=e.fee,
            provider_event_id=e.provider_event_id,
            reference=e.provider_ref,
            detail=f"released={e.released}" if e.released else None,
        )
    if isinstance(e, Payment.Failed):
        return TimelineRow(**base, detail=_text(e.reason), provider_event_id=e.provider_event_id)
    if isinstance(e, Payment.Canceled):
        return TimelineRow(
            **base,
            amount=e.released or None,
            detail=_text(e.reason),
            provider_event_id=e.provider_event_id,
        )
    if isinstance(e, Payment.Refunded):
        return TimelineRow(
            **base, amount=e.amount, reference=e.refund_id, provider_event_id=e.provider_event_id
        )
    if isinstance(e, Payment.DisputeOpened | Payment.DisputeWon | Payment.DisputeLost):
        return TimelineRow(
            **base, amount=e.amount, reference=e.dispute_id, provider_event_id=e.provider_event_id
        )
    if isinstance(e, Payment.OperationRequested):
        return TimelineRow(**base, operation=e.kind, reference=e.operation_id, amount=e.amount)
    if isinstance(e, Payment.OperationFailed):
        return TimelineRow(
            **base,
            operation=e.kind,
            reference=e.operation_id,
            outcome="failed",
            code=_text(e.code),
            detail=_text(e.reason),
        )
    if isinstance(e, Payment.DisputeEvidenceSubmitted):
        return TimelineRow(**base, reference=_text(e.dispute_id))  # never the evidence itself
    return TimelineRow(**base)


def _call_entry(e: Any, base: dict[str, Any]) -> TimelineRow:
    return TimelineRow(
        **base,
        operation=e.operation,
        provider=e.provider,
        attempt_number=e.attempt_number,
        outcome=e.outcome,
        latency_ms=float(e.latency_ms),
        code=_text(e.code),
        detail=_text(e.detail),
        decision=_text(e.decision),
    )


def _payout_entry(e: Any, base: dict[str, Any]) -> TimelineRow:
    if isinstance(e, Payout.Created):
        return TimelineRow(**base, amount=e.amount, provider=e.provider, transfer_id=e.transfer_id)
    if isinstance(e, Payout.ProviderCalled):
        return _call_entry(e, base)
    if isinstance(e, Payout.Paid):
        return TimelineRow(
            **base, fee=e.fee, provider_event_id=e.provider_event_id, reference=e.provider_ref
        )
    if isinstance(e, Payout.Failed):
        return TimelineRow(**base, detail=_text(e.reason), provider_event_id=e.provider_event_id)
    return TimelineRow(**base)


def _stamp(event: Any, position: int) -> dict[str, Any]:
    return {
        "position": position,
        "at": event.timestamp,
        "event_type": event_type(event),
        "correlation_id": event.correlation_id,
        "causation_id": event.causation_id,
    }


_TRANSFER_CREATED = Transfer.Created.__qualname__

_POSTING_OUTCOMES: dict[type, str] = {
    Transfer.Posted: "posted",
    Transfer.Voided: "voided",
    Transfer.Expired: "expired",
}


class PaymentTimelineProjector:
    """The causal story of each payment and pay-out (``rm_payment_timeline``): its own
    events (attempts, provider calls with latency and the engine's decision, provider
    updates, operations) and its ledger postings, in position order."""

    name = "payment_timeline"
    consumes: tuple[type, ...] = (
        Payment.Event,
        Payout.Event,
        Transfer.Created,
        Transfer.Posted,
        Transfer.Voided,
        Transfer.Expired,
    )

    def handler(self, cls: type) -> Handler | None:
        """Creations of transfers as stored state (every transfer's creation comes here,
        and only a payment's or pay-out's posting is kept); the rest as objects."""
        return self._transfer_created if issubclass(cls, Transfer.Created) else None

    @staticmethod
    def _transfer_created(s: State, position: int, writer: TimelineWriter) -> None:
        kind = s["kind"]
        owner = _owner_of_posting(kind, s["metadata"])
        if owner is None:
            return
        owner_kind, owner_id = owner
        writer.add(
            TimelineRow(
                owner_id=owner_id,
                owner_kind=owner_kind,
                position=position,
                at=datetime.fromisoformat(s["timestamp"]),
                event_type=_TRANSFER_CREATED,
                correlation_id=s["correlation_id"],
                causation_id=s["causation_id"],
                amount=s["amount"],
                outcome="pending" if s["pending"] else "posted",
                transfer_id=s["originator_id"],
                transfer_kind=kind,
                debit_account_id=s["debit_account_id"],
                credit_account_id=s["credit_account_id"],
            )
        )

    def process(self, event: Any, position: int, writer: TimelineWriter) -> None:
        if isinstance(event, Payment.Event):
            base = {"owner_id": str(event.originator_id), "owner_kind": PAYMENT}
            writer.add(_payment_entry(event, {**base, **_stamp(event, position)}))
        elif isinstance(event, Payout.Event):
            base = {"owner_id": str(event.originator_id), "owner_kind": PAYOUT}
            writer.add(_payout_entry(event, {**base, **_stamp(event, position)}))
        elif isinstance(event, Transfer.Created):
            self._transfer_created(stored_state(event), position, writer)
        elif isinstance(event, Transfer.Posted | Transfer.Voided | Transfer.Expired):
            writer.add_posting_change(
                PostingChange(
                    transfer_id=str(event.originator_id),
                    position=position,
                    at=event.timestamp,
                    event_type=event_type(event),
                    amount=event.amount if isinstance(event, Transfer.Posted) else None,
                    outcome=_POSTING_OUTCOMES[type(event)],
                    correlation_id=event.correlation_id,
                    causation_id=event.causation_id,
                )
            )

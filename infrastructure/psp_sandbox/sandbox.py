"""The sandbox's state and operations, free of HTTP.

Everything runs on one event loop and no operation awaits between reading and writing
state, so each operation is atomic; the per-key lock makes concurrent repeats of one
``Idempotency-Key`` wait for the first and replay its result."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import secrets
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from infrastructure.psp_sandbox.cards import (
    DECLINING_ACCOUNTS,
    DECLINING_CARDS,
    DECLINING_VPAS,
    brand,
    luhn_valid,
)
from infrastructure.psp_sandbox.faults import Draw, Faults, FaultState
from infrastructure.psp_sandbox.problems import GatewayFailure, Problem, not_found
from infrastructure.psp_sandbox.providers import PROVIDERS, Method, Provider
from infrastructure.psp_sandbox.records import (
    Dispute,
    Payment,
    Payout,
    Refund,
    Token,
    iso,
    new_id,
    now,
)
from infrastructure.psp_sandbox.schemas import (
    AuthorizationRequest,
    CaptureRequest,
    PayoutRequest,
    ProviderConfig,
    ProviderConfigUpdate,
    RefundRequest,
    TokenRequest,
)
from infrastructure.psp_sandbox.webhooks import WebhookDispatcher

After = Literal["respond", "hang", "drop"]

# The TokenRequest field that carries each method's details.
_DETAILS = {
    Method.CARD: "card",
    Method.UPI: "upi",
    Method.BANK_TRANSFER: "bank_account",
    Method.DIGITAL_WALLET: "digital_wallet",
}


@dataclass(frozen=True, slots=True)
class Result:
    status: int
    body: dict[str, Any]
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """A result and how it leaves: answered, answered after a hang, or never (dropped)."""

    result: Result
    after: After = "respond"
    hang_s: float = 0.0


def _result(exc: Problem) -> Result:
    return Result(exc.status, exc.body())


class Sandbox:
    def __init__(
        self,
        *,
        webhook_url: str | None,
        webhook_secret: str,
        async_providers: Collection[str] = (),
    ) -> None:
        for name in async_providers:
            self.provider(name)
        self._initial = {
            name: ProviderConfig(
                webhook_url=webhook_url,
                webhook_secret=webhook_secret,
                mode="async" if name in async_providers else "sync",
            )
            for name in PROVIDERS
        }
        self.config = dict(self._initial)
        self.faults = {name: FaultState() for name in PROVIDERS}
        self.webhooks = WebhookDispatcher(list(PROVIDERS), self._target, self.faults)
        self._fingerprint_key = secrets.token_bytes(32)
        self._tasks: set[asyncio.Task[None]] = set()
        self._clear()

    def _clear(self) -> None:
        self._tokens: dict[str, Token] = {}
        self._payments: dict[str, Payment] = {}
        self._refunds: dict[str, Refund] = {}
        self._payouts: dict[str, Payout] = {}
        self._disputes: dict[str, Dispute] = {}
        self._idempotency: dict[tuple[str, str], tuple[bytes, Result]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._sequence = dict.fromkeys(PROVIDERS, 0)
        self.ledger: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    # -- admin ---------------------------------------------------------------------------

    def reset(self) -> None:
        """Back to start-up: no state, no faults, start-up configuration."""
        for task in self._tasks:
            task.cancel()  # each leaves the set when done
        self._clear()
        self.config = dict(self._initial)
        self.reset_faults()
        self.webhooks.reset()

    def reset_faults(self) -> None:
        for state in self.faults.values():
            state.set(Faults())

    def set_faults(self, provider: str, faults: Faults) -> None:
        self.provider(provider)
        self.faults[provider].set(faults)

    def configure(self, provider: str, update: ProviderConfigUpdate) -> ProviderConfig:
        self.provider(provider)
        changes = {
            k: v
            for k, v in update.model_dump(exclude_unset=True).items()
            if v is not None or k == "webhook_url"
        }
        self.config[provider] = self.config[provider].model_copy(update=changes)
        return self.config[provider]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.webhooks.stop()

    def _target(self, provider: str) -> tuple[str | None, str]:
        config = self.config[provider]
        return config.webhook_url, config.webhook_secret

    # -- plumbing ------------------------------------------------------------------------

    def provider(self, name: str) -> Provider:
        try:
            return PROVIDERS[name]
        except KeyError:
            raise not_found("provider", name) from None

    async def latency(self, provider: str) -> None:
        delay = self.faults[provider].faults.latency_ms
        if delay:
            await asyncio.sleep(delay / 1000)

    async def mutate(
        self,
        provider: str,
        key: str,
        request: bytes,
        operation: Callable[[Draw], Result],
        *,
        faults: bool = True,
    ) -> Outcome:
        """Run ``operation`` once per (provider, key); a repeat replays the stored result.

        Injected failures before the operation (5xx, processing errors) store nothing, so a
        retry with the same key runs afresh. A result, success or business error, is stored
        before any after-the-fact fault (hang, dropped response) can hit its delivery."""
        state = self.faults[provider]
        fingerprint = hmac.new(self._fingerprint_key, request, hashlib.sha256).digest()
        lock = self._locks.setdefault((provider, key), asyncio.Lock())
        async with lock:
            stored = self._idempotency.get((provider, key))
            if stored is not None:
                if not hmac.compare_digest(stored[0], fingerprint):
                    raise Problem(
                        422,
                        "idempotency_key_reused",
                        "This Idempotency-Key was already used with a different request.",
                    )
                return Outcome(replace(stored[1], replayed=True))
            draw = state.draw() if faults else Draw()
            if draw.http_5xx:
                raise GatewayFailure
            if draw.error:
                raise Problem(
                    503, "processing_error", "The provider could not process it.", retryable=True
                )
            try:
                result = operation(draw)
            except Problem as exc:
                result = _result(exc)
            self._idempotency[(provider, key)] = (fingerprint, result)
        if draw.timeout_after_charge:
            return Outcome(result, "hang", state.faults.hang_ms / 1000)
        if draw.drop_response:
            return Outcome(result, "drop")
        return Outcome(result)

    def _later(self, provider: str, action: Callable[[], None]) -> None:
        delay = self.config[provider].async_delay_ms / 1000

        async def run() -> None:
            await asyncio.sleep(delay)
            action()

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _emit(self, provider: str, kind: str, data: dict[str, Any]) -> None:
        self._sequence[provider] += 1
        event = {
            "id": new_id("evt"),
            "type": kind,
            "timestamp": iso(now()),
            "provider": provider,
            "sequence": self._sequence[provider],
            "data": data,
        }
        self.events.append(event)
        self.webhooks.publish(provider, event)

    def _record(
        self,
        kind: str,
        provider: str,
        *,
        object_id: str,
        payment_id: str | None,
        reference: str,
        key: str | None,
        amount: int,
        currency: str,
        fee: int = 0,
    ) -> None:
        self.ledger.append(
            {
                "seq": len(self.ledger) + 1,
                "at": iso(now()),
                "provider": provider,
                "kind": kind,
                "object_id": object_id,
                "payment_id": payment_id,
                "reference": reference,
                "idempotency_key": key,
                "amount": amount,
                "currency": currency,
                "fee": fee,
            }
        )

    @staticmethod
    def _check_method(provider: Provider, method: Method) -> None:
        if method not in provider.methods:
            raise Problem(
                422,
                "unsupported_method",
                f"{provider.name} does not take {method.value}.",
                supported=sorted(m.value for m in provider.methods),
            )

    @staticmethod
    def _check_currency(provider: Provider, currency: str) -> None:
        if currency not in provider.currencies:
            raise Problem(
                422,
                "unsupported_currency",
                f"{provider.name} does not take {currency}.",
                supported=sorted(provider.currencies),
            )

    def _payment(self, provider: str, payment_id: str) -> Payment:
        payment = self._payments.get(payment_id)
        if payment is None or payment.provider != provider:
            raise not_found("payment", payment_id)
        self._expire_if_due(payment)
        return payment

    # -- tokens --------------------------------------------------------------------------

    def tokenize(self, provider: str, body: TokenRequest) -> Result:
        """Exchange payment details for an opaque token; only last4/brand-like facts stay."""
        p = self.provider(provider)
        self._check_method(p, body.method)
        given = [m for m, field in _DETAILS.items() if getattr(body, field) is not None]
        if given != [body.method]:
            raise Problem(
                422,
                "details_mismatch",
                f"Method {body.method.value} needs exactly its own details.",
            )
        decline: str | None = None
        details: dict[str, Any]
        if body.card is not None:
            number = body.card.number.get_secret_value()
            if not luhn_valid(number):
                raise Problem(422, "invalid_card_number", "Not a valid card number (Luhn).")
            today = now()
            if (body.card.exp_year, body.card.exp_month) < (today.year, today.month):
                raise Problem(422, "card_expired", "The card has expired.")
            details = {
                "card": {
                    "brand": brand(number),
                    "last4": number[-4:],
                    "exp_month": body.card.exp_month,
                    "exp_year": body.card.exp_year,
                }
            }
            decline = DECLINING_CARDS.get(number)
        elif body.upi is not None:
            details = {"upi": {"vpa": body.upi.vpa}}
            decline = DECLINING_VPAS.get(body.upi.vpa)
        elif body.bank_account is not None:
            account = body.bank_account.account_number.get_secret_value()
            _check_account(account)
            details = {
                "bank_account": {
                    "bank_code": body.bank_account.bank_code,
                    "account_last4": account[-4:],
                }
            }
            decline = DECLINING_ACCOUNTS.get(account)
        elif body.digital_wallet is not None:
            details = {"digital_wallet": body.digital_wallet.model_dump()}
        else:  # unreachable: `given` matched the method
            raise Problem(422, "details_mismatch", "No payment details given.")
        token = Token(new_id(f"tok_{provider}"), provider, body.method, details, decline)
        self._tokens[token.id] = token
        return Result(201, token.public())

    # -- payments ------------------------------------------------------------------------

    def authorize(self, provider: str, key: str, body: AuthorizationRequest, draw: Draw) -> Result:
        p = self.provider(provider)
        self._check_method(p, body.method)
        self._check_currency(p, body.currency)
        token = self._tokens.get(body.token)
        if token is None or token.provider != provider:
            raise Problem(422, "invalid_token", "No such token at this provider.")
        if token.method != body.method:
            raise Problem(422, "token_method_mismatch", "The token is for another method.")
        payment = Payment(
            id=new_id("pay"),
            provider=provider,
            reference=body.reference,
            idempotency_key=key,
            method=body.method,
            amount=body.amount,
            currency=body.currency,
            payment_method={"type": token.method.value, **token.details},
        )
        self._payments[payment.id] = payment
        decline = token.decline_code or ("do_not_honor" if draw.decline else None)
        if self.config[provider].mode == "async":
            self._later(provider, lambda: self._settle(payment, decline, capture=body.capture))
            return Result(202, payment.public())
        self._settle(payment, decline, capture=body.capture)
        if payment.status == "declined":
            raise Problem(
                402,
                "payment_declined",
                f"The payment was declined ({decline}).",
                decline_code=decline,
                payment=payment.public(),
            )
        return Result(201, payment.public())

    def _settle(self, payment: Payment, decline: str | None, *, capture: bool) -> None:
        if payment.status != "pending":
            return
        if decline is not None:
            payment.status, payment.decline_code = "declined", decline
            payment.touch()
            self._emit(payment.provider, "payment.declined", payment.public())
            return
        payment.status = "authorized"
        payment.authorized_amount = payment.amount
        payment.expires_at = now() + timedelta(seconds=self.config[payment.provider].auth_ttl_s)
        payment.touch()
        self._record(
            "authorization",
            payment.provider,
            object_id=payment.id,
            payment_id=payment.id,
            reference=payment.reference,
            key=payment.idempotency_key,
            amount=payment.amount,
            currency=payment.currency,
        )
        self._emit(payment.provider, "payment.authorized", payment.public())
        if capture:
            self._capture(payment, payment.amount, payment.idempotency_key)

    def _expire_if_due(self, payment: Payment, at: datetime | None = None) -> None:
        if payment.status != "authorized" or payment.expires_at is None:
            return
        if (at or now()) < payment.expires_at:
            return
        payment.status = "expired"
        payment.touch()
        self._record(
            "expiry",
            payment.provider,
            object_id=payment.id,
            payment_id=payment.id,
            reference=payment.reference,
            key=None,
            amount=payment.authorized_amount,
            currency=payment.currency,
        )
        self._emit(payment.provider, "payment.expired", payment.public())

    def _require(self, payment: Payment, *statuses: str) -> None:
        if payment.status not in statuses:
            raise Problem(
                409,
                "invalid_state",
                f"The payment is {payment.status}; this needs {' or '.join(statuses)}.",
                payment_status=payment.status,
            )

    def capture(self, provider: str, key: str, payment_id: str, body: CaptureRequest) -> Result:
        payment = self._payment(provider, payment_id)
        self._require(payment, "authorized")
        amount = body.amount or payment.authorized_amount
        if amount > payment.authorized_amount:
            raise Problem(
                422,
                "amount_exceeds_authorized",
                f"At most {payment.authorized_amount} can be captured.",
                capturable=payment.authorized_amount,
            )
        self._capture(payment, amount, key)
        return Result(200, payment.public())

    def _capture(self, payment: Payment, amount: int, key: str) -> None:
        fee = PROVIDERS[payment.provider].fees[payment.method].fee(amount)
        payment.status, payment.captured_amount, payment.fee = "captured", amount, fee
        payment.touch()
        self._record(
            "capture",
            payment.provider,
            object_id=payment.id,
            payment_id=payment.id,
            reference=payment.reference,
            key=key,
            amount=amount,
            currency=payment.currency,
            fee=fee,
        )
        self._emit(payment.provider, "payment.captured", payment.public())
        if self.faults[payment.provider].take_dispute():
            self._open_dispute(payment, amount, "fraudulent")

    def void(self, provider: str, key: str, payment_id: str) -> Result:
        payment = self._payment(provider, payment_id)
        self._require(payment, "authorized")
        payment.status = "voided"
        payment.touch()
        self._record(
            "void",
            provider,
            object_id=payment.id,
            payment_id=payment.id,
            reference=payment.reference,
            key=key,
            amount=payment.authorized_amount,
            currency=payment.currency,
        )
        self._emit(provider, "payment.voided", payment.public())
        return Result(200, payment.public())

    def refund(self, provider: str, key: str, body: RefundRequest) -> Result:
        payment = self._payment(provider, body.payment_id)
        self._require(payment, "captured", "partially_refunded")
        if payment.dispute is not None and payment.dispute.status in ("open", "lost"):
            raise Problem(409, "payment_disputed", "A disputed payment cannot be refunded.")
        refundable = payment.captured_amount - payment.refunded_amount
        amount = body.amount or refundable
        if amount > refundable:
            raise Problem(
                422,
                "amount_exceeds_refundable",
                f"At most {refundable} can be refunded.",
                refundable=refundable,
            )
        refund = Refund(
            new_id("re"), provider, payment.id, body.reference, amount, payment.currency
        )
        self._refunds[refund.id] = refund
        payment.refunded_amount += amount
        full = payment.refunded_amount == payment.captured_amount
        payment.status = "refunded" if full else "partially_refunded"
        payment.touch()
        self._record(
            "refund",
            provider,
            object_id=refund.id,
            payment_id=payment.id,
            reference=body.reference,
            key=key,
            amount=amount,
            currency=payment.currency,
        )
        self._emit(provider, "refund.succeeded", {**refund.public(), "payment": payment.public()})
        return Result(201, refund.public())

    # -- payouts -------------------------------------------------------------------------

    def payout(self, provider: str, key: str, body: PayoutRequest, draw: Draw) -> Result:
        p = self.provider(provider)
        self._check_currency(p, body.currency)
        account = body.destination.account_number.get_secret_value()
        _check_account(account)
        payout = Payout(
            id=new_id("po"),
            provider=provider,
            reference=body.reference,
            idempotency_key=key,
            amount=body.amount,
            currency=body.currency,
            fee=p.payout_fee,
            destination={
                "bank_code": body.destination.bank_code,
                "account_last4": account[-4:],
                "account_name": body.destination.account_name,
            },
        )
        self._payouts[payout.id] = payout
        failure = DECLINING_ACCOUNTS.get(account) or ("payout_rejected" if draw.decline else None)
        if self.config[provider].mode == "async":
            self._later(provider, lambda: self._settle_payout(payout, failure))
            return Result(202, payout.public())
        self._settle_payout(payout, failure)
        if payout.status == "failed":
            raise Problem(
                402,
                "payout_failed",
                f"The pay-out failed ({failure}).",
                failure_code=failure,
                payout=payout.public(),
            )
        return Result(201, payout.public())

    def _settle_payout(self, payout: Payout, failure: str | None) -> None:
        if payout.status != "pending":
            return
        if failure is not None:
            payout.status, payout.failure_code = "failed", failure
            payout.touch()
            self._emit(payout.provider, "payout.failed", payout.public())
            return
        payout.status = "paid"
        payout.touch()
        self._record(
            "payout",
            payout.provider,
            object_id=payout.id,
            payment_id=None,
            reference=payout.reference,
            key=payout.idempotency_key,
            amount=payout.amount,
            currency=payout.currency,
            fee=payout.fee,
        )
        self._emit(payout.provider, "payout.paid", payout.public())

    # -- disputes (admin) ----------------------------------------------------------------

    def open_dispute(
        self, provider: str, payment_id: str, amount: int | None, reason: str
    ) -> dict[str, Any]:
        payment = self._payment(provider, payment_id)
        self._require(payment, "captured", "partially_refunded")
        if payment.dispute is not None:
            raise Problem(409, "already_disputed", "The payment already has a dispute.")
        disputable = payment.captured_amount - payment.refunded_amount
        if amount is not None and amount > disputable:
            raise Problem(422, "amount_exceeds_disputable", f"At most {disputable}.")
        return self._open_dispute(payment, amount or disputable, reason).public()

    def _open_dispute(self, payment: Payment, amount: int, reason: str) -> Dispute:
        dispute = Dispute(
            new_id("dp"), payment.provider, payment.id, amount, payment.currency, reason
        )
        self._disputes[dispute.id] = dispute
        payment.dispute = dispute
        payment.touch()
        self._record(
            "dispute",
            payment.provider,
            object_id=dispute.id,
            payment_id=payment.id,
            reference=payment.reference,
            key=None,
            amount=amount,
            currency=payment.currency,
        )
        self._emit(
            payment.provider, "dispute.created", {**dispute.public(), "payment": payment.public()}
        )
        return dispute

    def resolve_dispute(self, dispute_id: str, outcome: Literal["won", "lost"]) -> dict[str, Any]:
        dispute = self._disputes.get(dispute_id)
        if dispute is None:
            raise not_found("dispute", dispute_id)
        if dispute.status != "open":
            raise Problem(409, "dispute_closed", f"The dispute is already {dispute.status}.")
        dispute.status = outcome
        dispute.updated_at = now()
        payment = self._payments[dispute.payment_id]
        payment.touch()
        self._record(
            f"dispute_{outcome}",
            dispute.provider,
            object_id=dispute.id,
            payment_id=payment.id,
            reference=payment.reference,
            key=None,
            amount=dispute.amount,
            currency=dispute.currency,
        )
        self._emit(
            dispute.provider,
            f"dispute.{outcome}",
            {**dispute.public(), "payment": payment.public()},
        )
        return dispute.public()

    # -- status queries ------------------------------------------------------------------

    def payment(self, provider: str, payment_id: str) -> dict[str, Any]:
        return self._payment(provider, payment_id).public()

    def payments(self, provider: str, reference: str) -> list[dict[str, Any]]:
        found = [
            p
            for p in self._payments.values()
            if p.provider == provider and p.reference == reference
        ]
        for payment in found:
            self._expire_if_due(payment)
        return [p.public() for p in found]

    def refunds(self, provider: str, reference: str) -> list[dict[str, Any]]:
        return [
            r.public()
            for r in self._refunds.values()
            if r.provider == provider and r.reference == reference
        ]

    def payouts(self, provider: str, reference: str) -> list[dict[str, Any]]:
        return [
            p.public()
            for p in self._payouts.values()
            if p.provider == provider and p.reference == reference
        ]

    def payout_by_id(self, provider: str, payout_id: str) -> dict[str, Any]:
        payout = self._payouts.get(payout_id)
        if payout is None or payout.provider != provider:
            raise not_found("payout", payout_id)
        return payout.public()


def _check_account(account: str) -> None:
    if not (account.isdigit() and 6 <= len(account) <= 20):
        raise Problem(422, "invalid_account_number", "An account number is 6 to 20 digits.")

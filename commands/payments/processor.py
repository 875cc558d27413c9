"""The payment processor: the process manager that drives payments and pay-outs.

It never holds state of its own that matters: every step is first recorded on the payment
through the engine (an attempt before the authorization call, an operation before the
capture, void or refund call), and every answer after. A crash at any point therefore
leaves the payment saying what was in flight, and ``resume`` carries on from there:

- an attempt whose outcome is unknown (a timeout, a dropped answer, a crash while calling)
  is settled by a status query at that provider before anything else; no other provider is
  tried while it is unknown, so a customer is never charged twice;
- an operation in flight is sent again with the same idempotency key (the provider answers
  what it did the first time);
- provider calls carry idempotency keys derived from the payment and the attempt or
  operation: ``{payment}:{attempt}``, ``{payment}:{kind}:{operation}``, ``{payout}``.

Retryable failures (``ERROR``, ``UNKNOWN``) are retried with exponential backoff and jitter
up to the policy's bound, declines and rejections never; when the bound is reached the
payment (or pay-out) goes to the dead-letter list for an admin to inspect and replay.
Circuit breakers see every call; routing skips a provider whose breaker is open (failover).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from uuid import UUID

from commands.model import (
    ApplyPayoutUpdate,
    ApplyProviderUpdate,
    Command,
    CommandRequest,
    FailPayment,
    FailPaymentOperation,
    ProviderCall,
    RecordPaymentCall,
    StartPaymentAttempt,
)
from commands.payments.ports import (
    CallOutcome,
    CallResult,
    ChargeRequest,
    PaymentOperation,
    PaymentProvider,
    PayoutRequest,
    PayoutUpdate,
    StatusResult,
    WebhookEvent,
)
from commands.payments.retry import RetryPolicy
from domain.payment import (
    ATTEMPT_ERROR,
    AUTHORIZED,
    AUTOMATIC,
    CREATED,
    OP_CAPTURE,
    OP_REFUND,
    OP_VOID,
    PROCESSING,
    Payment,
    ProviderUpdate,
)
from domain.payout import PAID, Payout
from domain.principal import Principal

log = logging.getLogger(__name__)

SYSTEM = Principal("system", "admin")


class Executor(Protocol):
    """The ledger engine (``commands.engine.LedgerEngine``)."""

    def execute(self, request: CommandRequest) -> Any: ...


class Route(Protocol):
    @property
    def provider(self) -> str | None: ...

    def describe(self) -> str: ...


class RouterPort(Protocol):
    def route(self, method: str, currency: str, amount: int, exclude: set[str]) -> Route: ...


class HealthPort(Protocol):
    """Circuit breakers: told of every call (``commands.payments.breaker.BreakerBoard``)."""

    def record(self, provider: str, ok: bool, latency_ms: float) -> None: ...

    def release(self, provider: str) -> None: ...


class DeadLetterPort(Protocol):
    def add(self, kind: str, subject_id: UUID, reason: str, detail: str) -> None: ...


# Outcomes that say the provider worked (a decline is an answer, not a failure).
_HEALTHY = (CallOutcome.OK, CallOutcome.DECLINED, CallOutcome.REJECTED, CallOutcome.PENDING)


class PaymentProcessor:
    def __init__(
        self,
        engine: Executor,
        load: Callable[[UUID], Any],
        providers: Mapping[str, PaymentProvider],
        router: RouterPort,
        health: HealthPort,
        *,
        dead_letters: DeadLetterPort | None = None,
        max_attempts: int = 4,
        backoff: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        budget_s: float = 20.0,
    ) -> None:
        self.engine = engine
        self.load = load
        self.providers = providers
        self.router = router
        self.health = health
        self.dead_letters = dead_letters
        self.max_attempts = max_attempts
        self.backoff = backoff or RetryPolicy(max_attempts=4, base_delay_s=0.05, max_delay_s=2.0)
        self.sleep = sleep
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self.budget_s = budget_s

    # ---- plumbing ---------------------------------------------------------------------------

    def _run(self, command: Command, correlation_id: str) -> Any:
        return self.engine.execute(CommandRequest(command, SYSTEM, correlation_id))

    def _observe(self, provider: str, result: CallResult | StatusResult) -> None:
        self.health.record(provider, result.outcome in _HEALTHY, result.latency_ms)

    @staticmethod
    def _call(
        operation: str, provider: str, r: CallResult | StatusResult, decision: str = ""
    ) -> ProviderCall:
        code = r.code if isinstance(r, CallResult) else ""
        return ProviderCall(
            operation, provider, r.outcome.value, r.latency_ms, code, r.detail, decision
        )

    def _dead_letter(self, kind: str, subject: UUID, reason: str, detail: str = "") -> None:
        log.warning("dead letter: %s %s: %s", kind, subject, reason)
        if self.dead_letters is not None:
            self.dead_letters.add(kind, subject, reason, detail)

    def _payment(self, payment_id: UUID) -> Payment:
        payment = self.load(payment_id)
        assert isinstance(payment, Payment)
        return payment

    # ---- authorization ------------------------------------------------------------------------

    def authorize(self, payment_id: UUID, correlation_id: str) -> Payment:
        """Route and authorize (or charge) a new payment until it has an answer, it has
        failed, its outcome is left unknown for later, or the budget is spent."""
        deadline = time.monotonic() + self.budget_s
        tries = 0
        while True:
            payment = self._payment(payment_id)
            if payment.outcome_unknown:
                if not self._settle_unknown(payment, correlation_id):
                    return self._payment(payment_id)
                continue
            if payment.status not in (CREATED, PROCESSING):
                return self._confirm_capture(payment, correlation_id)
            if len(payment.attempts) >= self.max_attempts:
                self._dead_letter(
                    "payment", payment.id, "attempts exhausted", f"{len(payment.attempts)} attempts"
                )
                return payment
            if time.monotonic() > deadline:
                return payment
            # After a definite error, fail over to another eligible provider if there is one.
            # Only providers that can charge the customer's token are candidates.
            errored = {a.provider for a in payment.attempts if a.outcome == ATTEMPT_ERROR}
            foreign = {
                n for n, p in self.providers.items() if not p.accepts_token(payment.token_for(n))
            }
            route = self.router.route(
                payment.method, payment.currency, payment.amount, errored | foreign
            )
            if route.provider is None and errored:
                route = self.router.route(payment.method, payment.currency, payment.amount, foreign)
            name = route.provider
            if name is None:
                self._run(FailPayment(payment.id, "no eligible provider"), correlation_id)
                continue
            call = ProviderCall("route", name, "chosen", decision=route.describe())
            started = self._run(StartPaymentAttempt(payment.id, name, call), correlation_id)
            if started.status >= 400:
                self.health.release(name)  # the call slot the route reserved goes unused
                continue  # another worker moved it: look again
            number = started.body["attempt"]
            result = self.providers[name].authorize(
                ChargeRequest(
                    reference=str(payment.id),
                    idempotency_key=f"{payment.id}:{number}",
                    amount=payment.amount,
                    currency=payment.currency,
                    method=payment.method,
                    token=payment.token_for(name),
                    capture=payment.capture_method == AUTOMATIC,
                )
            )
            self._observe(name, result)
            tries += 1
            self._after_authorize(payment, name, result, tries, correlation_id)

    def _after_authorize(
        self, payment: Payment, name: str, result: CallResult, tries: int, corr: str
    ) -> None:
        outcome = result.outcome
        if outcome in (CallOutcome.OK, CallOutcome.DECLINED) and isinstance(
            result.update, ProviderUpdate
        ):
            call = self._call("authorize", name, result)
            self._run(ApplyProviderUpdate(payment.id, result.update, call), corr)
        elif outcome is CallOutcome.REJECTED:
            call = self._call("authorize", name, result, "not retryable: fail")
            self._run(RecordPaymentCall(payment.id, call, attempt_error=result.code), corr)
            self._run(FailPayment(payment.id, result.code or "rejected"), corr)
        elif outcome is CallOutcome.ERROR:
            wait = self.backoff.delay(tries, self.rng)
            call = self._call("authorize", name, result, f"retry in {wait * 1000:.0f} ms")
            self._run(
                RecordPaymentCall(payment.id, call, attempt_error=result.code or "error"), corr
            )
            self.sleep(wait)
        elif outcome is CallOutcome.PENDING:
            call = self._call("authorize", name, result, "await webhook or status query")
            self._run(RecordPaymentCall(payment.id, call), corr)
        else:  # UNKNOWN (or an OK without an update): only a status query may settle it
            call = self._call("authorize", name, result, "outcome unknown: query status")
            self._run(RecordPaymentCall(payment.id, call), corr)

    def _confirm_capture(self, payment: Payment, corr: str) -> Payment:
        """An automatic-capture payment that stands only authorized: the provider was asked
        to capture, so one status query says whether it did. This is the case when the
        provider's own authorized webhook settled an unknown outcome before its captured
        webhook arrived; without the query the caller would be answered ``authorized``."""
        if payment.status != AUTHORIZED or payment.capture_method != AUTOMATIC:
            return payment
        name = payment.provider
        provider = self.providers.get(name) if name is not None else None
        if name is None or provider is None:
            return payment
        status = provider.payment_status(str(payment.id))
        self._observe(name, status)
        if status.outcome is CallOutcome.OK and status.found:
            self._apply_status(payment, name, status, corr)
        return self._payment(payment.id)

    def _settle_unknown(self, payment: Payment, corr: str) -> bool:
        """Ask the provider what became of the last attempt; answers whether it is settled
        (then the loop goes on), or still unknown (left for a webhook or a later pass)."""
        name = payment.provider
        assert name is not None
        provider = self.providers.get(name)
        if provider is None:
            self._dead_letter("payment", payment.id, f"unknown provider {name}")
            return False
        for tries in range(1, self.backoff.max_attempts + 1):
            status = provider.payment_status(str(payment.id))
            self._observe(name, status)
            if status.outcome is CallOutcome.OK:
                return self._apply_status(payment, name, status, corr)
            wait = self.backoff.delay(tries, self.rng)
            decision = f"status query failed: retry in {wait * 1000:.0f} ms"
            self._run(
                RecordPaymentCall(payment.id, self._call("status", name, status, decision)), corr
            )
            self.sleep(wait)
        return False

    def _apply_status(self, payment: Payment, name: str, status: StatusResult, corr: str) -> bool:
        if not status.found:
            call = self._call("status", name, status, "never reached the provider: retry")
            self._run(RecordPaymentCall(payment.id, call, attempt_error="not_found"), corr)
            return True
        updates = [u for u in status.updates if isinstance(u, ProviderUpdate)]
        record: ProviderCall | None = self._call("status", name, status, f"{len(updates)} updates")
        for update in updates:
            self._run(ApplyProviderUpdate(payment.id, update, record), corr)
            record = None
        if record is not None:
            self._run(RecordPaymentCall(payment.id, record), corr)
        return not self._payment(payment.id).outcome_unknown

    # ---- operations (capture, void, refund) ----------------------------------------------------

    def run_operation(self, payment_id: UUID, operation_id: str, correlation_id: str) -> Payment:
        """Send a recorded operation to the provider (again, after a crash: same key)."""
        payment = self._payment(payment_id)
        op = payment.operations.get(operation_id)
        if op is None or payment.provider is None:
            return payment
        name = payment.provider
        provider = self.providers[name]
        request = PaymentOperation(
            payment_reference=str(payment.id),
            provider_ref=payment.provider_ref,
            idempotency_key=f"{payment.id}:{op.kind}:{operation_id}",
            currency=payment.currency,
            amount=op.amount if op.kind != OP_VOID else None,
            reference=operation_id if op.kind == OP_REFUND else None,
        )
        call_provider = {
            OP_CAPTURE: provider.capture,
            OP_VOID: provider.void,
            OP_REFUND: provider.refund,
        }[op.kind]
        for tries in range(1, self.backoff.max_attempts + 1):
            result = call_provider(request)
            self._observe(name, result)
            if result.outcome is CallOutcome.OK and isinstance(result.update, ProviderUpdate):
                call = self._call(op.kind, name, result)
                self._run(ApplyProviderUpdate(payment.id, result.update, call), correlation_id)
                return self._payment(payment_id)
            if result.outcome in (CallOutcome.DECLINED, CallOutcome.REJECTED):
                call = self._call(op.kind, name, result, "refused: operation failed")
                self._run(
                    FailPaymentOperation(
                        payment.id, operation_id, result.code or "refused", result.detail, call
                    ),
                    correlation_id,
                )
                return self._payment(payment_id)
            if result.outcome is CallOutcome.PENDING:
                call = self._call(op.kind, name, result, "await webhook")
                self._run(RecordPaymentCall(payment.id, call), correlation_id)
                return self._payment(payment_id)
            wait = self.backoff.delay(tries, self.rng)
            call = self._call(
                op.kind, name, result, f"retry with the same key in {wait * 1000:.0f} ms"
            )
            self._run(RecordPaymentCall(payment.id, call), correlation_id)
            self.sleep(wait)
        self._dead_letter("payment", payment.id, f"{op.kind} {operation_id}: retries exhausted")
        return self._payment(payment_id)

    # ---- resuming after a crash, a timeout or a pending answer -------------------------------

    def reconcile(self, payment_id: UUID, correlation_id: str) -> Payment | None:
        """Apply what the provider's status query says, in its order (updates already
        recorded are ignored as duplicates or stale)."""
        try:
            payment = self._payment(payment_id)
        except Exception:
            return None
        provider = self.providers.get(payment.provider or "")
        if provider is None:
            return payment
        status = provider.payment_status(str(payment.id))
        self._observe(provider.name, status)
        if status.outcome is CallOutcome.OK and status.found:
            self._apply_status(payment, provider.name, status, correlation_id)
        return self._payment(payment_id)

    def resume(self, payment_id: UUID, correlation_id: str) -> Payment:
        payment = self._payment(payment_id)
        for operation_id in list(payment.operations):
            payment = self.run_operation(payment_id, operation_id, correlation_id)
        if payment.status in (CREATED, PROCESSING):
            payment = self.authorize(payment_id, correlation_id)
        return payment

    # ---- pay-outs ----------------------------------------------------------------------------

    def payout(self, payout_id: UUID, correlation_id: str) -> Payout:
        """Send a pay-out (again: its id is the idempotency key) until it has an answer."""
        payout = self.load(payout_id)
        assert isinstance(payout, Payout)
        if payout.settled:
            return payout
        name = payout.provider
        provider = self.providers[name]
        if payout.calls:  # sent before: ask first
            status = provider.payout_status(str(payout.id))
            self._observe(name, status)
            if status.outcome is CallOutcome.OK and status.found:
                done = [u for u in status.updates if isinstance(u, PayoutUpdate)]
                call = self._call("payout_status", name, status)
                final = [u for u in done if u.status in ("paid", "failed")]
                if final:
                    self._apply_payout(payout.id, final[-1], call, correlation_id)
                    return self._reload_payout(payout_id)
                self._run(ApplyPayoutUpdate(payout.id, None, call), correlation_id)
                return self._reload_payout(payout_id)
        request = PayoutRequest(
            reference=str(payout.id),
            idempotency_key=str(payout.id),
            amount=payout.amount,
            currency=payout.currency,
            destination=payout.destination,
        )
        for tries in range(1, self.backoff.max_attempts + 1):
            result = provider.payout(request)
            self._observe(name, result)
            if result.outcome in (CallOutcome.OK, CallOutcome.DECLINED) and isinstance(
                result.update, PayoutUpdate
            ):
                self._apply_payout(
                    payout.id, result.update, self._call("payout", name, result), correlation_id
                )
                return self._reload_payout(payout_id)
            if result.outcome is CallOutcome.REJECTED:
                update = PayoutUpdate("failed", reason=result.code or "rejected")
                self._apply_payout(
                    payout.id, update, self._call("payout", name, result), correlation_id
                )
                return self._reload_payout(payout_id)
            if result.outcome is CallOutcome.PENDING:
                call = self._call("payout", name, result, "await webhook")
                self._run(ApplyPayoutUpdate(payout.id, None, call), correlation_id)
                return self._reload_payout(payout_id)
            wait = self.backoff.delay(tries, self.rng)
            call = self._call(
                "payout", name, result, f"retry with the same key in {wait * 1000:.0f} ms"
            )
            self._run(ApplyPayoutUpdate(payout.id, None, call), correlation_id)
            self.sleep(wait)
        self._dead_letter("payout", payout.id, "retries exhausted")
        return self._reload_payout(payout_id)

    def _apply_payout(
        self, payout_id: UUID, update: PayoutUpdate, call: ProviderCall | None, corr: str
    ) -> None:
        status = update.status if update.status in (PAID, "failed") else None
        self._run(
            ApplyPayoutUpdate(
                payout_id,
                status,
                call,
                provider_event_id=update.provider_event_id,
                provider_ref=update.provider_payout_id,
                fee=update.fee,
                reason=update.reason,
            ),
            corr,
        )

    def _reload_payout(self, payout_id: UUID) -> Payout:
        payout = self.load(payout_id)
        assert isinstance(payout, Payout)
        return payout

    # ---- webhooks ----------------------------------------------------------------------------

    def handle_webhook(self, events: list[WebhookEvent], correlation_id: str) -> dict[str, int]:
        """Apply verified, normalised webhook events; answers counts by what came of them.
        Events for references that are not ours are ignored (and counted)."""
        counts: dict[str, int] = {}
        for event in events:
            try:
                subject = UUID(event.reference)
            except ValueError:
                counts["ignored"] = counts.get("ignored", 0) + 1
                continue
            corr = f"{correlation_id}:{event.event_id}"
            if event.kind == "payout" and isinstance(event.update, PayoutUpdate):
                out = self._run(
                    ApplyPayoutUpdate(
                        subject,
                        event.update.status if event.update.status in (PAID, "failed") else None,
                        provider_event_id=event.update.provider_event_id or event.event_id,
                        provider_ref=event.update.provider_payout_id,
                        fee=event.update.fee,
                        reason=event.update.reason,
                    ),
                    corr,
                )
                key = "applied" if out.status < 400 and out.body.get("applied") else "ignored"
            elif isinstance(event.update, ProviderUpdate):
                out = self._run(ApplyProviderUpdate(subject, event.update), corr)
                key = out.body.get("update_outcome", "ignored") if out.status < 400 else "ignored"
                if key in ("out_of_order", "conflict"):
                    # A later state whose predecessor has not arrived (or a contradiction):
                    # ask the provider for the whole story and apply it in order.
                    self.reconcile(subject, corr)
            else:
                key = "ignored"
            counts[key] = counts.get(key, 0) + 1
        return counts

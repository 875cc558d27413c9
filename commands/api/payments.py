"""Payments, refunds, disputes and pay-outs; PSP webhooks.

Each payment request runs as a flow (``Writer.flow``): the payment (or operation) is
recorded first, then the provider is called, then the answer is stored under the request's
Idempotency-Key. Ids are derived from the merchant and the key, so a retry after a crash
resumes the same payment instead of creating another.
"""

from __future__ import annotations

import asyncio
from uuid import UUID

from fastapi import APIRouter, Request, Response

from commands.api.deps import (
    CommandWriter,
    CurrentPrincipal,
    Writer,
    json_response,
    request_hash,
)
from commands.api.schemas import (
    DisputeEvidence,
    Empty,
    PaymentCapture,
    PaymentCreate,
    PayoutCreate,
    RefundCreate,
)
from commands.engine import Outcome
from commands.handlers import derived_id
from commands.model import (
    AcceptDispute,
    CommandRequest,
    CreatePayment,
    CreatePayout,
    RequestPaymentOperation,
    ShowPayment,
    ShowPayout,
    SubmitDisputeEvidence,
)
from commands.payments.ports import WebhookRejected
from commands.payments.service import PaymentServices
from commands.problems import RequestProblem
from domain.money import Money

router = APIRouter(tags=["payments"])
webhooks = APIRouter(tags=["webhooks"])


def _services(request: Request) -> PaymentServices:
    services: PaymentServices | None = request.app.state.ledger.payments
    if services is None:
        raise RequestProblem(
            "payments-not-configured", "Payments are not configured", 503, "no providers"
        )
    return services


@router.post("/v1/payments", status_code=201, summary="Charge a customer through a provider")
async def create_payment(body: PaymentCreate, writer: CommandWriter) -> Response:
    services = _services(writer.request)
    payment_id = derived_id("payment", writer.principal.merchant_id, writer.key)
    raw = await writer.request.body()
    command = CreatePayment(
        payment_id=payment_id,
        wallet_id=body.wallet_id,
        amount=Money.parse(body.amount, body.currency),
        method=body.method,
        payment_method_token=body.payment_method_token,
        capture_method=body.capture_method,
        fingerprint=_fingerprint(writer, raw),
        metadata=dict(body.metadata),
        provider_tokens=dict(body.payment_method_tokens),
    )
    return await writer.flow(
        command,
        lambda corr: services.processor.authorize(payment_id, corr),
        lambda _: ShowPayment(payment_id, 201),
    )


def _fingerprint(writer: Writer, raw: bytes) -> str:
    return request_hash(writer.request.method, writer.request.url.path, raw)


async def _operation(
    writer: Writer, payment_id: UUID, kind: str, amount: str | None, currency: str | None
) -> Response:
    services = _services(writer.request)
    operation_id = str(derived_id("operation", writer.principal.merchant_id, writer.key))
    raw = await writer.request.body()
    command = RequestPaymentOperation(
        payment_id=payment_id,
        kind=kind,
        operation_id=operation_id,
        fingerprint=_fingerprint(writer, raw),
        amount=amount,
        currency=currency,
    )

    def answer(out: Outcome) -> ShowPayment:
        status = 201 if kind == "refund" else 200
        if "operation_id" not in out.body:  # done at once (a cancel before any call)
            return ShowPayment(payment_id, status)
        return ShowPayment(payment_id, status, operation_id)

    return await writer.flow(
        command,
        lambda corr: services.processor.run_operation(payment_id, operation_id, corr),
        answer,
    )


@router.post("/v1/payments/{payment_id}/capture", summary="Capture all or part of a payment")
async def capture(
    payment_id: UUID, writer: CommandWriter, body: PaymentCapture | None = None
) -> Response:
    amount, currency = (body.amount, body.currency) if body else (None, None)
    return await _operation(writer, payment_id, "capture", amount, currency)


@router.post("/v1/payments/{payment_id}/cancel", summary="Cancel (void) before capture")
async def cancel(payment_id: UUID, writer: CommandWriter, body: Empty | None = None) -> Response:
    return await _operation(writer, payment_id, "cancel", None, None)


@router.post("/v1/payments/{payment_id}/refunds", status_code=201, summary="Refund a payment")
async def refund(
    payment_id: UUID, writer: CommandWriter, body: RefundCreate | None = None
) -> Response:
    amount, currency = (body.amount, body.currency) if body else (None, None)
    return await _operation(writer, payment_id, "refund", amount, currency)


@router.get("/v1/payments/{payment_id}", summary="A payment as the ledger has it now")
async def get_payment(payment_id: UUID, request: Request, principal: CurrentPrincipal) -> Response:
    engine = request.app.state.ledger.engine
    req = CommandRequest(ShowPayment(payment_id), principal, "get-payment")
    return json_response(await asyncio.wrap_future(engine.submit(req)))


@router.post("/v1/disputes/{dispute_id}/accept", summary="Accept (lose) a dispute")
async def accept_dispute(
    dispute_id: UUID, writer: CommandWriter, body: Empty | None = None
) -> Response:
    return await writer.run(AcceptDispute(dispute_id))


@router.post("/v1/disputes/{dispute_id}/evidence", summary="Submit evidence for a dispute")
async def dispute_evidence(
    dispute_id: UUID, body: DisputeEvidence, writer: CommandWriter
) -> Response:
    return await writer.run(SubmitDisputeEvidence(dispute_id, dict(body.evidence)))


@router.post("/v1/payouts", status_code=201, summary="Pay out to a bank account")
async def create_payout(body: PayoutCreate, writer: CommandWriter) -> Response:
    services = _services(writer.request)
    payout_id = derived_id("payout", writer.principal.merchant_id, writer.key)
    raw = await writer.request.body()
    provider = services.payout_provider(body.currency, body.provider)
    command = CreatePayout(
        payout_id=payout_id,
        wallet_id=body.wallet_id,
        amount=Money.parse(body.amount, body.currency),
        provider=provider,
        destination=body.destination.model_dump(exclude_none=True),
        fingerprint=_fingerprint(writer, raw),
        metadata=dict(body.metadata),
    )
    return await writer.flow(
        command,
        lambda corr: services.processor.payout(payout_id, corr),
        lambda _: ShowPayout(payout_id, 201),
    )


@webhooks.post("/v1/webhooks/psp/{provider}", summary="A provider's signed webhook")
async def psp_webhook(provider: str, request: Request) -> Response:
    services = _services(request)
    adapter = services.providers.get(provider)
    if adapter is None:
        raise RequestProblem("not-found", "Not found", 404, f"unknown provider {provider!r}")
    raw = await request.body()
    try:
        events = adapter.parse_webhook(dict(request.headers), raw)
    except WebhookRejected as exc:
        raise RequestProblem(
            "webhook-rejected", "Webhook rejected", 400, f"signature or body rejected: {exc}"
        ) from None
    corr = f"webhook:{provider}"
    counts = await asyncio.to_thread(services.processor.handle_webhook, events, corr)
    return json_response(Outcome(200, {"received": len(events), "outcomes": counts}))


def _admin(principal: CurrentPrincipal) -> None:
    if not principal.is_admin:
        raise RequestProblem("forbidden", "Forbidden", 403, "admin keys only")


@router.get("/v1/admin/dead-letters", summary="Payments and pay-outs the engine gave up on")
async def dead_letters(request: Request, principal: CurrentPrincipal) -> Response:
    _admin(principal)
    letters = _services(request).dead_letters
    rows = await asyncio.to_thread(letters.list_open, 500) if letters else []
    return json_response(Outcome(200, {"dead_letters": rows}))


@router.post("/v1/admin/dead-letters/{letter_id}/replay", summary="Drive a dead letter again")
async def replay_dead_letter(
    letter_id: int, request: Request, principal: CurrentPrincipal
) -> Response:
    _admin(principal)
    letters = _services(request).dead_letters
    result = await asyncio.to_thread(letters.replay, letter_id) if letters else None
    if result is None:
        raise RequestProblem("not-found", "Not found", 404, f"no dead letter {letter_id}")
    return json_response(Outcome(200, result))

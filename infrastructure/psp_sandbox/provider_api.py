"""The provider API, the same under /zenith, /ramp and /monnify."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query, Request
from starlette.responses import Response

from infrastructure.psp_sandbox.faults import Draw
from infrastructure.psp_sandbox.problems import Problem
from infrastructure.psp_sandbox.responses import json_response, outcome_response
from infrastructure.psp_sandbox.sandbox import Result, Sandbox
from infrastructure.psp_sandbox.schemas import (
    AuthorizationRequest,
    CaptureRequest,
    PayoutRequest,
    RefundRequest,
    TokenRequest,
)

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]
Reference = Annotated[str, Query(min_length=1, max_length=200)]


def _required(key: str | None) -> str:
    if not key:
        raise Problem(400, "idempotency_key_missing", "Send an Idempotency-Key header.")
    return key


async def _request_identity(request: Request) -> bytes:
    """Method, path and the body as canonical JSON: what a key's repeat must match."""
    raw = await request.body()
    body = orjson.dumps(orjson.loads(raw) if raw else None, option=orjson.OPT_SORT_KEYS)
    return f"{request.method} {request.url.path}\n".encode() + body


def provider_router(sandbox: Sandbox) -> APIRouter:
    router = APIRouter(prefix="/{provider}", tags=["provider"])

    async def enter(provider: str) -> None:
        sandbox.provider(provider)
        await sandbox.latency(provider)

    async def money_call(
        provider: str,
        request: Request,
        key: str | None,
        operation: Callable[[str, Draw], Result],
    ) -> Response:
        """A money-moving call: provider checks and latency, a required idempotency key,
        the operation run once per key (a repeat replays), the answer or a fault."""
        await enter(provider)
        k = _required(key)
        outcome = await sandbox.mutate(
            provider, k, await _request_identity(request), lambda draw: operation(k, draw)
        )
        return await outcome_response(outcome)

    @router.post("/tokens", status_code=201)
    async def create_token(
        provider: str, body: TokenRequest, request: Request, key: IdempotencyKey = None
    ) -> Response:
        """Exchange test payment details for an opaque token (Idempotency-Key optional)."""
        await enter(provider)
        if not key:
            result = sandbox.tokenize(provider, body)
            return json_response(result.body, result.status)
        outcome = await sandbox.mutate(
            provider,
            key,
            await _request_identity(request),
            lambda _: sandbox.tokenize(provider, body),
            faults=False,
        )
        return await outcome_response(outcome)

    @router.post("/authorizations", status_code=201)
    async def authorize(
        provider: str, body: AuthorizationRequest, request: Request, key: IdempotencyKey = None
    ) -> Response:
        """Authorize (and with ``capture: true`` capture) an amount on a token."""
        return await money_call(
            provider, request, key, lambda k, draw: sandbox.authorize(provider, k, body, draw)
        )

    @router.post("/authorizations/{payment_id}/capture")
    async def capture(
        provider: str,
        payment_id: str,
        request: Request,
        body: CaptureRequest | None = None,
        key: IdempotencyKey = None,
    ) -> Response:
        """Capture all of an authorization or part of it (the rest is released)."""
        wanted = body or CaptureRequest()
        return await money_call(
            provider, request, key, lambda k, _: sandbox.capture(provider, k, payment_id, wanted)
        )

    @router.post("/authorizations/{payment_id}/void")
    async def void(
        provider: str, payment_id: str, request: Request, key: IdempotencyKey = None
    ) -> Response:
        """Release an uncaptured authorization."""
        return await money_call(
            provider, request, key, lambda k, _: sandbox.void(provider, k, payment_id)
        )

    @router.post("/refunds", status_code=201)
    async def refund(
        provider: str, body: RefundRequest, request: Request, key: IdempotencyKey = None
    ) -> Response:
        """Refund all that is left of a captured payment, or part of it."""
        return await money_call(
            provider, request, key, lambda k, _: sandbox.refund(provider, k, body)
        )

    @router.post("/payouts", status_code=201)
    async def payout(
        provider: str, body: PayoutRequest, request: Request, key: IdempotencyKey = None
    ) -> Response:
        """Send money to a bank account."""
        return await money_call(
            provider, request, key, lambda k, draw: sandbox.payout(provider, k, body, draw)
        )

    @router.get("/payments")
    async def payments_by_reference(provider: str, reference: Reference) -> Response:
        """Status query by our reference: every payment made with it, oldest first."""
        await enter(provider)
        return json_response({"object": "list", "data": sandbox.payments(provider, reference)})

    @router.get("/payments/{payment_id}")
    async def payment(provider: str, payment_id: str) -> Response:
        await enter(provider)
        return json_response(sandbox.payment(provider, payment_id))

    @router.get("/refunds")
    async def refunds_by_reference(provider: str, reference: Reference) -> Response:
        await enter(provider)
        return json_response({"object": "list", "data": sandbox.refunds(provider, reference)})

    @router.get("/payouts")
    async def payouts_by_reference(provider: str, reference: Reference) -> Response:
        await enter(provider)
        return json_response({"object": "list", "data": sandbox.payouts(provider, reference)})

    @router.get("/payouts/{payout_id}")
    async def payout_status(provider: str, payout_id: str) -> Response:
        await enter(provider)
        return json_response(sandbox.payout_by_id(provider, payout_id))

    return router

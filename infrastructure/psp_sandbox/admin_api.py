"""The admin API (paths under /_): faults, configuration, the sandbox's own ledger, webhook
deliveries, disputes and reset. Unauthenticated: the sandbox listens on loopback."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from infrastructure.psp_sandbox.faults import Faults
from infrastructure.psp_sandbox.providers import PROVIDERS
from infrastructure.psp_sandbox.responses import json_response
from infrastructure.psp_sandbox.sandbox import Sandbox
from infrastructure.psp_sandbox.schemas import (
    DisputeRequest,
    DisputeResolution,
    ProviderConfigUpdate,
)

Filter = Annotated[str | None, Query(max_length=200)]


def admin_router(sandbox: Sandbox) -> APIRouter:
    router = APIRouter(tags=["admin"])

    @router.get("/_health")
    async def health() -> Response:
        return json_response({"status": "ok", "providers": sorted(PROVIDERS)})

    @router.get("/_config")
    async def config() -> Response:
        """Each provider's methods, currencies, fees and current configuration."""
        return json_response(
            {
                name: {**p.describe(), **sandbox.config[name].model_dump()}
                for name, p in PROVIDERS.items()
            }
        )

    @router.put("/_config/{provider}")
    async def configure(provider: str, update: ProviderConfigUpdate) -> Response:
        """Change mode (sync/async), async delay, webhook URL or secret, authorization TTL."""
        return json_response(sandbox.configure(provider, update).model_dump())

    @router.get("/_faults")
    async def faults() -> Response:
        return json_response({name: s.faults.model_dump() for name, s in sandbox.faults.items()})

    @router.put("/_faults/{provider}")
    async def set_faults(provider: str, faults: Faults) -> Response:
        """Replace the provider's faults (and restart its random streams from ``seed``)."""
        sandbox.set_faults(provider, faults)
        return json_response(faults.model_dump())

    @router.delete("/_faults", status_code=204)
    async def reset_faults() -> Response:
        sandbox.reset_faults()
        return Response(status_code=204)

    @router.get("/_ledger")
    async def ledger(
        provider: Filter = None, kind: Filter = None, reference: Filter = None
    ) -> Response:
        """Every authorization, capture, void, refund, payout and dispute performed."""
        entries = [
            e
            for e in sandbox.ledger
            if (provider is None or e["provider"] == provider)
            and (kind is None or e["kind"] == kind)
            and (reference is None or e["reference"] == reference)
        ]
        return json_response({"object": "list", "data": entries})

    @router.get("/_events")
    async def events(provider: Filter = None) -> Response:
        """Every webhook event emitted, in emission order."""
        data = [e for e in sandbox.events if provider is None or e["provider"] == provider]
        return json_response({"object": "list", "data": data})

    @router.get("/_webhooks")
    async def webhooks() -> Response:
        """Every delivery attempt series, in sending order, and how many wait to be sent."""
        return json_response(
            {"pending": sandbox.webhooks.pending(), "deliveries": sandbox.webhooks.deliveries}
        )

    @router.post("/_disputes", status_code=201)
    async def open_dispute(body: DisputeRequest) -> Response:
        """The cardholder disputes a captured payment: a ``dispute.created`` webhook follows."""
        dispute = sandbox.open_dispute(body.provider, body.payment_id, body.amount, body.reason)
        return json_response(dispute, 201)

    @router.post("/_disputes/{dispute_id}/resolve")
    async def resolve_dispute(dispute_id: str, body: DisputeResolution) -> Response:
        """Close a dispute as won or lost: ``dispute.won`` / ``dispute.lost`` follows."""
        return json_response(sandbox.resolve_dispute(dispute_id, body.outcome))

    @router.post("/_reset", status_code=204)
    async def reset() -> Response:
        """Forget everything: state, faults and configuration changes."""
        sandbox.reset()
        return Response(status_code=204)

    return router

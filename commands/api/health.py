"""GET /v1/health: is the service able to reach its database, and how far are projections."""

from __future__ import annotations

from typing import Any, Protocol

import orjson
from fastapi import APIRouter, Request, Response

router = APIRouter(prefix="/v1", tags=["health"])


class HealthProbe(Protocol):
    def __call__(self) -> dict[str, Any]: ...


@router.get("/health", summary="Liveness and readiness")
async def health(request: Request) -> Response:
    probe: HealthProbe = request.app.state.health_probe
    try:
        report = probe()
        status = 200
    except Exception as exc:  # the database is unreachable: report, don't crash
        report = {"status": "unavailable", "error": type(exc).__name__}
        status = 503
    return Response(orjson.dumps(report), status_code=status, media_type="application/json")

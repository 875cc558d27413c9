"""GET /problems/{code}: the human page behind each problem ``type`` URI."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from domain import errors

router = APIRouter(tags=["problems"], include_in_schema=False)

_EXTRA = {
    "idempotency-key-missing": "Every POST needs an Idempotency-Key header.",
    "idempotency-key-reused": "The key was used before with a different request.",
    "idempotency-key-in-use": "A request with this key is still in flight.",
    "unauthorized": "Missing, unknown or revoked API key.",
    "payload-too-large": "The request body is larger than allowed.",
    "position-not-reached": "The read models did not reach Ledger-Min-Position in time.",
    "batch-failed": "Every transfer of a non-atomic batch failed; nothing was written.",
}


def _catalogue() -> dict[str, str]:
    out = dict(_EXTRA)
    for obj in vars(errors).values():
        if isinstance(obj, type) and issubclass(obj, errors.LedgerError):
            out.setdefault(obj.code, obj.title)
    return out


@router.get("/problems/{code}", response_class=PlainTextResponse)
async def problem_doc(code: str) -> str:
    return _catalogue().get(code, "Unknown problem type.")

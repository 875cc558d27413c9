"""Standard Webhooks signing and verification (the ``standardwebhooks`` package).

Headers: ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and
``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` keyed with the
base64-decoded part of a ``whsec_...`` secret."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

__all__ = ["WebhookVerificationError", "new_secret", "sign_webhook", "verify_webhook"]


def new_secret() -> str:
    """A fresh ``whsec_`` secret (24 random bytes)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def sign_webhook(
    secret: str, msg_id: str, body: bytes, *, timestamp: datetime | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body``."""
    at = timestamp or datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id, at, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }


def verify_webhook(secret: str, headers: Mapping[str, str], body: bytes | str) -> Any:
    """Check a delivery's signature and timestamp (5 minutes' tolerance); return the parsed body.

    Raises ``WebhookVerificationError`` on a missing header, a stale or future timestamp, or
    no matching ``v1`` signature."""
    plain = {k.lower(): v for k, v in headers.items()}
    return Webhook(secret).verify(body, plain)

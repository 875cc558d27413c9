"""A sandbox payment-service-provider server: a separate process tests and ``make run`` start.

It plays three providers (``/zenith``, ``/ramp``, ``/monnify``) and signs its webhooks with
Standard Webhooks; ``verify_webhook`` is the check the ledger's webhook endpoint reuses.
See docs/psp-sandbox.md."""

from infrastructure.psp_sandbox.signing import (
    WebhookVerificationError,
    new_secret,
    sign_webhook,
    verify_webhook,
)

__all__ = ["WebhookVerificationError", "new_secret", "sign_webhook", "verify_webhook"]

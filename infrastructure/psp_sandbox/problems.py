"""Errors the sandbox answers with, as RFC 9457 problem+json bodies."""

from __future__ import annotations

from typing import Any

PROBLEM_BASE = "https://psp-sandbox.invalid/problems/"


class Problem(Exception):
    """An answer that is not a success: HTTP ``status``, stable ``code``, human ``detail``."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        retryable: bool = False,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.retryable = retryable
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {
            "type": PROBLEM_BASE + self.code,
            "title": self.code.replace("_", " "),
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
            "retryable": self.retryable,
            **self.extra,
        }


def not_found(kind: str, ident: str) -> Problem:
    return Problem(404, f"{kind}_not_found", f"No {kind} {ident!r} at this provider.")


class GatewayFailure(Exception):
    """An injected bare 5xx: no JSON, as from a load balancer in front of the provider."""

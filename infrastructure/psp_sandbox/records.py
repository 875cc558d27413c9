"""What the sandbox keeps: tokens, payments, refunds, payouts, disputes (no card numbers)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from infrastructure.psp_sandbox.providers import Method


def now() -> datetime:
    return datetime.now(UTC)


def iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat().replace("+00:00", "Z")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


@dataclass(slots=True)
class Token:
    id: str
    provider: str
    method: Method
    details: dict[str, Any]
    decline_code: str | None
    created_at: datetime = field(default_factory=now)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "token",
            "provider": self.provider,
            "method": self.method.value,
            **self.details,
            "created_at": iso(self.created_at),
        }


@dataclass(slots=True)
class Dispute:
    id: str
    provider: str
    payment_id: str
    amount: int
    currency: str
    reason: str
    status: str = "open"
    created_at: datetime = field(default_factory=now)
    updated_at: datetime = field(default_factory=now)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "dispute",
            "provider": self.provider,
            "payment_id": self.payment_id,
            "amount": self.amount,
            "currency": self.currency,
            "reason": self.reason,
            "status": self.status,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


@dataclass(slots=True)
class Payment:
    id: str
    provider: str
    reference: str
    idempotency_key: str
    method: Method
    amount: int
    currency: str
    payment_method: dict[str, Any]
    status: str = "pending"
    authorized_amount: int = 0
    captured_amount: int = 0
    refunded_amount: int = 0
    fee: int = 0
    decline_code: str | None = None
    expires_at: datetime | None = None
    dispute: Dispute | None = None
    created_at: datetime = field(default_factory=now)
    updated_at: datetime = field(default_factory=now)
    version: int = 1

    def touch(self) -> None:
        """Every change bumps ``version``: receivers can drop a stale webhook by it."""
        self.version += 1
        self.updated_at = now()

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "payment",
            "provider": self.provider,
            "reference": self.reference,
            "status": self.status,
            "method": self.method.value,
            "payment_method": self.payment_method,
            "amount": self.amount,
            "currency": self.currency,
            "authorized_amount": self.authorized_amount,
            "captured_amount": self.captured_amount,
            "refunded_amount": self.refunded_amount,
            "fee": self.fee,
            "net": self.captured_amount - self.fee,
            "decline_code": self.decline_code,
            "expires_at": iso(self.expires_at),
            "dispute": None if self.dispute is None else self.dispute.public(),
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "version": self.version,
        }


@dataclass(slots=True)
class Refund:
    id: str
    provider: str
    payment_id: str
    reference: str
    amount: int
    currency: str
    status: str = "succeeded"
    created_at: datetime = field(default_factory=now)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "refund",
            "provider": self.provider,
            "payment_id": self.payment_id,
            "reference": self.reference,
            "amount": self.amount,
            "currency": self.currency,
            "status": self.status,
            "created_at": iso(self.created_at),
        }


@dataclass(slots=True)
class Payout:
    id: str
    provider: str
    reference: str
    idempotency_key: str
    amount: int
    currency: str
    fee: int
    destination: dict[str, Any]
    status: str = "pending"
    failure_code: str | None = None
    created_at: datetime = field(default_factory=now)
    updated_at: datetime = field(default_factory=now)
    version: int = 1

    def touch(self) -> None:
        self.version += 1
        self.updated_at = now()

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "payout",
            "provider": self.provider,
            "reference": self.reference,
            "status": self.status,
            "amount": self.amount,
            "currency": self.currency,
            "fee": self.fee,
            "destination": self.destination,
            "failure_code": self.failure_code,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "version": self.version,
        }

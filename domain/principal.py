"""Who is acting: a merchant (or platform operator) and its role, from an API key."""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("merchant", "auditor", "analyst", "admin")


@dataclass(frozen=True, slots=True)
class Principal:
    """Merchant keys see and move only their merchant's wallets; auditors and analysts
    read everything and write nothing (analysts may also rebuild projections)."""

    merchant_id: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def can_write(self) -> bool:
        return self.role in ("merchant", "admin")

    @property
    def sees_all(self) -> bool:
        return self.role in ("admin", "auditor", "analyst")

    def may_see(self, merchant_id: str) -> bool:
        return self.sees_all or merchant_id == self.merchant_id

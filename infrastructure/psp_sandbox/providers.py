"""The three providers the sandbox plays: methods, currencies and fee schedules."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Method(StrEnum):
    CARD = "card"
    UPI = "upi"
    BANK_TRANSFER = "bank_transfer"
    DIGITAL_WALLET = "digital_wallet"


@dataclass(frozen=True, slots=True)
class FeeRule:
    """``basis_points`` of the amount (half up) plus ``fixed``, at most ``cap`` (minor units)."""

    basis_points: int
    fixed: int = 0
    cap: int | None = None

    def fee(self, amount: int) -> int:
        fee = (amount * self.basis_points + 5_000) // 10_000 + self.fixed
        if self.cap is not None:
            fee = min(fee, self.cap)
        return min(fee, amount)


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    currencies: frozenset[str]
    fees: dict[Method, FeeRule]
    payout_fee: int

    @property
    def methods(self) -> frozenset[Method]:
        return frozenset(self.fees)

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "currencies": sorted(self.currencies),
            "methods": sorted(m.value for m in self.methods),
            "fees": {
                m.value: {"basis_points": r.basis_points, "fixed": r.fixed, "cap": r.cap}
                for m, r in sorted(self.fees.items())
            },
            "payout_fee": self.payout_fee,
        }


PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        Provider(
            name="zenith",
            currencies=frozenset({"USD", "EUR", "GBP"}),
            fees={
                Method.CARD: FeeRule(basis_points=290, fixed=30),
                Method.DIGITAL_WALLET: FeeRule(basis_points=250, fixed=20),
            },
            payout_fee=25,
        ),
        Provider(
            name="ramp",
            currencies=frozenset({"INR", "USD"}),
            fees={
                Method.CARD: FeeRule(basis_points=200),
                Method.UPI: FeeRule(basis_points=30),
                Method.DIGITAL_WALLET: FeeRule(basis_points=180, fixed=10),
            },
            payout_fee=500,
        ),
        Provider(
            name="monnify",
            currencies=frozenset({"NGN", "USD"}),
            fees={
                Method.CARD: FeeRule(basis_points=150, fixed=100, cap=200_000),
                Method.BANK_TRANSFER: FeeRule(basis_points=100, cap=30_000),
            },
            payout_fee=1_000,
        ),
    )
}

"""Money: integer minor units plus an ISO 4217 currency. No float is accepted anywhere."""

from __future__ import annotations

import re
from dataclasses import dataclass

from domain.currencies import MINOR_UNITS
from domain.errors import CurrencyMismatch, InvalidAmount, UnknownCurrency

# One amount may move at most this many minor units (10^15: ten trillion USD). Larger
# requests are rejected as input errors rather than risking bigint overflow downstream.
MAX_AMOUNT = 10**15
# A balance (posted or pending) must stay within this bound; bigint holds 9.2e18.
MAX_BALANCE = 2**62

_DECIMAL_RE = re.compile(r"^(0|[1-9][0-9]*)(\.[0-9]+)?\Z")  # \Z, not $: "1\n" is no amount


@dataclass(frozen=True, slots=True)
class Currency:
    """An ISO 4217 currency and the number of digits of its minor unit."""

    code: str
    exponent: int

    @classmethod
    def of(cls, code: object) -> Currency:
        known = _CURRENCIES.get(code) if isinstance(code, str) else None
        if known is None:
            raise UnknownCurrency(f"{code!r} is not an ISO 4217 currency code")
        return known


@dataclass(frozen=True, slots=True, order=False)
class Money:
    """An amount of one currency in integer minor units (cents for USD, yen for JPY)."""

    minor: int
    currency: Currency

    def __post_init__(self) -> None:
        # bool is an int subclass; a float is never money.
        if type(self.minor) is not int:
            raise InvalidAmount(
                f"amount must be an integer number of minor units, not {self.minor!r}"
            )

    @classmethod
    def of(cls, minor: int, currency: str | Currency) -> Money:
        cur = currency if isinstance(currency, Currency) else Currency.of(currency)
        return cls(minor, cur)

    @classmethod
    def parse(cls, text: object, currency: str | Currency, *, allow_zero: bool = False) -> Money:
        """Parse a decimal string in major units ("12.34") into a positive amount.

        Rejects floats and other non-strings, signs, exponents, more decimals than the
        currency allows, zero, and amounts above ``MAX_AMOUNT``.
        """
        cur = currency if isinstance(currency, Currency) else Currency.of(currency)
        if not isinstance(text, str):
            raise InvalidAmount(
                f'amount must be a decimal string such as "12.34", not {type(text).__name__}'
            )
        if len(text) > 40 or not _DECIMAL_RE.match(text):
            raise InvalidAmount(f'amount {text!r} is not a plain decimal string such as "12.34"')
        whole, _, frac = text.partition(".")
        if len(frac) > cur.exponent:
            raise InvalidAmount(
                f"{cur.code} allows {cur.exponent} decimal places; {text!r} has {len(frac)}"
            )
        # The regex admits ASCII digits only: exact integer arithmetic, no Decimal needed.
        minor = int(whole + frac.ljust(cur.exponent, "0"))
        money = cls(minor, cur)
        if allow_zero and minor == 0:
            return money
        money.require_positive()
        return money

    def require_positive(self) -> None:
        if self.minor <= 0:
            raise InvalidAmount("amount must be greater than zero")
        if self.minor > MAX_AMOUNT:
            raise InvalidAmount(f"amount exceeds the maximum of {MAX_AMOUNT} minor units")

    def format(self) -> str:
        """Major-unit decimal string, exactly as the API prints it ("-12.30", "5")."""
        return format_minor(self.minor, self.currency.exponent)

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise CurrencyMismatch(
                f"cannot combine {self.currency.code} with {other.currency.code}"
            )

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor + other.minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor - other.minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.minor, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.minor < other.minor

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.minor <= other.minor

    def __str__(self) -> str:
        return f"{self.format()} {self.currency.code}"


_CURRENCIES = {code: Currency(code, exponent) for code, exponent in MINOR_UNITS.items()}


def format_minor(minor: int, exponent: int) -> str:
    """Render integer minor units as a major-unit decimal string without float arithmetic."""
    sign = "-" if minor < 0 else ""
    digits = str(abs(minor))
    if exponent == 0:
        return sign + digits
    digits = digits.rjust(exponent + 1, "0")
    return f"{sign}{digits[:-exponent]}.{digits[-exponent:]}"

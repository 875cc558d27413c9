"""Money and Currency: parsing, formatting and arithmetic, with property tests.

Money is integer minor units of one ISO 4217 currency; no float is accepted anywhere.
"""

from __future__ import annotations

import decimal
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from domain.currencies import MINOR_UNITS
from domain.errors import CurrencyMismatch, InvalidAmount, UnknownCurrency, ValidationError
from domain.money import MAX_AMOUNT, Currency, Money, format_minor

USD = Currency.of("USD")
JPY = Currency.of("JPY")
KWD = Currency.of("KWD")
CLF = Currency.of("CLF")

# One currency of every exponent the table holds.
BY_EXPONENT = {0: JPY, 2: USD, 3: KWD, 4: CLF}

currencies = st.sampled_from(sorted(MINOR_UNITS)).map(Currency.of)
exponent_currencies = st.sampled_from([JPY, USD, KWD, CLF])
valid_minor = st.integers(min_value=1, max_value=MAX_AMOUNT)


def decimal_ref(minor: int, exponent: int) -> str:
    """The reference rendering, computed with exact Decimal arithmetic."""
    with decimal.localcontext() as ctx:
        ctx.prec = 200
        return format(Decimal(minor).scaleb(-exponent), "f")


# ---- Currency ----------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "exponent"), [("JPY", 0), ("USD", 2), ("KWD", 3), ("CLF", 4)])
def test_currency_exponents(code: str, exponent: int) -> None:
    assert Currency.of(code) == Currency(code, exponent)
    assert Currency.of(code).exponent == exponent


@pytest.mark.parametrize("code", ["usd", "XXX", "", "US", "USDD", "XAU", None, 840, b"USD"])
def test_unknown_currency_is_rejected(code: object) -> None:
    with pytest.raises(UnknownCurrency):
        Currency.of(code)
    with pytest.raises(UnknownCurrency):
        Money.parse("1", code)  # type: ignore[arg-type]


def test_unknown_currency_is_a_validation_error() -> None:
    assert issubclass(UnknownCurrency, ValidationError)
    assert issubclass(InvalidAmount, ValidationError)


# ---- construction: integers only ------------------------------------------------------------


@pytest.mark.parametrize("minor", [1.0, 0.5, 100.25, True, False, Decimal("1"), "100", None])
def test_money_minor_must_be_an_int(minor: object) -> None:
    with pytest.raises(InvalidAmount):
        Money(minor, USD)  # type: ignore[arg-type]
    with pytest.raises(InvalidAmount):
        Money.of(minor, "USD")  # type: ignore[arg-type]


def test_money_of_accepts_code_or_currency() -> None:
    assert Money.of(123, "USD") == Money.of(123, USD) == Money(123, USD)
    assert Money.of(5, "JPY") != Money.of(5, "USD")


# ---- parse -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("12.34", USD, 1234),
        ("12.3", USD, 1230),
        ("12", USD, 1200),
        ("0.01", USD, 1),
        ("5", JPY, 5),
        ("1.234", KWD, 1234),
        ("0.001", KWD, 1),
        ("1.2345", CLF, 12345),
        ("0.0001", CLF, 1),
        ("10000000000000", USD, MAX_AMOUNT),  # exactly the maximum
        ("1000000000000000", JPY, MAX_AMOUNT),
    ],
)
def test_parse_examples(text: str, currency: Currency, minor: int) -> None:
    money = Money.parse(text, currency)
    assert money == Money(minor, currency)
    assert Money.parse(text, currency.code) == money


@pytest.mark.parametrize(
    "value", [1.5, 1.0, 12.34, 100, 0, True, Decimal("1.00"), None, b"1.00", ["1"], float("nan")]
)
def test_parse_rejects_non_strings(value: object) -> None:
    with pytest.raises(InvalidAmount):
        Money.parse(value, USD)
    with pytest.raises(InvalidAmount):
        Money.parse(value, JPY, allow_zero=True)


@given(st.floats(allow_nan=True, allow_infinity=True), exponent_currencies)
def test_parse_rejects_every_float(value: float, currency: Currency) -> None:
    with pytest.raises(InvalidAmount):
        Money.parse(value, currency)


@pytest.mark.parametrize(
    ("text", "currency"),
    [("1.5", JPY), ("1.0", JPY), ("1.001", USD), ("0.000", USD), ("1.0001", KWD), ("1.00001", CLF)],
)
def test_parse_rejects_too_many_decimals(text: str, currency: Currency) -> None:
    with pytest.raises(InvalidAmount):
        Money.parse(text, currency)


@given(exponent_currencies, st.integers(min_value=1, max_value=10**6), st.data())
def test_parse_rejects_any_extra_decimal_place(
    currency: Currency, whole: int, data: st.DataObject
) -> None:
    frac = data.draw(
        st.text(
            alphabet="0123456789", min_size=currency.exponent + 1, max_size=currency.exponent + 4
        )
    )
    with pytest.raises(InvalidAmount):
        Money.parse(f"{whole}.{frac}", currency)


@pytest.mark.parametrize("text", ["0", "0.0", "0.00"])
def test_parse_rejects_zero_unless_allowed(text: str) -> None:
    with pytest.raises(InvalidAmount):
        Money.parse(text, USD)
    assert Money.parse(text, USD, allow_zero=True) == Money(0, USD)


def test_allow_zero_does_not_allow_anything_else() -> None:
    for text in ["-1", "-0", "1.001", "1e3", " 1", "01", "100000000000000.01"]:
        with pytest.raises(InvalidAmount):
            Money.parse(text, USD, allow_zero=True)
    assert Money.parse("1.50", USD, allow_zero=True) == Money(150, USD)


@pytest.mark.parametrize(
    "text",
    [
        "-1",
        "-1.00",
        "-0",
        "-0.01",
        "+1",
        "+1.00",
        "\u22121.00",  # unicode minus sign
    ],
)
def test_parse_rejects_signs(text: str) -> None:
    with pytest.raises(InvalidAmount):
        Money.parse(text, USD)


@pytest.mark.parametrize(
    "text",
    ["1e3", "1E3", "1e-2", "1.0e2", "1.00E+2", "Infinity", "inf", "NaN", "sNaN", "0x10", "1_000"],
)
def test_parse_rejects_exponents_and_special_values(text: str) -> None:
    with pytest.raises(InvalidAmount):
        Money.parse(text, USD)


@pytest.mark.parametrize(
    "text",
    [
        " 1.00",
        "1.00 ",
        " 1",
        "1 ",
        "1.00\n",
        "1\n",
        "5\n",
        "\n1",
        "\t1.00",
        "1.00\t",
        "1 000",
        "1. 00",
        "1\r\n",
        "1\u00a0",
        "",
        " ",
    ],
)
def test_parse_rejects_whitespace(text: str) -> None:
    with pytest.raises(InvalidAmount):
        Money.parse(text, USD)
    with pytest.raises(InvalidAmount):
        Money.parse(text, JPY)


@pytest.mark.parametrize("currency", [JPY, USD, KWD, CLF], ids=lambda c: c.code)
@pytest.mark.parametrize(
    "space", [" ", "\n", "\t", "\r", "\x0b", "\x0c", "\u00a0", "\u2003", "\u3000"]
)
@pytest.mark.parametrize("before", [True, False])
@given(minor=valid_minor)
def test_parse_rejects_whitespace_anywhere_around_a_valid_amount(
    currency: Currency, space: str, before: bool, minor: int
) -> None:
    text = format_minor(minor, currency.exponent)
    with pytest.raises(InvalidAmount):
        Money.parse(space + text if before else text + space, currency)


@pytest.mark.parametrize("text", ["01.00", "00.10", "007", "00", "01", "0001.5"])
def test_parse_rejects_leading_zeros(text: str) -> None:
    with pytest.raises(InvalidAmount):
        Money.parse(text, USD)
    with pytest.raises(InvalidAmount):
        Money.parse(text, USD, allow_zero=True)


@pytest.mark.parametrize(
    "text", [".5", "5.", "1,00", "1.2.3", "12a", "abc", "\u0661", "\uff11", "١٢.٣٤", "1/2", "½"]
)
def test_parse_rejects_malformed(text: str) -> None:
    with pytest.raises(InvalidAmount):
        Money.parse(text, USD)


@given(exponent_currencies)
def test_parse_rejects_above_max_amount(currency: Currency) -> None:
    exp = currency.exponent
    assert Money.parse(format_minor(MAX_AMOUNT, exp), currency).minor == MAX_AMOUNT
    for minor in (MAX_AMOUNT + 1, MAX_AMOUNT * 10, 10**30, 2**63, 2**64):
        with pytest.raises(InvalidAmount):
            Money.parse(format_minor(minor, exp), currency)


def test_parse_rejects_very_long_strings() -> None:
    with pytest.raises(InvalidAmount):
        Money.parse("1" * 41, JPY)
    with pytest.raises(InvalidAmount):
        Money.parse("0." + "0" * 100, USD, allow_zero=True)


# ---- parse / format round trip ----------------------------------------------------------------


@given(exponent_currencies, valid_minor)
@example(JPY, 1)
@example(USD, 1)
@example(KWD, 1)
@example(CLF, 1)
@example(USD, MAX_AMOUNT)
@example(CLF, 10_000)
def test_round_trip_for_every_exponent(currency: Currency, minor: int) -> None:
    text = Money(minor, currency).format()
    assert Money.parse(text, currency) == Money(minor, currency)
    assert text == decimal_ref(minor, currency.exponent)


@given(currencies, valid_minor)
def test_round_trip_for_every_currency(currency: Currency, minor: int) -> None:
    money = Money(minor, currency)
    assert Money.parse(money.format(), currency.code) == money


@given(exponent_currencies, st.integers(min_value=1, max_value=10**9), st.data())
def test_format_of_parse_is_the_same_number(
    currency: Currency, whole: int, data: st.DataObject
) -> None:
    """Any valid string parses to a value whose canonical rendering is numerically equal."""
    frac = data.draw(st.text(alphabet="0123456789", min_size=0, max_size=currency.exponent))
    text = f"{whole}.{frac}" if frac else str(whole)
    money = Money.parse(text, currency)
    assert Decimal(money.format()) == Decimal(text)
    # The canonical rendering always has exactly ``exponent`` decimals.
    _, dot, decimals = money.format().partition(".")
    assert len(decimals) == currency.exponent
    assert bool(dot) == (currency.exponent > 0)


def test_format_examples() -> None:
    assert Money(1234, USD).format() == "12.34"
    assert Money(1230, USD).format() == "12.30"
    assert Money(5, USD).format() == "0.05"
    assert Money(0, USD).format() == "0.00"
    assert Money(-1230, USD).format() == "-12.30"
    assert Money(-5, USD).format() == "-0.05"
    assert Money(5, JPY).format() == "5"
    assert Money(-5, JPY).format() == "-5"
    assert Money(1, KWD).format() == "0.001"
    assert Money(12345, CLF).format() == "1.2345"
    assert str(Money(1234, USD)) == "12.34 USD"


# ---- format_minor never goes through float ---------------------------------------------------------


@given(st.integers(min_value=-(10**30), max_value=10**30), st.sampled_from([0, 1, 2, 3, 4]))
@example(10**30, 2)
@example(-(10**30), 4)
@example(2**53 + 1, 2)
@example(10**30 - 1, 3)
@example(123456789012345678901234567891, 2)
@example(0, 0)
@example(-1, 4)
def test_format_minor_is_exact_for_big_integers(minor: int, exponent: int) -> None:
    assert format_minor(minor, exponent) == decimal_ref(minor, exponent)


def test_format_minor_keeps_digits_a_float_would_lose() -> None:
    big = 2**53 + 1  # not representable as a float
    assert float(big) != big
    assert format_minor(big, 0) == str(big)
    assert format_minor(big, 2) == "90071992547409.93"
    assert format_minor(10**30 + 1, 2) == "10000000000000000000000000000.01"


# ---- arithmetic ---------------------------------------------------------------------------------


def test_arithmetic_within_one_currency() -> None:
    a, b = Money(150, USD), Money(25, USD)
    assert a + b == Money(175, USD)
    assert a - b == Money(125, USD)
    assert b - a == Money(-125, USD)
    assert -a == Money(-150, USD)
    assert b < a and b <= a and a <= a and not a < a


@pytest.mark.parametrize(
    ("x", "y"), [(USD, JPY), (USD, KWD), (JPY, CLF), (KWD, Currency.of("BHD"))]
)
def test_arithmetic_across_currencies_is_refused(x: Currency, y: Currency) -> None:
    a, b = Money(100, x), Money(100, y)
    for op in (
        lambda: a + b,
        lambda: a - b,
        lambda: a < b,
        lambda: a <= b,
        lambda: b + a,
        lambda: b - a,
    ):
        with pytest.raises(CurrencyMismatch):
            op()


def test_equal_minor_units_of_different_currencies_are_not_equal() -> None:
    assert Money(100, USD) != Money(100, Currency.of("EUR"))


@given(currencies, st.data())
def test_addition_is_associative_and_commutative(currency: Currency, data: st.DataObject) -> None:
    amounts = st.integers(min_value=-(10**20), max_value=10**20).map(lambda m: Money(m, currency))
    a, b, c = data.draw(amounts), data.draw(amounts), data.draw(amounts)
    assert a + b == b + a
    assert (a + b) + c == a + (b + c)
    assert (a + b).currency == currency
    assert (a - b).currency == currency
    assert (-a).currency == currency
    assert a - b == a + (-b)
    assert (a + b) - b == a
    assert type((a + b).minor) is int


@given(currencies, currencies, st.integers(), st.integers())
def test_mixing_currencies_always_raises(x: Currency, y: Currency, m: int, n: int) -> None:
    a, b = Money(m, x), Money(n, y)
    if x == y:
        assert (a + b).minor == m + n
    else:
        with pytest.raises(CurrencyMismatch):
            a + b
        with pytest.raises(CurrencyMismatch):
            a - b


def test_require_positive() -> None:
    Money(1, USD).require_positive()
    Money(MAX_AMOUNT, USD).require_positive()
    for minor in (0, -1, MAX_AMOUNT + 1):
        with pytest.raises(InvalidAmount):
            Money(minor, USD).require_positive()

"""Card-number (PAN) detection: ``domain.pan.find_pan`` and ``luhn_valid``.

A PAN is 13-19 digits passing the Luhn check, written as one run or in groups joined by
spaces or dashes, anywhere in a JSON-like request (strings, numbers, keys). The answer is a
path, never the number; ordinary ids (UUIDs, 12 or 20+ digit numbers) are not flagged.
"""

from __future__ import annotations

import json
import time
import uuid

import orjson
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from domain.pan import (
    _stretch_contains_pan,
    find_pan,
    json_may_hold_pan,
    luhn_valid,
    text_contains_pan,
)

# Test numbers the card schemes publish, by brand and length.
KNOWN_PANS = {
    "visa-16": "4242424242424242",
    "visa-16b": "4111111111111111",
    "visa-16c": "4012888888881881",
    "visa-13": "4222222222222",
    "mastercard": "5555555555554444",
    "mastercard-b": "5105105105105100",
    "mastercard-2series": "2223003122003222",
    "amex-15": "378282246310005",
    "amex-15b": "371449635398431",
    "discover": "6011111111111117",
    "discover-b": "6011000990139424",
    "diners-14": "30569309025904",
    "jcb": "3530111333300000",
}


def check_digit(body: str) -> str:
    """The digit that makes ``body + digit`` Luhn-valid."""
    return next(d for d in "0123456789" if luhn_valid(body + d))


def luhn_invalid(pan: str) -> str:
    last = (int(pan[-1]) + 1) % 10
    return pan[:-1] + str(last)


VISA_19 = "456789012345678901" + check_digit("456789012345678901")


# ---- luhn_valid ---------------------------------------------------------------------------


@pytest.mark.parametrize("pan", [*KNOWN_PANS.values(), VISA_19], ids=[*KNOWN_PANS, "visa-19"])
def test_known_test_pans_are_luhn_valid(pan: str) -> None:
    assert luhn_valid(pan)
    assert not luhn_valid(luhn_invalid(pan))


@pytest.mark.parametrize(
    "text", ["", "0", "4242 4242 4242 4242", "4242-4242", "424242424242424x", "٤٢٤٢٤٢٤٢٤٢٤٢٤٢٤٢"]
)
def test_luhn_valid_takes_ascii_digits_only(text: str) -> None:
    assert not luhn_valid(text)


def test_luhn_reference_values() -> None:
    assert luhn_valid("79927398713")  # the textbook example
    assert not luhn_valid("79927398710")
    assert luhn_valid("00")


# ---- find_pan: where card numbers hide ----------------------------------------------------


@pytest.mark.parametrize("pan", [*KNOWN_PANS.values(), VISA_19], ids=[*KNOWN_PANS, "visa-19"])
def test_a_bare_pan_is_found(pan: str) -> None:
    assert find_pan(pan) == "$"
    assert find_pan(pan, root="body") == "body"
    assert find_pan({"note": f"my card is {pan}, thanks"}) == "note"


@pytest.mark.parametrize(
    "text",
    [
        "4242 4242 4242 4242",
        "4242-4242-4242-4242",
        "4242 4242-4242 4242",
        "3782 822463 10005",  # Amex 4-6-5
        "3056-930902-5904",  # Diners 4-6-4
        "4222 2222 22222",  # 13 digits
        " ".join([VISA_19[:4], VISA_19[4:8], VISA_19[8:12], VISA_19[12:16], VISA_19[16:]]),
        "card: 4242 4242 4242 4242 exp 12/30",
        "4242 4242 4242 4242 123",  # followed by the CVC
        "4242 4242 4242 4242 1230",  # followed by the expiry
        "ref 1 4242 4242 4242 4242",
        "pay 12 4242-4242-4242-4242!",
        "(4242 4242 4242 4242)",
        "card=4242424242424242&cvc=123",
        "tok_4242424242424242",
    ],
)
def test_grouped_and_embedded_pans_are_found(text: str) -> None:
    assert text_contains_pan(text)
    assert find_pan({"note": text}) == "note"


def test_the_path_names_keys_and_list_items_never_the_number() -> None:
    pan = KNOWN_PANS["visa-16"]
    body = {
        "amount": "10.00",
        "items": [{"sku": "A-1"}, {"sku": "B-2", "note": f"card {pan}"}],
        "metadata": {"note": "fine"},
    }
    assert find_pan(body, root="body") == "body.items[1].note"
    assert find_pan({"metadata": {"note": pan}}, root="body") == "body.metadata.note"
    assert find_pan([[["x", pan]]]) == "[0][0][1]"
    assert find_pan(("x", pan)) == "[1]"
    path = find_pan({"customer": {pan: "value"}})
    assert path == "customer.<key>"
    assert pan not in (path or "")


def test_the_first_pan_in_document_order_wins() -> None:
    pan = KNOWN_PANS["amex-15"]
    body = {"a": {"x": "ok", "y": pan}, "b": pan, "c": [pan]}
    assert find_pan(body) == "a.y"


@pytest.mark.parametrize(
    "number",
    [4242424242424242, -4242424242424242, 378282246310005, 4222222222222, 4242424242424242.0],
)
def test_json_numbers_are_checked(number: int | float) -> None:
    assert find_pan({"note": number}) == "note"
    assert find_pan(json.loads(json.dumps({"n": [1, number]}))) == "n[1]"


def test_json_text_parsed_from_a_request_is_checked() -> None:
    raw = '{"amount": 1000, "card": {"number": 5555555555554444, "cvc": "123"}}'
    assert find_pan(json.loads(raw), root="body") == "body.card.number"


# ---- find_pan: what is not a card number --------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        1.5,
        4.242424242424242e30,
        "",
        "hello",
        luhn_invalid(KNOWN_PANS["visa-16"]),
        int(luhn_invalid(KNOWN_PANS["visa-16"])),
        "4242 4242 4242 4243",
        "123456789012",  # 12 digits
        "000000000000",
        "4242424242424242" + "0000",  # 20 digits, even with a valid PAN inside
        42424242424242420000,
        "12345678-1234-1234-1234-123456789012",  # an all-digit UUID
        "00000000-0000-0000-0000-000000000000",
        "abcde123-1234-5678-9012-345abcdefabc",
        "c50b4d6522211130262c2f0becc9c405",  # a UUID's hex: 13 Luhn-valid digits inside
        "txn4242424242424242",  # glued to letters: an identifier
        "4242424242424242abc",
        "2026-11-22T06:15:42.123456+00:00",
        "+1 415 555 2671",
        "42 42 42 42 42 42 42 42",  # two-digit groups are not card groups
        "4242  4242  4242  4242",  # two spaces are no card separator
        "4242424 242424242",  # a 7-digit group never joins
    ],
)
def test_ordinary_values_are_not_flagged(value: object) -> None:
    assert find_pan({"v": value}) is None


def test_the_grouping_negatives_are_refused_for_their_grouping() -> None:
    # Joined, the digits of the two-space, two-digit and 7-digit cases above are a valid PAN:
    # they pass only because of how they are written.
    assert luhn_valid("4242424242424242")
    assert text_contains_pan("4242 4242 4242 4242")


@given(st.uuids())
def test_no_uuid_is_ever_flagged(value: uuid.UUID) -> None:
    assert find_pan({"id": str(value), "hex": value.hex, "urn": value.urn}) is None


@given(st.integers(min_value=10**19, max_value=10**30))
def test_numbers_of_twenty_or_more_digits_are_not_flagged(number: int) -> None:
    assert find_pan([number, str(number), f"id {number} end"]) is None


@given(st.integers(min_value=0, max_value=10**12 - 1))
def test_numbers_of_twelve_digits_or_fewer_are_not_flagged(number: int) -> None:
    assert find_pan([number, str(number).zfill(12)]) is None


# ---- properties: every Luhn-valid 13-19 digit number is found ---------------------------


@st.composite
def pans(draw: st.DrawFn) -> str:
    length = draw(st.integers(min_value=13, max_value=19))
    body = draw(st.text(alphabet="0123456789", min_size=length - 1, max_size=length - 1))
    return body + check_digit(body)


no_ascii_digits = st.text(
    alphabet=st.characters(exclude_characters="0123456789", exclude_categories=("Cs",)),
    max_size=40,
)


no_alnum = st.characters(exclude_categories=("Cs", "L", "N"))


@given(pans(), no_ascii_digits, no_alnum, no_alnum, no_ascii_digits)
def test_any_luhn_valid_13_to_19_digits_in_any_text_are_found(
    pan: str, before: str, left: str, right: str, after: str
) -> None:
    text = before + left + pan + right + after
    assert text_contains_pan(text)
    assert find_pan({"note": text}) == "note"
    assert find_pan(int(pan)) == "$" or pan.startswith("0")  # leading zeros vanish in an int


@given(st.text(min_size=0, max_size=60), pans(), st.text(min_size=0, max_size=60))
def test_a_pan_between_any_text_is_found_when_set_apart(before: str, pan: str, after: str) -> None:
    # Digits right next to the PAN would make it part of a longer number, letters part of
    # an identifier; any other character sets it apart.
    assert text_contains_pan(f"{before}|{pan}|{after}")


@st.composite
def grouped_pans(draw: st.DrawFn) -> str:
    """A PAN written in groups of 3-6 digits separated by single spaces or dashes."""
    pan = draw(pans())
    groups: list[str] = []
    rest = pan
    while rest:
        if len(rest) <= 6:
            size = len(rest)
        else:
            size = draw(st.integers(min_value=3, max_value=min(6, len(rest) - 3)))
        groups.append(rest[:size])
        rest = rest[size:]
    text = groups[0]
    for group in groups[1:]:
        text += draw(st.sampled_from(" -")) + group
    return text


@given(grouped_pans(), st.sampled_from(["", " ", "card: ", "(", "x "]))
def test_any_grouped_pan_is_found(text: str, before: str) -> None:
    assert text_contains_pan(before + text)


@given(
    st.lists(st.text(alphabet="abcdefghij_", min_size=1, max_size=8), min_size=1, max_size=6),
    pans(),
)
def test_the_path_to_a_nested_pan_is_its_keys(keys: list[str], pan: str) -> None:
    value: object = pan
    for key in reversed(keys):
        value = {"decoy": "nothing here", key: value} if key != "decoy" else {key: value}
    assert find_pan(value, root="body") == "body." + ".".join(keys)


# ---- the raw-body pre-check: never says "no" to a body that holds a card number ---------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**21), max_value=10**21),
    st.floats(allow_nan=False, allow_infinity=False),
    pans(),
    grouped_pans(),
    st.text(alphabet="0123456789 -.e+abc\u00e9\u0663", max_size=40),
    st.text(max_size=30),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=12), pans()), children, max_size=4),
    ),
    max_leaves=12,
)


def encodings(value: object) -> list[bytes]:
    """The same JSON value as several clients would send it: ASCII-escaped or not, compact
    or spaced, floats in Python's repr (exponents such as 1e+16 included)."""
    out = [json.dumps(value, ensure_ascii=True).encode()]
    try:
        out.append(json.dumps(value, ensure_ascii=False, indent=1).encode())
        out.append(orjson.dumps(value))  # refuses integers beyond 64 bits
    except (TypeError, UnicodeEncodeError):
        pass
    return out


@given(json_values)
def test_a_body_holding_a_pan_always_passes_the_pre_check(value: object) -> None:
    if find_pan(value) is not None:
        for raw in encodings(value):
            assert json_may_hold_pan(raw), raw


@st.composite
def pans_ending_in_zeros(draw: st.DrawFn) -> tuple[str, int]:
    """A Luhn-valid 13-19 digit number of at most 12 significant digits and trailing zeros:
    ``(significant digits, zeros)``, so an exponent writes it in few digits."""
    length = draw(st.integers(min_value=13, max_value=19))
    k = draw(st.integers(min_value=2, max_value=12))
    head = draw(st.sampled_from("123456789")) + draw(
        st.text(alphabet="0123456789", min_size=k - 2, max_size=k - 2)
    )
    for last in "0123456789":
        if luhn_valid(head + last + "0" * (length - k)):
            return head + last, length - k
    raise AssertionError("some last digit always completes the Luhn sum")


@given(pans_ending_in_zeros(), st.sampled_from(["e", "E", "e+", ".0e", "0e"]))
def test_a_pan_written_with_an_exponent_passes_the_pre_check(
    pan: tuple[str, int], style: str
) -> None:
    digits, zeros = pan
    exponent = zeros - 1 if style == "0e" else zeros  # "0e": one zero written out
    raw = f'{{"amount": {digits}{style}{exponent}}}'.encode()
    # Above 2**53 the float may not be that integer exactly: the scan decides what it is.
    assume(find_pan(orjson.loads(raw)) is not None)
    assert json_may_hold_pan(raw)


@given(pans(), st.integers(min_value=0, max_value=19))
def test_a_pan_spelled_in_escapes_passes_the_pre_check(pan: str, plain: int) -> None:
    # The last ``plain`` digits as they are, the others as \u escapes.
    cut = max(0, len(pan) - plain)
    spelled = "".join(f"\\u{ord(c):04x}" for c in pan[:cut]) + pan[cut:]
    raw = f'{{"note": "{spelled}"}}'.encode()
    assert find_pan(orjson.loads(raw)) == "note"
    assert json_may_hold_pan(raw)


def text_of_parts(letters: str, separators: int, most: int) -> st.SearchStrategy[list[str]]:
    """Card numbers, grouped numbers, digit runs, separators and other characters, mixed."""
    return st.lists(
        st.one_of(
            pans(),
            grouped_pans(),
            st.text(alphabet="0123456789", max_size=20),
            st.text(alphabet=" -", min_size=1, max_size=separators),
            st.text(alphabet=letters, min_size=1, max_size=3),
        ),
        max_size=most,
    )


@given(text_of_parts("abcXYZ_\t.:\u0663\u00e9", separators=2, most=12))
def test_scanning_only_the_candidate_stretches_finds_what_a_full_scan_finds(
    parts: list[str],
) -> None:
    text = "".join(parts)
    assert text_contains_pan(text) == _stretch_contains_pan(text, 0, len(text))


@pytest.mark.parametrize(
    "raw",
    [
        b'{"note": "\\t4242424242424242"}',  # a tab, spelled with a letter, sets it apart
        b'{"note": "x\\n4242 4242 4242 4242"}',
        b"4242424242424242",
        b'{"note": "4242 4242 4242 4242"}',
        b'{"note": "3782-822463-10005"}',
        b'[1, {"a": 42424242424242.42}]',
    ],
)
def test_the_pre_check_passes_plain_and_grouped_numbers_on_to_the_scan(raw: bytes) -> None:
    assert json_may_hold_pan(raw)


def test_ordinary_request_bodies_skip_the_scan() -> None:
    transfer = {
        "debit_wallet_id": "2b64e04f-b2f8-5034-970e-4a52043f166a",
        "credit_wallet_id": "9c1d8a3e-51f0-4c2b-8f6e-0d7a2b4c9e11",
        "amount": "12.34",
        "currency": "USD",
        "metadata": {"order": "o-123", "at": "2026-11-30T03:00:00Z"},
    }
    assert not json_may_hold_pan(orjson.dumps(transfer))
    assert not json_may_hold_pan(orjson.dumps({"transfers": [transfer] * 1000}))
    assert not json_may_hold_pan(b'{"amount": 1.5e3}'[:14])  # no exponent once cut


# ---- cost -----------------------------------------------------------------------------------


def timed_find_pan(value: object) -> tuple[float, str | None]:
    start = time.perf_counter()
    found = find_pan(value)
    return time.perf_counter() - start, found


@pytest.mark.parametrize(
    "text",
    [
        "123 " * (1 << 18),  # the most groups a chain can have
        "1234-" * (1 << 18),
        "1" * (1 << 20),  # one enormous run
        "12345678901 " * (1 << 16),
        "a" * (1 << 20),
        "ab1 " * (1 << 18),
    ],
    ids=["groups-3", "groups-4", "one-run", "runs-11", "letters", "mixed"],
)
def test_a_mebibyte_of_text_is_scanned_quickly(text: str) -> None:
    assert len(text) >= 1 << 19
    seconds, found = timed_find_pan({"body": text})
    assert found is None  # so the whole text was scanned
    # Generous for a loaded CI machine: a backtracking scan would take minutes.
    assert seconds < 5.0


def test_a_mebibyte_json_body_is_scanned_quickly() -> None:
    body = {
        "items": [{"id": str(uuid.UUID(int=i)), "qty": i, "note": "x" * 20} for i in range(12000)]
    }
    assert len(json.dumps(body)) > 1 << 20
    seconds, found = timed_find_pan(body)
    assert found is None
    assert seconds < 5.0


def test_deep_nesting_does_not_recurse() -> None:
    value: object = KNOWN_PANS["visa-16"]
    for _ in range(3_000):  # three times Python's recursion limit
        value = [value]
    assert find_pan(value) == "[0]" * 3_000


def test_a_cycle_ends() -> None:
    loop: list[object] = ["x"]
    loop.append(loop)
    assert find_pan(loop) is None


@given(text_of_parts('abf_\t.:"', separators=3, most=16))
def test_the_ascii_scan_finds_what_the_regex_scan_finds(parts: list[str]) -> None:
    from domain.pan import _RUN_BYTES, _ascii_contains_pan

    text = "".join(parts)
    assert _ascii_contains_pan(text, text.encode().translate(_RUN_BYTES)) == text_contains_pan(text)

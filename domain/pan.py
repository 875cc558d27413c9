"""Card-number (PAN) detection: only provider tokens may enter the system.

A PAN is 13 to 19 digits that pass the Luhn check. It is found

- as one contiguous run of digits (``"4242424242424242"``, also inside other text such as
  ``"card:4242424242424242;"`` or ``"tok_4242424242424242"``), or
- written in groups of 3 to 6 digits joined by one space or dash each
  (``"4242 4242 4242 4242"``, ``"3782-822463-10005"``); any consecutive groups of such a
  chain that add up to 13-19 digits count, so a number followed by its expiry or CVC
  (``"4242 4242 4242 4242 123"``) is still caught;
- as a JSON integer (``4242424242424242``) or an integral float.

Digits glued to a letter (``"d6522211130262c"``) are part of an identifier, not a card
number: hex ids, UUIDs without dashes and hashes hold long digit runs by chance, and one
in ten of those would pass the Luhn check. A card number is set apart from letters by
anything else (a space, punctuation, an underscore).

A run of more than 19 contiguous digits is not a PAN, and neither is any part of it: a
random 20+ digit id would otherwise match a Luhn-valid window one time in ten. Groups of 7
or more digits (the 8-digit head and 12-digit tail of an all-digit UUID) never join a chain
either, so no UUID is ever taken for a card number. Random 13-19 digit numbers still pass
the Luhn check one time in ten; rejecting those too is the price of never storing a card
number.

Scanning is one linear pass per string (a plain ``[0-9]+`` scan, no backtracking regex) and
an explicit stack over the structure, so a 1 MiB body or a deeply nested one is cheap.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping
from typing import NamedTuple

MIN_PAN_DIGITS = 13
MAX_PAN_DIGITS = 19
_MIN_GROUP = 3
_MAX_GROUP = 6
_SEPARATORS = " -"

_DIGITS = re.compile(r"[0-9]+")  # ASCII only: \d would match other scripts' digits too
# Thirteen digits with at most one separator between neighbours: every PAN the scanner
# finds, contiguous or grouped, holds such a window, so text without one is skipped at the
# regex engine's speed. Bounded (12 steps of two choices): no catastrophic backtracking.
_CANDIDATE = re.compile(r"[0-9](?:[ \-]?[0-9]){12}")
_STRETCH = re.compile(r"[0-9 \-]+")
# Where _CANDIDATE windows can be: runs of thirteen or more digits, spaces and dashes from
# a digit on (a window is made of nothing else). A plain character-class loop for the regex
# engine, so text of ids and amounts is passed over fast and only such runs are searched.
_RUN = re.compile(r"[0-9][0-9 \-]{12,}")
# The bytes of _RUN's characters as 1, every other byte (non-ASCII ones included) as 0.
_RUN_BYTES = bytes(49 if chr(b) in "0123456789 -" else 48 for b in range(256))
_THIRTEEN = b"1" * 13
# A JSON number with an exponent may stand for a 13-19 digit integer in fewer digits.
# Two patterns, not one alternation with ``^``: a pattern that starts with a character
# class lets the regex engine skip ahead to the next ``:``, ``,`` or ``[``.
_RAW_EXPONENT = re.compile(rb"[:,\[]\s*-?[0-9]+(?:\.[0-9]*)?[eE]")
_RAW_EXPONENT_FIRST = re.compile(rb"\s*-?[0-9]+(?:\.[0-9]*)?[eE]")
# What both need: a digit or a decimal point, then the exponent's letter. Found at the
# regex engine's scanning speed, where the two patterns try a match at every , : and [.
_DIGIT_E = re.compile(rb"[0-9.][eE]")
# The digit sum of 2*d, for the digits Luhn doubles.
_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def luhn_valid(digits: str) -> bool:
    """Whether ``digits`` (ASCII digits only, at least two) passes the Luhn checksum."""
    if len(digits) < 2 or not digits.isascii() or not digits.isdigit():
        return False
    return _luhn_sums(digits)[0] % 10 == 0


def _luhn_sums(digits: str) -> tuple[int, int]:
    """Luhn sums of ``digits`` when its last digit is at an even (0) or odd (1) position
    counted from the right end of the whole number: a group's share of a longer number."""
    even = odd = 0
    for k, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if k % 2:
            even += _DOUBLED[d]
            odd += d
        else:
            even += d
            odd += _DOUBLED[d]
    return even, odd


class _Group(NamedTuple):
    end: int
    length: int
    sums: tuple[int, int]


def text_contains_pan(text: str) -> bool:
    """Whether ``text`` holds a card number anywhere (see the module docstring).

    Every PAN, a run or a chain, starts a ``_CANDIDATE`` window; the leftmost window of a
    stretch of digits, spaces and dashes starts at or before every PAN in it, and nothing
    before that window chains to it (else the window would start earlier). So each such
    stretch is scanned from its first window on, once, and text that is mostly other
    characters (ids, hex, prose) costs a pass of the regex engine."""
    return any(_run_contains_pan(text, run.start(), run.end()) for run in _RUN.finditer(text))


def _run_contains_pan(text: str, lo: int, hi: int) -> bool:
    """One maximal run of digits, spaces and dashes (from its first digit): windows never
    cross a run's ends, so the run is scanned on its own."""
    scanned_to = lo
    for window in _CANDIDATE.finditer(text, lo, hi):
        if window.start() < scanned_to:
            continue
        match = _STRETCH.match(text, window.end(), hi)
        end = match.end() if match else window.end()
        if _stretch_contains_pan(text, window.start(), end):
            return True
        scanned_to = end
    return False


def _stretch_contains_pan(text: str, lo: int, hi: int) -> bool:
    """The digit runs of ``text[lo:hi]``, alone or chained, as the module docstring says;
    whether a run is glued to a letter is judged on ``text`` itself."""
    chain: deque[_Group] = deque(maxlen=MAX_PAN_DIGITS // _MIN_GROUP + 1)
    for match in _DIGITS.finditer(text, lo, hi):
        start, end = match.span()
        length = end - start
        glued = _touches_alnum(text, start, end)
        if MIN_PAN_DIGITS <= length <= MAX_PAN_DIGITS:
            if not glued and luhn_valid(match.group()):
                return True
            chain.clear()
            continue
        if not _MIN_GROUP <= length <= _MAX_GROUP or glued:
            chain.clear()
            continue
        if chain and not (chain[-1].end + 1 == start and text[start - 1] in _SEPARATORS):
            chain.clear()
        chain.append(_Group(end, length, _luhn_sums(match.group())))
        if _chain_ends_in_pan(chain):
            return True
    return False


def json_may_hold_pan(raw: bytes) -> bool:
    """False only when the JSON text ``raw`` holds no card number in any string, key or
    number: a cheap check before ``find_pan`` on the parsed value.

    Without backslashes, the JSON text shows every string and key as it is, set apart by
    quotes (which glue to nothing), and every number as its digits, so scanning the text
    itself finds all that ``find_pan`` would, and perhaps more (``find_pan`` decides). A
    backslash (an escape could spell a digit, or put a letter such as ``\\t`` before one) or
    a number with an exponent (a 16-digit integer in four digits) sends the body to the
    full scan."""
    if b"\\" in raw:
        return True
    # Numbers stand outside strings, and with no backslash every quote opens or closes
    # one: the exponent patterns need only the text between strings (a few bytes per
    # item of a large body, where the patterns would try every comma and colon).
    between = b"".join(raw.split(b'"')[::2])
    if _DIGIT_E.search(between) and (
        _RAW_EXPONENT.search(between) or _RAW_EXPONENT_FIRST.match(between)
    ):
        return True
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return True
    if not raw.isascii():
        return text_contains_pan(text)
    return _ascii_contains_pan(text, raw.translate(_RUN_BYTES))


def _ascii_contains_pan(text: str, marks: bytes) -> bool:
    """``text_contains_pan`` for ASCII text, given ``marks`` (its bytes mapped by
    ``_RUN_BYTES``): each maximal stretch of digits, spaces and dashes that holds 13 in a
    row, from its first digit, is a ``_RUN`` match if 13 or more long, and nothing else
    is. Found by substring searches in C rather than the regex engine's attempt at every
    digit (a body of ids is mostly digits)."""
    at = marks.find(_THIRTEEN)
    while at >= 0:
        # ``at`` starts its stretch: a one before it would have been found first.
        end = marks.find(b"0", at)
        if end < 0:
            end = len(marks)
        digit = _DIGITS.search(text, at, end)
        lo = digit.start() if digit is not None else end
        if end - lo >= MIN_PAN_DIGITS and _run_contains_pan(text, lo, end):
            return True
        at = marks.find(_THIRTEEN, end)
    return False


def _touches_alnum(text: str, start: int, end: int) -> bool:
    """Digits glued to a letter (or another script's digit) belong to an identifier."""
    return (start > 0 and text[start - 1].isalnum()) or (end < len(text) and text[end].isalnum())


def _chain_ends_in_pan(chain: deque[_Group]) -> bool:
    """Whether some run of the chain's last groups forms a Luhn-valid 13-19 digit number."""
    total = checksum = 0
    for group in reversed(chain):
        checksum += group.sums[total % 2]
        total += group.length
        if total > MAX_PAN_DIGITS:
            return False
        if total >= MIN_PAN_DIGITS and checksum % 10 == 0:
            return True
    return False


def _number_contains_pan(value: int | float) -> bool:
    if isinstance(value, float):
        if not value.is_integer() or abs(value) >= 1e20:
            return False
        value = int(value)
    digits = str(abs(value))
    return MIN_PAN_DIGITS <= len(digits) <= MAX_PAN_DIGITS and luhn_valid(digits)


def _join(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


def find_pan(value: object, *, root: str = "") -> str | None:
    """The path of the first card number in a JSON-like ``value``, or ``None``.

    Looks inside strings, integers and integral floats at any depth of dicts, lists and
    tuples, and at dict keys. The path names keys with dots and list items with ``[i]``
    (``find_pan(request, root="body")`` answers e.g. ``"body.metadata.note"``); a PAN in
    ``value`` itself answers ``root`` (or ``"$"`` when ``root`` is empty), and a PAN in a
    dict key answers the dict's path plus ``"<key>"``. The number itself is never returned,
    so the answer is safe to log.
    """
    stack: list[tuple[object, str]] = [(value, root)]
    seen: set[int] = set()
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if text_contains_pan(item):
                return path or "$"
        elif isinstance(item, bool):
            continue
        elif isinstance(item, int | float):
            if _number_contains_pan(item):
                return path or "$"
        elif isinstance(item, Mapping | list | tuple):
            if id(item) in seen:  # a cycle: not JSON, but never loop forever
                continue
            seen.add(id(item))
            children: list[tuple[object, str]] = []
            if isinstance(item, Mapping):
                for key, child in item.items():
                    name = str(key)
                    if text_contains_pan(name):
                        children.append((name, _join(path, "<key>")))
                    else:
                        children.append((child, _join(path, name)))
            else:
                children = [(child, f"{path}[{i}]") for i, child in enumerate(item)]
            stack.extend(reversed(children))
    return None

"""Relay-style forward pagination over stable keys, with opaque cursors.

A cursor is unpadded URL-safe base64 of ``<kind>:<key>``; the kind keeps a cursor of one
connection from being used with another. Keys: ``wallet_id`` for wallets, ``position``
for transfers, ``(at, position)`` for statement entries (``at`` in epoch microseconds).
A malformed cursor, or a negative ``first``, is a ``validation-error``; ``first`` above
``MAX_PAGE`` is lowered to ``MAX_PAGE``.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from datetime import UTC, datetime, timedelta

from domain.errors import ValidationError

DEFAULT_PAGE = 20
MAX_PAGE = 500

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BIGINT_MAX = 2**63 - 1
_POSITION = re.compile(r"[0-9]{1,19}")
_MICROS = re.compile(r"-?[0-9]{1,18}")


def page_size(first: int | None) -> int:
    if first is None:
        return DEFAULT_PAGE
    if first < 0:
        raise ValidationError("first must not be negative")
    return min(first, MAX_PAGE)


def _encode(kind: str, key: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{key}".encode()).decode().rstrip("=")


def _invalid(cursor: str) -> ValidationError:
    return ValidationError(f"after: {cursor!r} is not a cursor of this connection")


def _position(key: str, cursor: str) -> int:
    if not _POSITION.fullmatch(key) or int(key) > _BIGINT_MAX:
        raise _invalid(cursor)
    return int(key)


def _decode(kind: str, cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    prefix, sep, key = raw.partition(":")
    if prefix != kind or not sep or not key:
        raise _invalid(cursor)
    return key


def wallet_cursor(wallet_id: str) -> str:
    return _encode("w", wallet_id)


def parse_wallet_cursor(cursor: str) -> str:
    key = _decode("w", cursor)
    try:
        return str(uuid.UUID(key))
    except ValueError:
        raise _invalid(cursor) from None


def transfer_cursor(position: int) -> str:
    return _encode("t", str(position))


def parse_transfer_cursor(cursor: str) -> int:
    return _position(_decode("t", cursor), cursor)


def statement_cursor(at: datetime, position: int) -> str:
    micros = (at - _EPOCH) // timedelta(microseconds=1)
    return _encode("s", f"{micros}:{position}")


def parse_statement_cursor(cursor: str) -> tuple[datetime, int]:
    micros, _, position = _decode("s", cursor).partition(":")
    if not _MICROS.fullmatch(micros):
        raise _invalid(cursor)
    try:
        at = _EPOCH + timedelta(microseconds=int(micros))
    except OverflowError:
        raise _invalid(cursor) from None
    return at, _position(position, cursor)

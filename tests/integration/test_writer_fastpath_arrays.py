"""The recorder's pre-encoded binary arrays read back in PostgreSQL as the lists they
were built from (``infrastructure/eventstore.py``: events, idempotency rows, version probe)."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from infrastructure.database import ConnectionParams
from infrastructure.eventstore import ByteaArray, Int4Array, Int8Array, TextArray, UuidArray

pytestmark = pytest.mark.integration

CASES: list[tuple[Any, str, list[Any]]] = [
    (UuidArray, "uuid[]", [uuid.uuid4(), uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)]),
    (Int8Array, "bigint[]", [0, 1, -1, 2**63 - 1, -(2**63)]),
    (Int8Array, "bigint[]", [None, 5, None]),
    (Int4Array, "int[]", [200, 422, -(2**31), 2**31 - 1]),
    (
        TextArray,
        "text[]",
        ["", "domain.wallet:Wallet.Debited", 'ä ✓ "q" \\ {a,b} NULL', "x" * 10_000],
    ),
    (ByteaArray, "bytea[]", [b"", b'{"a":1}', bytes(range(256)), b"\\x00" * 5_000]),
]


@pytest.mark.parametrize(("array", "sql_type", "values"), CASES)
def test_binary_arrays_round_trip(
    fresh_db: ConnectionParams, array: Any, sql_type: str, values: list[Any]
) -> None:
    with psycopg.connect(fresh_db.conninfo, autocommit=True) as conn:
        for items in (values, values[:1], []):
            row = conn.execute(f"SELECT %b::{sql_type}", (array.of(items),)).fetchone()
            assert row is not None
            assert row[0] == items
            unnested = conn.execute(
                f"SELECT x FROM unnest(%b::{sql_type}) WITH ORDINALITY AS t(x, n) ORDER BY n",
                (array.of(items),),
            ).fetchall()
            assert [r[0] for r in unnested] == items

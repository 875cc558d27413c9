"""The read-model buffers' own COPY and array formatting: rows formatted without escaping
only when no value needs it, the escaping formatter otherwise, and array literals refused
when a value would not read back as itself."""

from __future__ import annotations

import pytest

from infrastructure.readmodels import (
    BalancesBuffer,
    StatementsBuffer,
    TransfersBuffer,
    copy_rows,
    copy_text,
    int_array,
    text_array,
)

AT = "2026-11-30T06:13:25.961625+00:00"
NASTY = ["a\tb", "a\nb", "a\\b", "a\rb", "\\N", "\t\\N\t"]


def test_copy_rows_escapes_as_postgresql_reads_them():
    assert copy_rows([("a\tb\\c\nd\re", None, True, False, 5, {"k": "v\\"})]) == (
        b"a\\tb\\\\c\\nd\\re\t\\N\tt\tf\t5\t" + b'{"k":"v\\\\\\\\"}' + b"\n"
    )


def statement(wallet: str, position: int, kind: str = "transfer") -> tuple:
    return (wallet, position, "t-" + wallet, kind, -5, 100, "c-" + wallet, AT)


def test_statement_rows_go_sorted_by_key_and_formatted_as_copy_rows_would():
    buffer = StatementsBuffer("t")
    rows = [statement("b", 1), statement("a", 2), statement("b", 3), statement("a", 4)]
    for row in rows:
        buffer.add_entry(row)
    buffer.seal()
    expected = sorted(rows, key=lambda r: (r[0], r[1]))
    assert buffer.data == copy_rows(expected)


@pytest.mark.parametrize("value", NASTY)
def test_a_value_that_needs_escaping_sends_the_batch_through_the_escaping_formatter(value):
    buffer = StatementsBuffer("t")
    rows = [statement("a", 1), statement("b", 2, kind=value)]
    for row in rows:
        buffer.add_entry(row)
    buffer.seal()
    assert buffer.data == copy_rows(rows)


def transfer(tid: str, expires_at: str | None, metadata: dict, merchant: str = "acme") -> tuple:
    return (tid, merchant, "transfer", "d", "c", 5, "USD", "posted", 5, False, expires_at,
            metadata, AT, AT, 7)  # fmt: skip


@pytest.mark.parametrize("value", [*NASTY, "plain"])
def test_transfer_rows_with_nulls_and_any_text(value):
    rows = [
        transfer("b", None, {}),
        transfer("a", AT, {"note": value}),
        transfer("c", None, {}, merchant=value),
    ]
    buffer = TransfersBuffer("t")
    for row in rows:
        buffer.transfer_created(row)
    buffer.seal()
    assert buffer.data == copy_rows(sorted(rows))


def test_copy_text_counts_null_markers_apart_from_values():
    rows = [("x", None), ("\\N", None)]
    lines = ["x\t\\N\n", "\\N\t\\N\n"]  # the second row's text value looks like NULL
    assert copy_text(rows, lines, 2, nulls=2) == copy_rows(rows) == b"x\t\\N\n\\\\N\t\\N\n"


def test_array_literals():
    assert int_array([1, None, -3]) == "{1,NULL,-3}"
    assert text_array(["a", None]) == '{"a",NULL}'
    assert int_array([]) == "{}"
    assert text_array([]) == "{}"


@pytest.mark.parametrize("values", [[1, "2,3"], [1.5], [True], ["NULL"]])
def test_int_array_refuses_anything_but_integers(values):
    assert int_array(values) is None


@pytest.mark.parametrize("value", ['a"b', "a\\b"])
def test_text_array_refuses_what_would_need_escaping(value):
    assert text_array(["ok", value]) is None


def test_balance_changes_as_arrays_in_wallet_order():
    buffer = BalancesBuffer("t")
    buffer.wallet_opened("w3", "acme", "USD", 0, {"k": "v"}, AT, 1)
    buffer.wallet_changed("w3", "posted", 50, 2, "T2", 2)  # lands in the opened row
    buffer.wallet_changed("w2", "posted", 70, 9, "T3", 3)
    buffer.wallet_changed("w2", "pending", 5, 10, "T4", 4)
    buffer.world_moved("w1", "USD", -50, "T2", 2)
    buffer.world_moved("w1", "USD", -20, "T5", 5)
    buffer.wallet_changed("w2", "status", "frozen", 11, "T6", 6)
    buffer.seal()
    assert buffer.opened_data == copy_rows(
        [("w3", "acme", "USD", "active", 0, 50, 0, {"k": "v"}, False, 2, AT, "T2", 2)]
    )
    assert buffer.arrays == (
        '{"w1","w2"}',
        "{NULL,70}",
        "{-70,0}",
        "{NULL,5}",
        '{NULL,"frozen"}',
        "{NULL,11}",
        '{"T5","T6"}',
        "{5,6}",
    )
    assert buffer.worlds == {"w1": ("USD", "T2", 2)}


def test_balance_changes_that_arrays_cannot_carry_go_as_json():
    buffer = BalancesBuffer("t")
    buffer.wallet_changed("w1", "status", 'odd"status', 2, AT, 2)
    buffer.seal()
    assert buffer.arrays == ()

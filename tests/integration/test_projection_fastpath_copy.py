"""Text that needs escaping in COPY rows and array literals reaches the read models
unchanged through the runner's own formatting."""

from __future__ import annotations

import uuid

import pytest

from commands.model import CommandRequest, CreateTransfer, Deposit, OpenWallet
from domain.money import Currency, Money
from domain.principal import Principal
from infrastructure.audit import verify
from infrastructure.projection_runner import ProjectionRunner, live_targets

pytestmark = pytest.mark.integration

USD = Currency.of("USD")
NASTY = {"tab": "a\tb", "newline": "a\nb", "backslash": "a\\b", "cr": "a\rb", "null": "\\N",
         "quote": 'a"b', "braces": "{a,b}", "both": "\t\\N\t"}  # fmt: skip


def run(container, command, principal):
    outcome = container.engine.execute(
        CommandRequest(
            command, principal, correlation_id=str(uuid.uuid4()), idempotency_key=str(uuid.uuid4())
        )
    )
    assert outcome.status < 400, outcome.body
    return outcome.body


def test_metadata_and_merchant_ids_that_need_escaping_are_projected_unchanged(container):
    merchant = "m\\N\t1"
    principal = Principal(merchant, "merchant")
    a = uuid.UUID(
        run(container, OpenWallet(merchant, USD, metadata=NASTY), principal)["wallet"]["id"]
    )
    b = uuid.UUID(run(container, OpenWallet(merchant, USD), principal)["wallet"]["id"])
    run(container, Deposit(a, Money.parse("10.00", USD), metadata=NASTY), principal)
    moved = run(container, CreateTransfer(a, b, Money.of(300, USD), metadata=NASTY), principal)

    runner = ProjectionRunner(container.pool, container.app.mapper, live_targets(), 2)
    runner.setup()
    runner.run_until_caught_up()

    with container.pool.connection() as conn:
        wallets = dict(
            conn.execute("SELECT wallet_id::text, metadata FROM rm_balances WHERE merchant_id = %s",
                         (merchant,)).fetchall()
        )  # fmt: skip
        transfers = conn.execute(
            "SELECT transfer_id::text, metadata, merchant_id FROM rm_transfers"
        ).fetchall()
        posted = dict(conn.execute("SELECT wallet_id::text, posted FROM rm_balances").fetchall())
    assert wallets == {str(a): NASTY, str(b): {}}
    assert {(m["tab"], mid) for _, m, mid in transfers} == {(NASTY["tab"], merchant)}
    assert moved["transfer"]["id"] in {t for t, _, _ in transfers}
    assert (posted[str(a)], posted[str(b)]) == (700, 300)
    assert verify(container).ok

"""Projections: exactly-once under competing runners, rebuild-and-swap while reading,
the sweeper, and the auditor catching a tampered read model."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest

from commands.model import CommandRequest, CreateTransfer, Deposit, OpenWallet
from domain.money import Currency, Money
from domain.principal import Principal
from infrastructure.audit import verify
from infrastructure.projection_runner import ProjectionRunner, live_targets, positions, rebuild
from tests.conftest import wait_for_projections

pytestmark = pytest.mark.integration

ACME = Principal("acme", "merchant")


def run(container, command, key=None):
    outcome = container.engine.execute(
        CommandRequest(
            command,
            ACME,
            correlation_id=str(uuid.uuid4()),
            idempotency_key=key or str(uuid.uuid4()),
        )
    )
    assert outcome.status < 400, outcome.body
    return outcome


def make_history(container, wallets=5, transfers=60):
    usd = Currency.of("USD")
    ids = [
        uuid.UUID(run(container, OpenWallet("acme", usd)).body["wallet"]["id"])
        for _ in range(wallets)
    ]
    for w in ids:
        run(container, Deposit(w, Money.parse("1000.00", usd)))
    last = None
    for i in range(transfers):
        a, b = ids[i % wallets], ids[(i * 7 + 1) % wallets]
        if a == b:
            b = ids[(i + 1) % wallets]
        last = run(container, CreateTransfer(a, b, Money.of(100 + i, usd)))
    return ids, last.position


def table_rows(container, sql):
    with container.pool.connection() as conn:
        return sorted(conn.execute(sql).fetchall())


def test_competing_runners_apply_each_event_exactly_once(container):
    # The service's runner is not started here; two runners race over the same history.
    ids, head = make_history(container, wallets=4, transfers=80)
    runners = [
        ProjectionRunner(container.pool, container.app.mapper, live_targets(), batch_size=7)
        for _ in range(2)
    ]
    threads = [threading.Thread(target=r.run_until_caught_up) for r in runners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tracked, store_head = positions(container.pool)
    assert store_head == head
    assert all(p == head for p in tracked.values()), tracked
    entries = table_rows(
        container,
        "SELECT count(*), count(DISTINCT (wallet_id, position)) FROM rm_statement_entries",
    )
    assert entries[0][0] == entries[0][1] == 4 + 80 * 2  # deposits + two postings per transfer
    report = verify(container)
    assert report.ok, report.summary()


@pytest.mark.parametrize("mode", ["caught-up", "run-once"])
def test_a_projection_ahead_of_the_others_is_never_moved_back(container, mode):
    # The statements projection alone runs to the head first (as after a rebuild swapped
    # in while the others lagged); then all of them run in small batches. Its position
    # must never go back, or its events would be applied twice.
    ids, head = make_history(container, wallets=4, transfers=40)
    statements = [t for t in live_targets() if t.projector.name == "statements"]
    ProjectionRunner(container.pool, container.app.mapper, statements, 1000).run_until_caught_up()
    runner = ProjectionRunner(container.pool, container.app.mapper, live_targets(), batch_size=9)
    if mode == "caught-up":
        runner.run_until_caught_up()
    else:
        while runner.run_once() == runner.batch_size:
            pass
    tracked, store_head = positions(container.pool)
    assert all(p == head == store_head for p in tracked.values()), tracked
    entries = table_rows(
        container,
        "SELECT count(*), count(DISTINCT (wallet_id, position)) FROM rm_statement_entries",
    )
    assert entries[0][0] == entries[0][1] == 4 + 40 * 2
    report = verify(container)
    assert report.ok, report.summary()


def test_rebuild_switches_over_atomically_while_reads_continue(container):
    container.start_background()
    ids, head = make_history(container, wallets=6, transfers=120)
    wait_for_projections(container, head)
    before = table_rows(container, "SELECT wallet_id, posted, pending, version FROM rm_balances")

    errors: list[BaseException] = []
    stop = threading.Event()

    def reader():
        try:
            while not stop.is_set():
                rows = table_rows(
                    container, "SELECT wallet_id, posted FROM rm_balances WHERE NOT is_system"
                )
                assert len(rows) == 6
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    progressed = []
    total = rebuild(container.pool, container.app.mapper, "balances", 50, progressed.append)
    # Writes keep flowing during and after the rebuild.
    usd = Currency.of("USD")
    last = run(container, CreateTransfer(ids[0], ids[1], Money.parse("1.00", usd)))
    wait_for_projections(container, last.position)
    stop.set()
    t.join()
    assert not errors, errors
    assert total >= head and sum(progressed) == total
    after = table_rows(container, "SELECT wallet_id, posted, pending, version FROM rm_balances")
    assert len(after) == len(before)
    report = verify(container)
    assert report.ok, report.summary()
    with container.pool.connection() as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM projection_tracking ORDER BY name")]
        leftovers = conn.execute(
            "SELECT to_regclass('rm_balances__rebuild'), to_regclass('rm_balances__old')"
        ).fetchone()
        # Analyzed before it went live (a table never analyzed has reltuples -1).
        analyzed = conn.execute(
            "SELECT reltuples FROM pg_class WHERE oid = 'rm_balances'::regclass"
        ).fetchone()
    assert names == sorted(t.tracking for t in live_targets())  # no rebuild row left
    assert leftovers == (None, None)
    assert analyzed is not None and analyzed[0] >= 6


def test_rebuild_unknown_projection_is_refused(container):
    with pytest.raises(ValueError, match="unknown projection"):
        rebuild(container.pool, container.app.mapper, "nope", 100)


def test_sweeper_releases_expired_holds(container):
    container.start_background()
    usd = Currency.of("USD")
    a = uuid.UUID(run(container, OpenWallet("acme", usd)).body["wallet"]["id"])
    b = uuid.UUID(run(container, OpenWallet("acme", usd)).body["wallet"]["id"])
    run(container, Deposit(a, Money.parse("50.00", usd)))
    pending = run(
        container, CreateTransfer(a, b, Money.parse("20.00", usd), pending=True, timeout_seconds=1)
    )
    tid = uuid.UUID(pending.body["transfer"]["id"])
    assert container.app.get_wallet(a).pending == 2000
    # Expiry is decided by command time: a command dated past the expiry sees it expired.
    import time

    deadline = time.monotonic() + 10
    while container.app.get_transfer(tid).status != "expired":
        assert time.monotonic() < deadline, "sweeper did not expire the hold"
        time.sleep(0.05)
    wallet = container.app.get_wallet(a)
    assert (wallet.posted, wallet.pending, wallet.available) == (5000, 0, 5000)
    transfer = container.app.get_transfer(tid)
    assert transfer.expires_at is not None
    expired_event = list(container.app.repository.event_store.get(tid))[-1]
    assert expired_event.timestamp >= transfer.expires_at
    assert expired_event.timestamp - transfer.expires_at < timedelta(seconds=10)
    wait_for_projections(container, positions(container.pool)[1])
    report = verify(container)
    assert report.ok, report.summary()


def test_audit_detects_a_tampered_read_model(container):
    ids, head = make_history(container, wallets=3, transfers=10)
    container.runner.run_until_caught_up()
    assert verify(container).ok
    with container.pool.connection() as conn:
        conn.execute("UPDATE rm_balances SET posted = posted + 1 WHERE wallet_id = %s", (ids[0],))
    report = verify(container)
    assert not report.ok
    assert any(str(ids[0]) in m for m in report.mismatches), report.summary()

"""The batched write path: commands from many concurrent callers are grouped into one
transaction; each still obeys every invariant, fails alone, and is stored exactly once."""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commands.model import (
    CommandRequest,
    CreateTransfer,
    Deposit,
    OpenWallet,
    TransferBatch,
    Withdraw,
)
from domain.money import Currency, Money
from domain.principal import Principal
from infrastructure.audit import verify
from infrastructure.container import build
from tests.conftest import test_settings

pytestmark = pytest.mark.integration

ACME = Principal("acme", "merchant")
USD = Currency.of("USD")


def request(command, key=None):
    return CommandRequest(command, ACME, str(uuid.uuid4()), key or str(uuid.uuid4()))


def open_wallets(container, n, funds="100.00"):
    ids = []
    for _ in range(n):
        out = container.engine.execute(request(OpenWallet("acme", USD)))
        wid = uuid.UUID(out.body["wallet"]["id"])
        if funds:
            container.engine.execute(request(Deposit(wid, Money.parse(funds, USD))))
        ids.append(wid)
    return ids


def submit_concurrently(engine, requests, threads=8):
    """Submit from several threads at once, so the writer finds many queued commands."""
    futures = [None] * len(requests)
    barrier = threading.Barrier(threads)

    def worker(offset):
        barrier.wait()
        for i in range(offset, len(requests), threads):
            futures[i] = engine.submit(requests[i])

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return [f.result(timeout=60) for f in futures]


def assert_cache_equals_store(container, wallet_ids):
    for wid in wallet_ids:
        cached = container.engine.cache.get(wid)
        stored = container.app.repository.get(wid)
        assert (
            (stored.posted, stored.pending, stored.version)
            == (
                cached.posted,
                cached.pending,
                cached.version,
            )
            if cached is not None
            else True
        )


ops = st.lists(
    st.tuples(
        st.sampled_from(["deposit", "withdraw", "transfer", "pending", "batch", "atomic"]),
        st.integers(0, 3),
        st.integers(0, 3),
        st.integers(1, 6_000),
    ),
    min_size=5,
    max_size=60,
)


@pytest.fixture
def shared_container(fresh_db):
    c = build(test_settings(), db=fresh_db)
    yield c
    c.close()


# One ledger for all examples on purpose: each example opens its own wallets, and the
# audit at the end of each example covers the whole accumulated history.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=12)
@given(plan=ops)
def test_interleaved_batches_keep_every_invariant(shared_container, plan):
    container = shared_container
    wallets = open_wallets(container, 4, funds="50.00")
    reqs, expected_effects = [], []
    for kind, i, j, cents in plan:
        a, b = wallets[i], wallets[j if j != i else (i + 1) % 4]
        amount = Money.of(cents, USD)
        if kind == "deposit":
            reqs.append(request(Deposit(a, amount)))
        elif kind == "withdraw":
            reqs.append(request(Withdraw(a, amount)))
        elif kind == "transfer":
            reqs.append(request(CreateTransfer(a, b, amount)))
        elif kind == "pending":
            reqs.append(request(CreateTransfer(a, b, amount, pending=True)))
        else:
            items = (CreateTransfer(a, b, amount), CreateTransfer(b, a, Money.of(cents * 3, USD)))
            reqs.append(request(TransferBatch(items, atomic=kind == "atomic")))
        expected_effects.append(kind)
    outcomes = submit_concurrently(container.engine, reqs)

    # Each outcome is exactly one of: success with events, or a business failure.
    posted = defaultdict(int)
    for wid in wallets:
        posted[wid] = 5000
    pending = defaultdict(int)
    for req, out in zip(reqs, outcomes):
        cmd = req.command
        assert out.status in (200, 201, 422, 409), out.body
        if out.status >= 400:
            assert "position" not in out.body
            continue
        if isinstance(cmd, Deposit):
            posted[cmd.wallet_id] += cmd.amount.minor
        elif isinstance(cmd, Withdraw):
            posted[cmd.wallet_id] -= cmd.amount.minor
        elif isinstance(cmd, CreateTransfer) and cmd.pending:
            pending[cmd.debit_wallet_id] += cmd.amount.minor
        elif isinstance(cmd, CreateTransfer):
            posted[cmd.debit_wallet_id] -= cmd.amount.minor
            posted[cmd.credit_wallet_id] += cmd.amount.minor
        else:
            results = out.body["results"]
            if cmd.atomic:
                assert all(r["status"] == "ok" for r in results)
            for item, result in zip(cmd.transfers, results):
                if result["status"] == "ok":
                    posted[item.debit_wallet_id] -= item.amount.minor
                    posted[item.credit_wallet_id] += item.amount.minor
    for wid in wallets:
        stored = container.app.repository.get(wid)
        assert stored.posted == posted[wid]
        assert stored.pending == pending[wid]
        assert stored.available >= 0
    assert_cache_equals_store(container, wallets)
    # Replaying every key answers exactly as the first time, and writes nothing.
    replays = submit_concurrently(container.engine, reqs)
    for first, again in zip(outcomes, replays):
        assert again.replayed and again.status == first.status and again.body == first.body
    container.runner.run_until_caught_up()
    report = verify(container)
    assert report.ok, report.summary()


def test_commands_really_share_transactions(container):
    """Evidence of group commit: many commands, far fewer transactions."""
    wallets = open_wallets(container, 2, funds="1000.00")
    with container.pool.connection() as conn:
        before = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()[0]
    reqs = [
        request(CreateTransfer(wallets[i % 2], wallets[(i + 1) % 2], Money.of(1, USD)))
        for i in range(400)
    ]
    outcomes = submit_concurrently(container.engine, reqs, threads=16)
    assert all(o.status == 201 for o in outcomes)
    positions = sorted({o.position for o in outcomes})
    assert len(positions) == 400  # each command has its own last event
    with container.pool.connection() as conn:
        after = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()[0]
    # Each batch costs a few transactions (key lookup, probe, save); 400 single commits
    # would cost over 1,200.
    assert after - before < 600, after - before


def test_failed_atomic_batch_restores_aggregates_within_a_group(container):
    a, b = open_wallets(container, 2, funds="10.00")
    ok_before = request(CreateTransfer(a, b, Money.parse("1.00", USD)))
    atomic = request(
        TransferBatch(
            (
                CreateTransfer(a, b, Money.parse("2.00", USD)),
                CreateTransfer(a, b, Money.parse("50.00", USD)),
            ),
            atomic=True,
        )
    )
    ok_after = request(CreateTransfer(a, b, Money.parse("3.00", USD)))
    outs = submit_concurrently(container.engine, [ok_before, atomic, ok_after], threads=1)
    assert [o.status for o in outs] == [201, 422, 201]
    wallet = container.app.repository.get(a)
    assert wallet.posted == 1000 - 100 - 300
    assert container.engine.cache.get(a).posted == wallet.posted
    assert container.engine.cache.get(a).version == wallet.version


def test_two_engines_on_the_same_wallets_never_lose_or_double_apply(container):
    """Two writers (as two processes would) race on the same wallets; optimistic
    concurrency makes the loser re-run its commands on fresh state."""
    other = build(test_settings(), db=container.db)
    try:
        wallets = open_wallets(container, 3, funds="100.00")
        reqs_a = [
            request(CreateTransfer(wallets[i % 3], wallets[(i + 1) % 3], Money.of(7, USD)))
            for i in range(150)
        ]
        reqs_b = [
            request(CreateTransfer(wallets[(i + 2) % 3], wallets[i % 3], Money.of(5, USD)))
            for i in range(150)
        ]
        results = {}

        def run(name, engine, reqs):
            results[name] = submit_concurrently(engine, reqs, threads=4)

        ta = threading.Thread(target=run, args=("a", container.engine, reqs_a))
        tb = threading.Thread(target=run, args=("b", other.engine, reqs_b))
        for t in (ta, tb):
            t.start()
        for t in (ta, tb):
            t.join()
        assert all(o.status == 201 for o in results["a"] + results["b"])
        total = sum(container.app.repository.get(w).posted for w in wallets)
        assert total == 3 * 10_000
        with container.pool.connection() as conn:
            n = conn.execute(
                "SELECT count(*) FROM ledger_events WHERE topic LIKE %s", ("%Transfer.Created",)
            ).fetchone()[0]
        assert n == 3 + 300  # three deposits and every transfer exactly once
        # Each key replays on either engine, never re-applies.
        again = other.engine.execute(reqs_a[0])
        assert again.replayed and again.body == results["a"][0].body
        container.runner.run_until_caught_up()
        report = verify(container)
        assert report.ok, report.summary()
    finally:
        other.close()


def test_an_unexpected_error_fails_only_its_own_command(container, monkeypatch):
    """A bug in one command (an exception that is not a business rule) fails that command
    alone; the rest of its batch commits, and nothing of the failed one is written."""
    import commands.dispatch as dispatch

    a, b = open_wallets(container, 2, funds="10.00")
    original = dispatch.HANDLERS[Withdraw]

    def broken(cmd, uow):
        uow.wallet(cmd.wallet_id).debit("x", cmd.amount, "y", "withdrawal", uow.ctx)
        raise RuntimeError("boom")

    monkeypatch.setitem(dispatch.HANDLERS, Withdraw, broken)
    reqs = [
        request(CreateTransfer(a, b, Money.parse("1.00", USD))),
        request(Withdraw(a, Money.parse("2.00", USD))),
        request(CreateTransfer(a, b, Money.parse("3.00", USD))),
    ]
    futures = [container.engine.submit(r) for r in reqs]
    assert futures[0].result(timeout=30).status == 201
    with pytest.raises(RuntimeError, match="boom"):
        futures[1].result(timeout=30)
    assert futures[2].result(timeout=30).status == 201
    monkeypatch.setitem(dispatch.HANDLERS, Withdraw, original)
    wallet = container.app.repository.get(a)
    assert wallet.posted == 1000 - 100 - 300  # the broken withdrawal left no trace
    assert container.engine.cache.get(a).posted == wallet.posted
    container.runner.run_until_caught_up()
    assert verify(container).ok

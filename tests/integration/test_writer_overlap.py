"""The writer applies the next batch while the one before it commits.

Made deterministic by holding the first save at the recorder until the test lets it go:
meanwhile the writer applies the next commands on top of the held batch. Each test shows
the outcome is what one-at-a-time execution gives, whether the held batch commits or
conflicts, and that every key replays its first answer."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from commands.handlers import derived_id
from commands.model import CreateTransfer, Deposit, OpenWallet, TransferBatch, Withdraw
from domain.money import Money
from infrastructure.audit import verify
from infrastructure.container import Container, build
from tests.conftest import test_settings
from tests.integration.test_group_commit import USD, request

pytestmark = pytest.mark.integration


def usd(text: str) -> Money:
    return Money.parse(text, USD)


def wallet(container: Container, funds: str | None = None) -> uuid.UUID:
    out = container.engine.execute(request(OpenWallet("acme", USD)))
    wid = uuid.UUID(out.body["wallet"]["id"])
    if funds:
        container.engine.execute(request(Deposit(wid, usd(funds))))
    return wid


class Held:
    """Holds the engine's next save at the recorder, and notes when the writer has
    applied commands on top of it and whether it had to re-run commands alone."""

    def __init__(self, container: Container, monkeypatch: pytest.MonkeyPatch) -> None:
        engine = container.engine
        recorder = container.app.events.recorder
        self.entered, self.release, self.stacked = (threading.Event() for _ in range(3))
        self.reruns = 0
        insert, prepare, rerun = recorder.insert_events, engine._prepare, engine._rerun_alone
        held = [False]

        def held_insert(*args: Any, **kwargs: Any) -> Any:
            if not held[0]:
                held[0] = True
                self.entered.set()
                assert self.release.wait(30)
            return insert(*args, **kwargs)

        def noting_prepare(jobs: Any, base: Any) -> Any:
            batch = prepare(jobs, base)
            if base is not None:
                self.stacked.set()
            return batch

        def counting_rerun(jobs: Any) -> None:
            self.reruns += 1
            rerun(jobs)

        monkeypatch.setattr(recorder, "insert_events", held_insert)
        monkeypatch.setattr(engine, "_prepare", noting_prepare)
        monkeypatch.setattr(engine, "_rerun_alone", counting_rerun)

    def run(
        self,
        engine: Any,
        first: Any,
        later: list[Any],
        meanwhile: Callable[[], None] = lambda: None,
    ) -> list[Any]:
        """``first`` saved and held; ``meanwhile`` done; ``later`` submitted and applied on
        top of the held batch; then everything let go. The answers, in that order."""
        held = engine.submit(first)
        assert self.entered.wait(30), "the first save never started"
        meanwhile()
        futures = [engine.submit(r) for r in later]
        assert self.stacked.wait(30), "the writer applied nothing on top of the held batch"
        self.release.set()
        return [held.result(30), *(f.result(30) for f in futures)]


def assert_settled(container: Container, reqs: list[Any], outs: list[Any]) -> None:
    """Every key replays its first answer, the cache agrees with the store, audit passes."""
    for req, first in zip(reqs, outs, strict=True):
        again = container.engine.execute(req)
        assert again.replayed and (again.status, again.body) == (first.status, first.body)
    for wid in {w for r in reqs for w in _wallets(r.command)}:
        cached = container.engine.cache.get(wid)
        if cached is not None:
            stored = container.app.repository.get(wid)
            assert (cached.posted, cached.version) == (stored.posted, stored.version)
    container.runner.run_until_caught_up()
    assert verify(container).ok


def _wallets(command: Any) -> set[uuid.UUID]:
    if isinstance(command, TransferBatch):
        return {w for item in command.transfers for w in _wallets(item)}
    if isinstance(command, CreateTransfer):
        return {command.debit_wallet_id, command.credit_wallet_id}
    return {command.wallet_id} if hasattr(command, "wallet_id") else set()


def test_the_next_batch_is_applied_on_top_of_the_committing_one(container, monkeypatch):
    a, b = wallet(container, "10.00"), wallet(container)
    held = Held(container, monkeypatch)
    first = request(CreateTransfer(a, b, usd("6.00")))
    later = [request(CreateTransfer(a, b, usd("3.00"))), request(CreateTransfer(a, b, usd("2.00")))]
    outs = held.run(container.engine, first, later)
    # 10 - 6 = 4, then 3 fits and 2 does not: the later ones saw the held batch's debit.
    assert [o.status for o in outs] == [201, 201, 422]
    assert outs[0].position < outs[1].position  # committed in order
    assert held.reruns == 0
    assert container.app.repository.get(a).posted == 100
    assert_settled(container, [first, *later], outs)


def test_when_the_committing_batch_conflicts_the_next_is_applied_afresh(container, monkeypatch):
    """Another process takes 5.00 from the wallet while the first batch is held: its save
    conflicts and its command re-runs alone (and now fails); the batch applied on top of
    it assumed a debit that never happened, so it is thrown away and applied again."""
    a, b = wallet(container, "10.00"), wallet(container)
    other = build(test_settings(), db=container.db)
    try:
        held = Held(container, monkeypatch)
        first = request(CreateTransfer(a, b, usd("6.00")))
        later = [
            request(CreateTransfer(a, b, usd("3.00"))),
            request(CreateTransfer(a, b, usd("2.00"))),
        ]

        def withdraw_elsewhere() -> None:
            assert other.engine.execute(request(Withdraw(a, usd("5.00")))).status == 201

        outs = held.run(container.engine, first, later, withdraw_elsewhere)
    finally:
        other.close()
    # One at a time on the real state: 5 left, 6 does not fit, then 3 and 2 do.
    assert [o.status for o in outs] == [422, 201, 201], [o.body for o in outs]
    assert outs[0].body["type"] == "/problems/insufficient-funds"
    assert held.reruns == 1
    assert (container.app.repository.get(a).posted, container.app.repository.get(b).posted) == (
        0,
        500,
    )
    assert_settled(container, [first, *later], outs)


def test_a_failed_atomic_batch_on_top_of_a_committing_one_restores_both(container, monkeypatch):
    """The atomic batch's failure restores the wallet as the held batch left it (its
    debit not yet in the store), so the command after it needs no re-run."""
    a, b = wallet(container, "10.00"), wallet(container)
    held = Held(container, monkeypatch)
    first = request(CreateTransfer(a, b, usd("1.00")))
    items = (CreateTransfer(a, b, usd("2.00")), CreateTransfer(a, b, usd("50.00")))
    later = [request(TransferBatch(items, atomic=True)), request(CreateTransfer(a, b, usd("3.00")))]
    outs = held.run(container.engine, first, later)
    assert [o.status for o in outs] == [201, 422, 201]
    assert held.reruns == 0
    assert container.app.repository.get(a).posted == 1000 - 100 - 300
    assert_settled(container, [first, *later], outs)


def test_a_wallet_opened_in_the_committing_batch_is_usable_in_the_next(container, monkeypatch):
    """Not in the store yet, and (with no cache) only the held batch has it."""
    container.engine.cache.maxsize = 0
    a = wallet(container, "10.00")
    held = Held(container, monkeypatch)
    opening = request(OpenWallet("acme", USD))
    # The wallet's id is derived from the request, so the test knows it before the answer.
    new = derived_id("wallet", "acme", opening.idempotency_key, "0")
    later = [request(CreateTransfer(a, new, usd("4.00"))), request(Deposit(new, usd("1.00")))]
    outs = held.run(container.engine, opening, later)
    assert outs[0].body["wallet"]["id"] == str(new)
    assert [o.status for o in outs] == [201, 201, 201], [o.body for o in outs]
    assert held.reruns == 0
    assert container.app.repository.get(new).posted == 500
    assert_settled(container, [opening, *later], outs)


def test_a_save_that_breaks_fails_its_callers_and_the_writer_goes_on(container, monkeypatch):
    """An error no command caused (here: encoding the events) answers the batch's callers
    with it, writes nothing of that batch, and the writer keeps serving."""
    a, b = wallet(container, "10.00"), wallet(container)
    mapper = container.app.events.mapper
    encode = mapper.to_stored_event
    broken = [True]

    def breaks_once(event: Any) -> Any:
        if broken[0]:
            broken[0] = False
            raise RuntimeError("encoder broke")
        return encode(event)

    monkeypatch.setattr(mapper, "to_stored_event", breaks_once)
    failing = request(CreateTransfer(a, b, usd("4.00")))
    with pytest.raises(RuntimeError, match="encoder broke"):
        container.engine.execute(failing)
    after = container.engine.execute(request(CreateTransfer(a, b, usd("3.00"))))
    assert after.status == 201
    again = container.engine.execute(failing)  # never recorded: it runs now
    assert again.status == 201 and not again.replayed
    assert container.app.repository.get(a).posted == 300
    container.runner.run_until_caught_up()
    assert verify(container).ok


def test_the_version_probe_returns_only_what_moved(container):
    """The writer's check of its cached aggregates against the store, compared in the
    database: an id comes back when its stored version is another, or none is stored."""
    from infrastructure.stores import PgVersionProbe

    a, b = wallet(container, "10.00"), wallet(container)  # versions 2 and 1
    unknown = uuid.uuid4()
    probe = PgVersionProbe(container.pool)
    assert probe.moved({}) == []
    assert probe.moved({a: 2, b: 1}) == []
    assert sorted(probe.moved({a: 1, b: 1, unknown: 1})) == sorted([a, unknown])
    assert probe.moved({b: 2}) == [b]  # ahead of the store counts too


def test_the_writer_survives_an_error_in_its_own_loop(container, monkeypatch):
    """Whatever goes wrong in the writer's loop, its callers are answered (with the
    error) and the writer serves the next command."""
    a, b = wallet(container, "10.00"), wallet(container)
    engine = container.engine
    step = engine._next
    broken = [True]

    def breaks_once(jobs: Any, in_flight: Any) -> Any:
        if broken[0]:
            broken[0] = False
            raise RuntimeError("loop broke")
        return step(jobs, in_flight)

    monkeypatch.setattr(engine, "_next", breaks_once)
    with pytest.raises(RuntimeError, match="loop broke"):
        engine.execute(request(CreateTransfer(a, b, usd("4.00"))))
    assert engine.execute(request(CreateTransfer(a, b, usd("3.00")))).status == 201
    assert container.app.repository.get(a).posted == 700

"""The writer applies the next batch while the one before it commits.

Made deterministic by holding the first save at the recorder until the test lets it go:
meanwhile the writer applies the next commands on top of the held batch. Each test shows
the outcome is what one-at-a-time execution gives, whether the held batch commits or
conflicts, and that every key replays its first answer."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

from commands.handlers import derived_id
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
from infrastructure.container import Container, build
from tests.conftest import test_settings

pytestmark = pytest.mark.integration

ACME = Principal("acme", "merchant")
USD = Currency.of("USD")


def request(command: Any) -> CommandRequest:
    return CommandRequest(command, ACME, str(uuid.uuid4()), str(uuid.uuid4()))


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

    def hold(self) -> None:
        assert self.entered.wait(30), "the first save never started"

    def stacked_then_release(self) -> None:
        assert self.stacked.wait(30), "the writer applied nothing on top of the held batch"
        self.release.set()


def assert_replays(container: Container, reqs: list[CommandRequest], outs: list[Any]) -> None:
    for req, first in zip(reqs, outs, strict=True):
        again = container.engine.execute(req)
        assert again.replayed and (again.status, again.body) == (first.status, first.body)


def test_the_next_batch_is_applied_on_top_of_the_committing_one(container, monkeypatch):
    a, b = wallet(container, "10.00"), wallet(container)
    held = Held(container, monkeypatch)
    first = request(CreateTransfer(a, b, usd("6.00")))
    f1 = container.engine.submit(first)
    held.hold()
    later = [request(CreateTransfer(a, b, usd("3.00"))), request(CreateTransfer(a, b, usd("2.00")))]
    futures = [container.engine.submit(r) for r in later]
    held.stacked_then_release()
    outs = [f1.result(30), *(f.result(30) for f in futures)]
    # 10 - 6 = 4, then 3 fits and 2 does not: the later ones saw the held batch's debit.
    assert [o.status for o in outs] == [201, 201, 422]
    assert outs[0].position < outs[1].position  # committed in order
    assert held.reruns == 0
    stored = container.app.repository.get(a)
    assert stored.posted == 100
    cached = container.engine.cache.get(a)
    assert (cached.posted, cached.version) == (stored.posted, stored.version)
    assert_replays(container, [first, *later], outs)
    container.runner.run_until_caught_up()
    assert verify(container).ok


def test_when_the_committing_batch_conflicts_the_next_is_applied_afresh(container, monkeypatch):
    """Another process takes 5.00 from the wallet while the first batch is held: its save
    conflicts and its command re-runs alone (and now fails); the batch applied on top of
    it assumed a debit that never happened, so it is thrown away and applied again."""
    a, b = wallet(container, "10.00"), wallet(container)
    other = build(test_settings(), db=container.db)
    try:
        held = Held(container, monkeypatch)
        first = request(CreateTransfer(a, b, usd("6.00")))
        f1 = container.engine.submit(first)
        held.hold()
        assert other.engine.execute(request(Withdraw(a, usd("5.00")))).status == 201
        later = [
            request(CreateTransfer(a, b, usd("3.00"))),
            request(CreateTransfer(a, b, usd("2.00"))),
        ]
        futures = [container.engine.submit(r) for r in later]
        held.stacked_then_release()
        outs = [f1.result(30), *(f.result(30) for f in futures)]
    finally:
        other.close()
    # One at a time on the real state: 5 left, 6 does not fit, then 3 and 2 do.
    assert [o.status for o in outs] == [422, 201, 201], [o.body for o in outs]
    assert outs[0].body["type"] == "/problems/insufficient-funds"
    assert held.reruns == 1
    stored = container.app.repository.get(a)
    assert (stored.posted, container.app.repository.get(b).posted) == (0, 500)
    assert_replays(container, [first, *later], outs)
    container.runner.run_until_caught_up()
    assert verify(container).ok


def test_a_failed_atomic_batch_on_top_of_a_committing_one_restores_both(container, monkeypatch):
    """The atomic batch's failure restores the wallet as the held batch left it (its
    debit not yet in the store), so the command after it needs no re-run."""
    a, b = wallet(container, "10.00"), wallet(container)
    held = Held(container, monkeypatch)
    first = request(CreateTransfer(a, b, usd("1.00")))
    f1 = container.engine.submit(first)
    held.hold()
    items = (CreateTransfer(a, b, usd("2.00")), CreateTransfer(a, b, usd("50.00")))
    later = [request(TransferBatch(items, atomic=True)), request(CreateTransfer(a, b, usd("3.00")))]
    futures = [container.engine.submit(r) for r in later]
    held.stacked_then_release()
    outs = [f1.result(30), *(f.result(30) for f in futures)]
    assert [o.status for o in outs] == [201, 422, 201]
    assert held.reruns == 0
    stored = container.app.repository.get(a)
    assert stored.posted == 1000 - 100 - 300
    cached = container.engine.cache.get(a)
    assert (cached.posted, cached.version) == (stored.posted, stored.version)
    assert_replays(container, [first, *later], outs)
    container.runner.run_until_caught_up()
    assert verify(container).ok


def test_a_wallet_opened_in_the_committing_batch_is_usable_in_the_next(container, monkeypatch):
    """Not in the store yet, and (with no cache) only the held batch has it."""
    container.engine.cache.maxsize = 0
    a = wallet(container, "10.00")
    held = Held(container, monkeypatch)
    opening = request(OpenWallet("acme", USD))
    f1 = container.engine.submit(opening)
    held.hold()
    # The wallet's id is derived from the request, so the test knows it before the answer.
    new = derived_id("wallet", "acme", opening.idempotency_key, "0")
    later = [request(CreateTransfer(a, new, usd("4.00"))), request(Deposit(new, usd("1.00")))]
    futures = [container.engine.submit(r) for r in later]
    held.stacked_then_release()
    outs = [f1.result(30), *(f.result(30) for f in futures)]
    assert outs[0].body["wallet"]["id"] == str(new)
    assert [o.status for o in outs] == [201, 201, 201], [o.body for o in outs]
    assert held.reruns == 0
    assert container.app.repository.get(new).posted == 500
    assert_replays(container, [opening, *later], outs)
    container.runner.run_until_caught_up()
    assert verify(container).ok


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

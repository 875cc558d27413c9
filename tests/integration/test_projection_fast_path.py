"""The projection runner's fast path against eventsourcing's mapper, over a mixed history
(wallets, transfers, holds, payments, refunds, disputes, pay-outs, schedules): the decoder
makes the mapper's events, routing by topic hands each projector every event it writes
for, and the read models built through the decoder equal those built through the mapper."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from eventsourcing.persistence import Mapper, StoredEvent, Transcoder

from commands.model import (
    CloseWallet,
    CommandRequest,
    CreateTransfer,
    Deposit,
    ExpireTransfer,
    FreezeWallet,
    OpenWallet,
    PostTransfer,
    UnfreezeWallet,
    VoidTransfer,
    Withdraw,
)
from domain.money import Currency, Money
from domain.payment import Payment
from domain.payout import Payout
from domain.principal import Principal
from domain.schedule import RUN, SKIP, ScheduledPayment
from domain.transfer import Transfer
from domain.wallet import Wallet
from infrastructure.event_decoding import EventDecoder
from infrastructure.projection_runner import ProjectionRunner, Target, live_targets
from projections.projectors import all_projectors
from projections.stored import stored_state
from tests.integration.payment_support import (
    PROVIDER,
    Books,
    captured_payment,
    ctx,
    expired_authorization,
    full_story,
    past,
)

pytestmark = pytest.mark.integration

ACME = Principal("acme", "merchant")
USD = Currency.of("USD")
AGGREGATES = (Wallet, Transfer, Payment, Payout, ScheduledPayment)
# Made by the library for every aggregate; the wallet is created by ``Wallet.Opened``.
NEVER_STORED = {Wallet.Created}


def run(container, command):
    outcome = container.engine.execute(
        CommandRequest(
            command, ACME, correlation_id=str(uuid.uuid4()), idempotency_key=str(uuid.uuid4())
        )
    )
    assert outcome.status < 400, outcome.body
    return outcome.body


def ledger_history(container) -> None:
    ids = [
        uuid.UUID(run(container, OpenWallet("acme", USD, metadata={"n": i}))["wallet"]["id"])
        for i in range(4)
    ]
    for w in ids:
        run(container, Deposit(w, Money.parse("500.00", USD), metadata={"via": "bank"}))
    for i in range(12):
        run(container, CreateTransfer(ids[i % 4], ids[(i + 1) % 4], Money.of(100 + i, USD)))
    held = run(container, CreateTransfer(ids[0], ids[2], Money.of(700, USD), pending=True))
    run(container, PostTransfer(uuid.UUID(held["transfer"]["id"]), "5.00"))
    held = run(container, CreateTransfer(ids[1], ids[3], Money.of(900, USD), pending=True))
    run(container, VoidTransfer(uuid.UUID(held["transfer"]["id"])))
    held = run(
        container,
        CreateTransfer(ids[2], ids[0], Money.of(300, USD), pending=True, timeout_seconds=1),
    )
    time.sleep(1.1)
    run(container, ExpireTransfer(uuid.UUID(held["transfer"]["id"])))
    run(container, Withdraw(ids[2], Money.parse("12.34", USD)))
    run(container, FreezeWallet(ids[3], "review"))
    run(container, UnfreezeWallet(ids[3]))
    empty = uuid.UUID(run(container, OpenWallet("acme", USD))["wallet"]["id"])
    run(container, CloseWallet(empty))


def payment_history(container) -> None:
    books = Books(container.app)
    full_story(books)
    failed = books.new_payment("9.00")
    books.step(failed, lambda c: failed.start_attempt(PROVIDER, c))
    books.update(failed, "failed", provider_event_id="e-f", reason="do_not_honor")
    canceled = expired_authorization(books, past(-3600))
    books.step(canceled, lambda c: canceled.cancel(c))
    lost = captured_payment(books, "40.00", fee=0)
    books.update(lost, "dispute_opened", provider_event_id="e-l1", dispute_id="dp_2", amount=4000)
    books.step(lost, lambda c: lost.submit_dispute_evidence({"note": "delivered"}, c))
    books.update(lost, "dispute_lost", provider_event_id="e-l2")
    books.new_payout("20.00", paid=True, fee=10)
    books.new_payout("5.00", paid=False)
    books.new_payout("1.00", paid=None)


def schedule_history(container) -> None:
    start = past(3 * 86400).replace(microsecond=0)
    s = ScheduledPayment.create(
        uuid.uuid4(),
        merchant_id="acme",
        wallet_id=str(uuid.uuid4()),
        amount=Money.of(1_000, USD),
        method="card",
        payment_method_token="tok_visa",
        frequency={"type": "daily", "at": "09:00"},
        starts_at=start,
        metadata={"plan": "gold"},
        ctx=ctx(start),
    )
    s.update(ctx(start + timedelta(hours=1)), amount=Money.of(1_500, USD))
    now = past(0)
    due = s.due(now)
    assert {d.action for d in due} == {RUN, SKIP}  # the missed ones skipped, the last run
    for d in due:
        if d.action == RUN:
            s.start_occurrence(d.number, d.due_at, uuid.uuid4(), ctx(now))
        else:
            s.skip_occurrence(d.number, d.due_at, "missed", ctx(now))
    s.cancel(ctx(now))
    container.app.save(s)


@pytest.fixture
def history(container):
    ledger_history(container)
    payment_history(container)
    schedule_history(container)
    with container.pool.connection() as conn:
        return conn.execute(
            "SELECT notification_id, originator_id, originator_version, topic, state"
            " FROM ledger_events ORDER BY notification_id"
        ).fetchall()


def event_classes() -> set[type]:
    return {
        value
        for aggregate in AGGREGATES
        for value in vars(aggregate).values()
        if isinstance(value, type)
        and issubclass(value, aggregate.Event)
        and value is not aggregate.Event
    } - NEVER_STORED


def mapper_event(mapper: Mapper, row: Any) -> Any:
    _, oid, version, topic, state = row
    return mapper.to_domain_event(StoredEvent(oid, version, topic, bytes(state)))


def test_the_history_has_every_event_type(container, history):
    seen = {type(mapper_event(container.app.mapper, row)) for row in history}
    assert event_classes() <= seen, sorted(c.__qualname__ for c in event_classes() - seen)


def test_the_decoder_makes_the_mappers_events(container, history):
    decoder = EventDecoder(container.app.mapper)
    for row in history:
        expected = mapper_event(container.app.mapper, row)
        got = decoder.decode(*row[1:])
        assert type(got) is type(expected)
        assert got.__dict__ == expected.__dict__
        # Equal and of the same types: a datetime left as text would not compare equal,
        # but an int where the mapper has a bool would.
        assert {k: type(v) for k, v in got.__dict__.items()} == {
            k: type(v) for k, v in expected.__dict__.items()
        }
        assert decoder.event_class(row[3]) is type(expected)


def test_the_decoders_state_is_the_mappers_event_as_stored(container, history):
    decoder = EventDecoder(container.app.mapper)
    for row in history:
        _, oid, version, topic, data = row
        expected = stored_state(mapper_event(container.app.mapper, row))
        got = decoder.state(str(oid), version, topic, data)
        assert got == expected
        assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in expected.items()}


def test_the_hot_projectors_take_stored_state_only():
    # The ledger's projectors never need an event object: the runner decodes none for them.
    for projector in all_projectors():
        if projector.name in {"balances", "statements", "transfers"}:
            for cls in event_classes():
                if issubclass(cls, projector.consumes):
                    assert projector.handler(cls) is not None, (projector.name, cls)


class Recorder:
    """Any projector's writer: records every call; a fold's change is applied at once."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.rows: dict[tuple[str, ...], Any] = {}

    def change(self, key: tuple[str, ...], change: Callable[[Any], Any]) -> None:
        row = change(self.rows.get(key))
        if row is not None:
            self.rows[key] = row
        self.calls.append(("change", key, row))

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args: self.calls.append((name, *args))


def test_routing_hands_each_projector_every_event_it_writes_for(container, history):
    targets = live_targets()
    runner = ProjectionRunner(container.pool, container.app.mapper, targets)
    everything = [Recorder() for _ in targets]
    routed = [Recorder() for _ in targets]
    for row in history:
        nid, *_, topic, _ = row
        event = mapper_event(container.app.mapper, row)
        for target, writer in zip(targets, everything, strict=True):
            target.projector.process(event, nid, writer)
        # As the runner does it: the stored state to the handlers, objects to the rest.
        _, oid, version, _, data = row
        route = runner.route(topic)
        for i, handle in route.by_state:
            handle(runner.decoder.state(str(oid), version, topic, data), nid, routed[i])
        for i in route.by_object:
            targets[i].projector.process(runner.decoder.decode(*row[1:]), nid, routed[i])
    for target, a, b in zip(targets, everything, routed, strict=True):
        assert a.calls, f"{target.projector.name} wrote nothing: the history misses it"
        assert a.calls == b.calls, target.projector.name
        assert a.rows == b.rows, target.projector.name


class WrappedTranscoder(Transcoder):
    """The store's transcoder behind another type: the decoder leaves it to the mapper."""

    def __init__(self, inner: Transcoder) -> None:
        self.inner = inner
        self.decoded = 0

    def encode(self, obj: Any) -> bytes:
        return self.inner.encode(obj)

    def decode(self, data: bytes) -> Any:
        self.decoded += 1
        return self.inner.decode(data)


def table_text(container, table: str) -> list[str]:
    with container.pool.connection() as conn:
        return [r[0] for r in conn.execute(f"SELECT t::text FROM {table} t ORDER BY 1")]


def test_read_models_through_the_decoder_equal_those_through_the_mapper(container, history):
    fast = ProjectionRunner(container.pool, container.app.mapper, live_targets(), batch_size=5)
    fast.setup()
    assert fast.run_until_caught_up() == len(history)

    transcoder = WrappedTranscoder(container.app.mapper.transcoder)
    reference = [
        Target(t.projector, t.table + "__ref", t.tracking + "__ref") for t in live_targets()
    ]
    slow = ProjectionRunner(container.pool, Mapper(transcoder=transcoder), reference, 1000)
    slow.setup()
    assert slow.run_until_caught_up() == len(history)
    assert transcoder.decoded > 0  # the mapper did decode

    for live, ref in zip(live_targets(), reference, strict=True):
        rows = table_text(container, live.table)
        assert rows, f"{live.table} is empty: the history misses it"
        assert rows == table_text(container, ref.table), live.table


def test_a_read_ahead_batch_is_dropped_when_another_runner_moved_on(container, history):
    reference = [
        Target(t.projector, t.table + "__ref", t.tracking + "__ref") for t in live_targets()
    ]
    plain = ProjectionRunner(container.pool, container.app.mapper, reference, 1000)
    plain.setup()
    plain.run_until_caught_up()

    runner = ProjectionRunner(container.pool, container.app.mapper, live_targets(), 5)
    other = ProjectionRunner(container.pool, container.app.mapper, live_targets(), 5)
    runner.setup()
    moved: list[int] = []

    def progress(n: int) -> None:
        # Between two batches of ``runner`` (the next one already read ahead from where
        # this one ended), ``other`` applies that next batch itself.
        if len(moved) < 3:
            moved.append(other.run_once())

    assert runner.run_until_caught_up(progress) + sum(moved) == len(history)
    assert moved == [5, 5, 5]
    for live, ref in zip(live_targets(), reference, strict=True):
        assert table_text(container, live.table) == table_text(container, ref.table), live.table

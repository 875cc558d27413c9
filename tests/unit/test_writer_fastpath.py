"""The writer's fast paths produce exactly what the library's generic code produces.

``DirectEvents`` (domain/direct_events.py) builds the same event objects as eventsourcing's
``trigger_event`` and ``_create``, and ``LedgerMapper`` (infrastructure/eventstore.py)
the same stored events as the library's ``Mapper``: checked over a mixed history of every
Wallet and Transfer event, and the mapper over one instance of every domain event class.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid5

import pytest
from eventsourcing.domain import Aggregate, CanMutateAggregate
from eventsourcing.persistence import Mapper

import domain
from commands.handlers import ID_NAMESPACE, derived_id
from commands.views import transfer_view
from domain import ledger
from domain.context import CommandContext
from domain.direct_events import DirectEvents
from domain.money import Currency, Money
from domain.transfer import DEPOSIT, TRANSFER, WITHDRAWAL, Transfer
from domain.wallet import Wallet
from infrastructure.eventstore import LedgerMapper, OrjsonTranscoder

USD = Currency.of("USD")
NS = UUID("6f1d3c1e-6a3b-4c55-9d0e-1f2a3b4c5d6e")
T0 = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)


def _id(name: str) -> UUID:
    return uuid5(NS, name)


def _ctx(step: int) -> CommandContext:
    return CommandContext(T0 + timedelta(seconds=step), f"corr-{step}", f"key-{step}")


def _mixed_history() -> tuple[list[Aggregate], list[Any]]:
    """Every Wallet and Transfer event, in the order the engine would save them."""
    usd = lambda minor: Money.of(minor, USD)  # noqa: E731
    a = Wallet.open(_id("a"), "acme", USD, 0, {"label": "ä ✓"}, _ctx(0))
    b = Wallet.open(_id("b"), "acme", USD, 500, {}, _ctx(1))
    events: list[Any] = [*a.collect_events(), *b.collect_events()]

    def entry(step: int, **kwargs: Any) -> Transfer:
        return ledger.open_transfer(
            _id(f"t{step}"),
            merchant_id="acme",
            metadata={"step": step},
            ctx=_ctx(step),
            expires_at=kwargs.pop("expires_at", None),
            **kwargs,
        )

    transfers = [
        entry(2, kind=DEPOSIT, debit=None, credit=a, amount=usd(10_000), pending=False),
        entry(3, kind=TRANSFER, debit=a, credit=b, amount=usd(2_500), pending=False),
        entry(
            4,
            kind=TRANSFER,
            debit=a,
            credit=b,
            amount=usd(1_000),
            pending=True,
            expires_at=T0 + timedelta(hours=1),
        ),
        entry(5, kind=TRANSFER, debit=b, credit=a, amount=usd(700), pending=True),
        entry(
            6,
            kind=WITHDRAWAL,
            debit=a,
            credit=None,
            amount=usd(300),
            pending=True,
            expires_at=T0 + timedelta(seconds=7),
        ),
        entry(7, kind=WITHDRAWAL, debit=b, credit=None, amount=usd(100), pending=False),
    ]
    ledger.post_transfer(transfers[2], a, b, usd(400), _ctx(8))
    ledger.void_transfer(transfers[3], b, _ctx(9))
    ledger.expire_transfer(transfers[4], a, _ctx(10))
    b.freeze("review", _ctx(11))
    b.unfreeze(_ctx(12))
    c = Wallet.open(_id("c"), "acme", USD, 0, {}, _ctx(13))
    c.close(_ctx(14))
    aggregates: list[Aggregate] = [a, b, c, *transfers]
    for aggregate in aggregates:
        events.extend(aggregate.collect_events())
    return aggregates, events


def _library_history() -> tuple[list[Aggregate], list[Any]]:
    """The same history through eventsourcing's own trigger_event and _create."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delattr(DirectEvents, "trigger_event")
        patch.delattr(DirectEvents, "_create")
        assert "trigger_event" not in vars(DirectEvents)
        return _mixed_history()


def _attributes(event: Any) -> list[tuple[str, Any]]:
    return list(vars(event).items())  # in order: the stored JSON follows it


def test_direct_events_equal_the_librarys_event_for_event() -> None:
    fast_aggregates, fast = _mixed_history()
    slow_aggregates, slow = _library_history()
    assert len(fast) == len(slow) > 25
    assert {type(e) for e in fast} == {
        *(getattr(Wallet, n) for n in ("Opened", "Debited", "Credited", "HoldPlaced")),
        *(getattr(Wallet, n) for n in ("HoldReleased", "Frozen", "Unfrozen", "Closed")),
        Transfer.Created,
        Transfer.Posted,
        Transfer.Voided,
        Transfer.Expired,
    }
    for mine, theirs in zip(fast, slow, strict=True):
        assert type(mine) is type(theirs)
        assert _attributes(mine) == _attributes(theirs)
        assert mine == theirs
    for mine_agg, their_agg in zip(fast_aggregates, slow_aggregates, strict=True):
        assert type(mine_agg) is type(their_agg)
        assert list(vars(mine_agg).items()) == list(vars(their_agg).items())


def test_stored_events_replay_to_the_same_aggregates() -> None:
    aggregates, events = _mixed_history()
    mapper: Mapper[UUID] = Mapper(transcoder=OrjsonTranscoder())
    rebuilt: dict[UUID, Any] = {}
    for event in events:
        restored = mapper.to_domain_event(mapper.to_stored_event(event))
        assert vars(restored) == vars(event)
        rebuilt[event.originator_id] = restored.mutate(rebuilt.get(event.originator_id))
    for aggregate in aggregates:
        assert rebuilt[aggregate.id] == aggregate


def test_fast_path_keeps_pending_events_until_collected() -> None:
    wallet = Wallet.open(_id("p"), "acme", USD, 0, {}, _ctx(0))
    wallet.credit("t", Money.of(5, USD), "w", TRANSFER, _ctx(1))
    assert [type(e) for e in wallet.pending_events] == [Wallet.Opened, Wallet.Credited]
    assert (wallet.version, wallet.posted, wallet.modified_on) == (2, 5, _ctx(1).now)
    assert wallet.created_on == _ctx(0).now
    assert len(wallet.collect_events()) == 2
    assert wallet.pending_events == []


def test_fast_path_refuses_wrong_attributes_like_the_library() -> None:
    wallet = Wallet.open(_id("q"), "acme", USD, 0, {}, _ctx(0))
    with pytest.raises(TypeError):
        wallet.trigger_event(Wallet.Frozen, reason="x", timestamp=T0)  # no correlation ids
    with pytest.raises(TypeError):
        wallet.trigger_event(Wallet.Unfrozen, unknown=1, **_ctx(1).stamp())
    assert wallet.version == 1
    assert len(wallet.pending_events) == 1


# ---- the mapper ---------------------------------------------------------------------


def _domain_event_classes() -> list[type]:
    for module in pkgutil.iter_modules(domain.__path__):
        importlib.import_module(f"domain.{module.name}")
    found: list[type] = []
    todo: list[type] = [CanMutateAggregate]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("domain.") and dataclasses.is_dataclass(cls):
            found.append(cls)
    return sorted(set(found), key=lambda c: (c.__module__, c.__qualname__))


SAMPLES: list[Callable[[int], Any]] = [
    lambda i: f'text {i} ✓ "quoted" \\ back',
    lambda i: i * 1_000_000_007,
    lambda i: T0 + timedelta(microseconds=i),
    lambda i: {"nested": [i, None, True, 1.5], "ü": {"x": str(i)}},
    lambda i: None,
    lambda i: i % 2 == 0,
    lambda i: [f"a{i}", f"b{i}"],
]


def _synthetic(cls: type, i: int) -> Any:
    """An instance with a value of some JSON-able kind in every field."""
    state: dict[str, Any] = {}
    for n, f in enumerate(dataclasses.fields(cls)):
        if f.name == "originator_id":
            state[f.name] = _id(f"{cls.__qualname__}-{i}")
        elif f.name == "originator_version":
            state[f.name] = i + 1
        else:
            state[f.name] = SAMPLES[(i + n) % len(SAMPLES)](i)
    event = object.__new__(cls)
    object.__setattr__(event, "__dict__", state)
    return event


def test_ledger_mapper_stores_every_event_class_byte_for_byte() -> None:
    library: Mapper[UUID] = Mapper(transcoder=OrjsonTranscoder())
    ours = LedgerMapper(OrjsonTranscoder())
    classes = _domain_event_classes()
    assert Wallet.Debited in classes
    assert Transfer.Created in classes
    assert len(classes) > 30  # payments, pay-outs and schedules too
    _, history = _mixed_history()
    events = history + [_synthetic(cls, i) for i, cls in enumerate(classes * 2)]
    for event in events:
        assert ours.to_stored_event(event) == library.to_stored_event(event)


def test_ledger_mapper_writes_the_class_version_like_the_library() -> None:
    class Versioned(Wallet.Frozen):  # type: ignore[name-defined,misc]
        class_version = 2

    event = _synthetic(Versioned, 3)
    library: Mapper[UUID] = Mapper(transcoder=OrjsonTranscoder())
    stored = LedgerMapper(OrjsonTranscoder()).to_stored_event(event)
    assert stored == library.to_stored_event(event)
    assert b'"class_version":2' in stored.state


def test_ledger_mapper_defers_to_the_library_with_a_compressor() -> None:
    import zlib

    class Zlib:
        def compress(self, data: bytes) -> bytes:
            return zlib.compress(data)

        def decompress(self, data: bytes) -> bytes:
            return zlib.decompress(data)

    _, history = _mixed_history()
    ours = LedgerMapper(OrjsonTranscoder(), compressor=Zlib())  # type: ignore[arg-type]
    library: Mapper[UUID] = Mapper(transcoder=OrjsonTranscoder(), compressor=Zlib())  # type: ignore[arg-type]
    for event in history:
        assert ours.to_stored_event(event) == library.to_stored_event(event)


# ---- ids and views ------------------------------------------------------------------


@pytest.mark.parametrize(
    "parts",
    [
        ("transfer", "acme", "key-1", "0"),
        ("wallet", "mërchant ✓", "", "999"),
        ("payment", "a\x1fb", "𝄞" * 40, "12"),
    ],
)
def test_derived_id_is_uuid5_of_the_joined_parts(parts: tuple[str, ...]) -> None:
    ours, theirs = derived_id(*parts), uuid5(ID_NAMESPACE, "\x1f".join(parts))
    assert ours == theirs and str(ours) == str(theirs) and hash(ours) == hash(theirs)
    assert (ours.version, ours.variant, ours.is_safe) == (5, theirs.variant, theirs.is_safe)


def test_transfer_view_prints_each_creation_time_in_its_own_zone() -> None:
    one = Transfer.create(
        _id("v1"),
        merchant_id="acme",
        kind=DEPOSIT,
        debit_account_id=str(ledger.world_account_id("USD")),
        credit_account_id=str(_id("a")),
        amount=Money.of(1, USD),
        pending=False,
        expires_at=None,
        metadata={},
        ctx=_ctx(0),
    )
    shifted = CommandContext(_ctx(0).now.astimezone(timezone(timedelta(hours=2))), "c", "k")
    other = Transfer.create(
        _id("v2"),
        merchant_id="acme",
        kind=DEPOSIT,
        debit_account_id=str(ledger.world_account_id("USD")),
        credit_account_id=str(_id("a")),
        amount=Money.of(1, USD),
        pending=False,
        expires_at=None,
        metadata={},
        ctx=shifted,
    )
    assert one.created_on == other.created_on
    for _ in range(2):
        assert transfer_view(one)["created_at"] == "2026-11-30T06:00:00+00:00"
        assert transfer_view(other)["created_at"] == "2026-11-30T08:00:00+02:00"
    assert transfer_view(one)["debit_wallet_id"] is None
    assert transfer_view(one)["credit_wallet_id"] == str(_id("a"))
    assert transfer_view(one)["amount"] == "0.01"

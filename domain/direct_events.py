"""Event construction without eventsourcing's generic keyword handling, for the hot path.

The library's ``trigger_event`` and ``_create`` copy the keyword arguments, build the
frozen dataclass through its generated ``__init__`` (one ``object.__setattr__`` per
field), and, for a "created" event, match the event's attributes against the signatures
of ``__base_init__`` and ``__init__`` on every call: most of the writer's time per
command. ``DirectEvents`` builds the same object (same class, same attributes in the
same order, so the same stored bytes) by filling its ``__dict__``, with the field names
and signatures read once per class, then mutates or initialises the aggregate as the
library does. Rebuilding an aggregate from stored events is the library's code,
unchanged. An event class the direct path does not cover (a field with a default, a
``__post_init__`` of its own, its own ``mutate``, an explicit ``TOPIC``) takes the
library's path.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import TYPE_CHECKING, Any, Self
from uuid import UUID

from eventsourcing.domain import Aggregate, CanInitAggregate, CanMutateAggregate, DomainEvent

if TYPE_CHECKING:
    _Base = Aggregate
else:  # a mixin: it must not become an aggregate class of its own
    _Base = object

_MUTATE = CanMutateAggregate.mutate

# Per event class: its field names in declaration order, or None for the library's path.
_fields: dict[type, tuple[str, ...] | None] = {}
# Per (aggregate class, created event class): how to initialise the aggregate, or None.
_inits: dict[tuple[type, type], _Init | None] = {}


def _direct_fields(event_class: type) -> tuple[str, ...] | None:
    try:
        return _fields[event_class]
    except KeyError:
        pass
    fields = dataclasses.fields(event_class)
    plain = (
        getattr(event_class, "TOPIC", None) is None
        and getattr(event_class, "__post_init__", None) is DomainEvent.__post_init__
        and all(
            f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            for f in fields
        )
    )
    names = tuple(f.name for f in fields) if plain else None
    _fields[event_class] = names
    return names


def _construct(event_class: type, names: tuple[str, ...], kwargs: dict[str, Any]) -> Any:
    """The event object the dataclass ``__init__`` would build from ``kwargs``."""
    try:
        state = {name: kwargs[name] for name in names}
    except KeyError:
        state = {}
    if len(state) != len(kwargs) or not state:
        expected = ", ".join(names)
        msg = f"Can't construct {event_class.__qualname__}: expected {expected}, got {kwargs}"
        raise TypeError(msg)
    event: Any = object.__new__(event_class)
    object.__setattr__(event, "__dict__", state)
    return event


@dataclasses.dataclass(frozen=True, slots=True)
class _Init:
    """What ``CanInitAggregate.mutate`` works out by inspection on every call."""

    topic: str  # the aggregate class's topic, as ``get_topic`` makes it
    base_names: tuple[str, ...]  # event attributes that ``__base_init__`` takes
    init_names: tuple[str, ...]  # event attributes that ``__init__`` takes
    mentions_id: bool  # ``__init__`` takes ``id``


def _direct_init(cls: type, event_class: type, fields: tuple[str, ...]) -> _Init | None:
    try:
        return _inits[cls, event_class]
    except KeyError:
        pass
    init: _Init | None = None
    if (
        getattr(cls, "TOPIC", None) is None and event_class.mutate is CanInitAggregate.mutate  # type: ignore[attr-defined]
    ):
        base_params = inspect.signature(cls.__base_init__).parameters  # type: ignore[attr-defined]
        init_params = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
        init = _Init(
            topic=f"{cls.__module__}:{cls.__qualname__}",
            base_names=tuple(n for n in fields if n in base_params),
            init_names=tuple(n for n in fields if n in init_params),
            mentions_id="id" in init_params,
        )
    _inits[cls, event_class] = init
    return init


class DirectEvents(_Base):
    """Mixin for an ``Aggregate`` subclass (listed before ``Aggregate``)."""

    def trigger_event(
        self,
        event_class: type[CanMutateAggregate[UUID]],
        **kwargs: Any,
    ) -> None:
        names = _direct_fields(event_class)
        if names is None or getattr(type(self), "TOPIC", None):
            super().trigger_event(event_class, **kwargs)
            return
        version = self._version + 1
        kwargs["originator_id"] = self._id
        kwargs["originator_version"] = version
        timestamp = kwargs.get("timestamp")
        if timestamp is None:
            timestamp = kwargs["timestamp"] = event_class.create_timestamp()
        new_event = _construct(event_class, names, kwargs)
        if event_class.mutate is _MUTATE:
            # CanMutateAggregate.mutate: its id and version checks hold by construction.
            new_event.apply(self)
            self._version = version
            self._modified_on = timestamp
        else:
            new_event.mutate(self)
        self._pending_events.append(new_event)

    @classmethod
    def _create(
        cls,
        event_class: type[CanInitAggregate[UUID]],
        *,
        id: UUID | None = None,
        **kwargs: Any,
    ) -> Self:
        names = _direct_fields(event_class)
        init = _direct_init(cls, event_class, names) if names is not None else None
        if names is None or init is None or not isinstance(id, UUID):
            return super()._create(event_class, id=id, **kwargs)
        kwargs["originator_topic"] = init.topic
        kwargs["originator_id"] = id
        kwargs["originator_version"] = cls.INITIAL_VERSION
        if kwargs.get("timestamp") is None:
            kwargs["timestamp"] = event_class.create_timestamp()
        created = _construct(event_class, names, kwargs)
        state = created.__dict__
        # CanInitAggregate.mutate, with the signatures read once per class.
        aggregate = cls.__new__(cls)
        aggregate.__base_init__(**{n: state[n] for n in init.base_names})
        init_kwargs = {n: state[n] for n in init.init_names}
        if init.mentions_id:
            init_kwargs["id"] = id
        aggregate.__init__(**init_kwargs)  # type: ignore[misc]
        created.apply(aggregate)
        aggregate._pending_events.append(created)
        return aggregate


__all__ = ["DirectEvents"]

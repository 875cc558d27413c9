"""Stored events decoded for the projections without eventsourcing's generic mapper.

The projection runner decodes tens of thousands of events a second. ``Mapper.
to_domain_event`` resolves the topic, calls the transcoder, finds an id convertor and runs
the upcasting loop for every event; here the state is parsed with orjson and everything
that depends only on the topic (the class, its id convertor) is looked up once. The result
is the object the mapper makes, attribute for attribute (a test compares both over a mixed
history).

``state`` goes one step further for the projectors that read stored state
(``projections.stored``): the parsed JSON is the result, with no object made.

The decoder stands in for the mapper only where it can: the event store's orjson state,
no cipher, no compression, and an event class at version 1. Any other mapper, and any
topic whose class has a ``class_version`` (its upcasters must run), go through the mapper.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import Mapper, StoredEvent, find_id_convertor
from eventsourcing.utils import resolve_topic

from infrastructure.eventstore import DATETIME_KEYS, OrjsonTranscoder
from projections.stored import State, stored_state


@dataclass(frozen=True, slots=True)
class _EventType:
    cls: type[Any]
    convert_id: Callable[[Any], Any]
    fast: bool  # False: the mapper decodes this topic (upcasting)


class EventDecoder:
    """Decodes the stored events of one application into its domain-event objects."""

    def __init__(self, mapper: Mapper[UUID]) -> None:
        self.mapper = mapper
        self._plain = (
            isinstance(mapper.transcoder, OrjsonTranscoder)
            and mapper.cipher is None
            and mapper.compressor is None
        )
        self._types: dict[str, _EventType] = {}

    def event_class(self, topic: str) -> type[Any]:
        """The domain-event class ``topic`` names (without decoding any state)."""
        return self._type(topic).cls

    def decode(self, originator_id: UUID, originator_version: int, topic: str, state: bytes) -> Any:
        """The domain event stored as (``originator_id``, ``originator_version``, ``topic``,
        ``state``), equal to the mapper's ``to_domain_event`` of the same stored event."""
        kind = self._types.get(topic) or self._type(topic)
        if not kind.fast:
            return self.mapper.to_domain_event(
                StoredEvent(originator_id, originator_version, topic, bytes(state))
            )
        values = orjson.loads(state)
        # The transcoder's rule: these keys hold RFC 3339 strings to read back as datetimes.
        for key in DATETIME_KEYS & values.keys():
            value = values[key]
            if isinstance(value, str):
                values[key] = datetime.fromisoformat(value)
        values["originator_id"] = kind.convert_id(originator_id)
        values["originator_version"] = originator_version
        event = object.__new__(kind.cls)
        object.__setattr__(event, "__dict__", values)
        return event

    def state(self, originator_id: str, originator_version: int, topic: str, state: bytes) -> State:
        """The stored state of an event as the projectors' handlers read it
        (``projections.stored``): the parsed JSON itself on the fast path, with no object
        made and no datetime parsed; through the mapper otherwise."""
        kind = self._types.get(topic) or self._type(topic)
        if not kind.fast:
            return stored_state(self.decode(UUID(originator_id), originator_version, topic, state))
        values: State = orjson.loads(state)
        values["originator_id"] = originator_id
        values["originator_version"] = originator_version
        return values

    def _type(self, topic: str) -> _EventType:
        cls = resolve_topic(topic)
        kind = _EventType(
            cls=cls,
            convert_id=find_id_convertor(cls, UUID),
            fast=self._plain and getattr(cls, "class_version", 1) == 1,
        )
        self._types[topic] = kind
        return kind


__all__ = ["EventDecoder"]

"""Events as the projectors read them: the state they were stored with.

The projection runner parses each stored event's JSON once and hands the resulting
dictionary to every projector that consumes it, instead of building a domain-event object
first. The dictionary holds the event's attributes under their names, plus
``originator_id`` as text and ``originator_version``; datetimes are the RFC 3339 text
they were stored as. Handlers read it and must not change it: several projectors may
share one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

State = dict[str, Any]
# (state, position, writer): writes the rows of one event through the writer.
Handler = Callable[[State, int, Any], None]


def stored_state(event: Any) -> State:
    """The stored-state form of a domain-event object (for events decoded by the mapper,
    and for callers that hold objects)."""
    state = {
        key: value.isoformat() if isinstance(value, datetime) else value
        for key, value in vars(event).items()
    }
    state["originator_id"] = str(event.originator_id)
    return state

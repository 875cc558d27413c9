"""Idempotency records: the stored answer to a request, keyed by (merchant, key).

The record of a request that produced events is written in the same transaction as those
events (the event store's recorder does it), so a crash can never leave one without the
other. A business failure is recorded too: retrying that key replays the failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    merchant_id: str
    key: str
    request_hash: str
    status: int
    body: dict[str, Any]

    def body_at(self, position: int | None) -> dict[str, Any]:
        """The response body; a success carries the position of its last event."""
        if position is None:
            return self.body
        return {**self.body, "position": position}


@dataclass(frozen=True, slots=True)
class StoredResponse:
    request_hash: str
    status: int
    body: dict[str, Any]


class IdempotencyKeyTaken(Exception):
    """Raised by the store when another request already recorded this key."""


class IdempotencyStore(Protocol):
    """Port: look up stored answers. Writing happens with the events (see the recorder)."""

    def get(self, merchant_id: str, key: str) -> StoredResponse | None: ...

    def get_many(self, scopes: list[tuple[str, str]]) -> dict[tuple[str, str], StoredResponse]:
        """Stored answers for many (merchant, key) pairs at once."""
        ...

"""The writer's bounded cache of aggregates, owned by the single writer thread."""

from __future__ import annotations

from collections import OrderedDict
from uuid import UUID

from eventsourcing.domain import Aggregate


class AggregateCache:
    """Least-recently-used aggregates, at most ``maxsize`` of them.

    Only the writer thread touches it. It holds the state as of the last command this
    process applied; the optimistic-concurrency check on save (and a version probe before
    a failure is recorded) catches anything another process wrote meanwhile.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[UUID, Aggregate] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: UUID) -> Aggregate | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, aggregate: Aggregate) -> None:
        if self.maxsize <= 0:
            return
        key = aggregate.id
        self._items[key] = aggregate
        self._items.move_to_end(key)
        while len(self._items) > self.maxsize:
            self._items.popitem(last=False)

    def evict(self, key: UUID) -> None:
        self._items.pop(key, None)

    def clear(self) -> None:
        self._items.clear()

    def versions(self, keys: set[UUID]) -> dict[UUID, int]:
        items = self._items
        return {k: item.version for k in keys if (item := items.get(k)) is not None}

"""The port of the projections that keep one row per aggregate up to date (``payments``,
``refunds``, ``payouts``): the projector hands its writer a *change*, a pure function from
the row as it stands (None before it exists) to the row after the event. The writer loads
the rows a batch touches once, applies the changes in position order and writes the
results, so a projector never reads. A change at or below the row's own position returns
the row unchanged, so applying one twice is harmless.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

R = TypeVar("R")


class RowWriter(Protocol[R]):
    """Keeps rows of one table keyed by ``key``; ``change`` is applied to the row as it
    stands when the batch is written (None if there is none), in the order given."""

    def change(self, key: tuple[str, ...], change: Callable[[R | None], R | None]) -> None: ...

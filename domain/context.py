"""What every command carries into the domain: who asked, why, and when."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class CommandContext:
    """Correlation and causation ids stamped on every event, and the command's time.

    ``now`` is the single clock reading for the whole command: expiry decisions and event
    timestamps use it, so replaying the same command at the same instant decides the same.
    """

    now: datetime
    correlation_id: str
    causation_id: str

    def stamp(self) -> dict[str, Any]:
        """What every event of this command carries: its time and its causes."""
        return {
            "timestamp": self.now,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
        }

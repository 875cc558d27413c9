"""What every command carries into the domain: who asked, why, and when."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class CommandContext:
    """Correlation and causation ids stamped on every event, and the command's time.

    ``now`` is the single clock reading for the whole command: expiry decisions and event
    timestamps use it, so replaying the same command at the same instant decides the same.
    """

    now: datetime
    correlation_id: str
    causation_id: str

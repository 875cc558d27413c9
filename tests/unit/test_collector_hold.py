"""The writer's hold on the cyclic collector: off while busy, never for long, and never
turned on by the writer if someone else had turned it off."""

from __future__ import annotations

import gc
import time

from commands.engine import _CollectorHold


def test_held_while_busy_and_let_go_when_due_or_idle() -> None:
    assert gc.isenabled()
    hold = _CollectorHold(max_s=0.05)
    try:
        hold.hold()
        assert not gc.isenabled()
        hold.hold()  # a second batch: still the same hold
        hold.release_if_due()
        assert not gc.isenabled()  # not held long enough yet
        time.sleep(0.06)
        hold.release_if_due()
        assert gc.isenabled()
        hold.hold()
        assert not gc.isenabled()
        hold.release()  # idle
        assert gc.isenabled()
    finally:
        gc.enable()


def test_a_collector_turned_off_by_someone_else_stays_off() -> None:
    gc.disable()
    try:
        hold = _CollectorHold(max_s=0.0)
        hold.hold()
        hold.release_if_due()
        hold.release()
        assert not gc.isenabled()
    finally:
        gc.enable()

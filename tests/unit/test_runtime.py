"""The collector tuning the long-running commands apply at start-up."""

from __future__ import annotations

import gc
import sys

from infrastructure.runtime import tune_collector, tune_switch_interval
from infrastructure.settings import Settings


def test_start_up_objects_are_frozen_and_young_collections_are_rarer() -> None:
    before = gc.get_threshold()
    try:
        tune_collector(0)
        assert gc.get_threshold() == before and gc.get_freeze_count() == 0
        tune_collector(Settings().gc_gen0_threshold)
        assert gc.get_threshold() == (5_000, *before[1:])
        assert gc.get_freeze_count() > 0
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1  # garbage made after start-up is still collected
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_the_gil_is_handed_over_after_a_millisecond_unless_told_otherwise() -> None:
    before = sys.getswitchinterval()
    try:
        tune_switch_interval(0)
        assert sys.getswitchinterval() == before
        tune_switch_interval(Settings().gil_switch_interval_ms)
        assert sys.getswitchinterval() == 0.001
        tune_switch_interval(Settings(gil_switch_interval_ms=2.5).gil_switch_interval_ms)
        assert sys.getswitchinterval() == 0.0025
    finally:
        sys.setswitchinterval(before)

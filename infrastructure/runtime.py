"""Process-wide tuning for the long-running commands (``ledger serve``, ``ledger project``).

Python's cyclic garbage collector runs a young-generation collection every 700 net
allocations of tracked objects and, every hundred of those, a full collection over every
object the process holds. A ledger server holds many: the writer's wallet cache, the
schema, every module. Measured on the 2-core machine (10,000 wallets, 16 s of batches,
then 64 clients of single transfers): 12 full collections of up to 91 ms each and 1,539
young ones, about 1.9 s of a 10 s run; the single-request p99 was 113 ms.

Start-up objects are frozen (out of every collection) and young collections are rarer.
Not too rare: a young collection's pause grows faster than the garbage it frees. When
each GraphQL query still left ~50 objects in reference cycles (graphql-core's executor,
before ``read_api.schema.AcyclicExecutionContext``), 50,000 net allocations meant 20-70 ms
pauses every half second and a GraphQL p99 of 42-75 ms; 5,000 meant 2 ms pauses and a
p99 of 24-25 ms, with the single-request p99 unchanged (51-52 ms) and no full collection
in either run. Requests may still make cyclic garbage (an error's traceback, say).

The GIL is handed over sooner. A thread that waits for it (the saver back from
PostgreSQL, the event loop with a request ready) gets it only when the holder blocks or,
if the holder is busy (the writer applying a batch), after the switch interval: Python's
5 ms, paid again after each of a save's round trips. At 1 ms, on the 2-core machine
(`/tmp` A/B scripts over HTTP, alternating runs): 4 clients of 1,000-transfer batches
12,254-13,739 -> 13,648-15,010 transfers/s (the writer's wait for the save before it
fell from 7.8-8.7 s to 4.3-4.6 s of ~40), 32 GraphQL clients 2,739-2,750 -> 3,689-3,960
queries/s, 64 single-request clients 2,601-2,648 -> 2,680-2,721 transfers/s.
"""

from __future__ import annotations

import gc
import sys

from infrastructure.settings import Settings


def tune_process(settings: Settings) -> None:
    """What ``ledger serve`` and ``ledger project`` apply once start-up is done."""
    tune_collector(settings.gc_gen0_threshold)
    tune_switch_interval(settings.gil_switch_interval_ms)


def tune_collector(gen0_threshold: int) -> None:
    """Freeze what start-up built (modules, schemas, settings: never garbage) out of the
    collector's reach and collect the young generation only every ``gen0_threshold`` net
    allocations; 0 leaves the collector as it is."""
    if gen0_threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)


def tune_switch_interval(milliseconds: float) -> None:
    """How long a thread holding the GIL keeps it while another waits; 0 leaves Python's."""
    if milliseconds > 0:
        sys.setswitchinterval(milliseconds / 1000)

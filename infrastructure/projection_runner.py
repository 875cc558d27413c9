"""Batched, exactly-once projection runner and the rebuild-and-swap procedure.

``run_once``: one transaction per batch: lock the tracking rows, read the next events
after the lowest position, apply each projector to the events past its own position,
write the rows and the new positions, commit. ``run_until_caught_up`` (catch-up, rebuild)
reads and projects the next batch on a second thread while the current one is written,
and writes each target's rows and position in a transaction of its own, all targets at
once. Either way a target's rows and its position commit together, and a position never
moves back. Several runners (the service's and a ``ledger project`` worker) may run at
once: the row locks make them take turns, never double-apply.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple
from uuid import UUID

from eventsourcing.persistence import Mapper
from psycopg import Connection, sql
from psycopg_pool import ConnectionPool

from infrastructure.event_decoding import EventDecoder
from infrastructure.readmodels import BUFFERS, TABLES, create_table
from projections.projectors import Projector, all_projectors
from projections.stored import Handler

log = logging.getLogger(__name__)

EVENTS_TABLE = "ledger_events"
REBUILD_SUFFIX = "__rebuild"


@dataclass(frozen=True)
class Prepared:
    """A batch ready to write: the rows of ``count`` events up to ``last`` in one buffer
    per target, projected for each target from its position in ``floors``."""

    start: int
    count: int
    last: int
    buffers: list[Any]
    floors: tuple[int, ...]


class Route(NamedTuple):
    """Where the events of one topic go (no target at all: not even decoded)."""

    by_state: tuple[tuple[int, Handler], ...]  # (target index, handler of its stored state)
    by_object: tuple[int, ...]  # target indexes handed the domain-event object


@dataclass(frozen=True)
class Target:
    """One projector writing into one table, tracked under one name."""

    projector: Projector
    table: str
    tracking: str


def live_targets(names: Sequence[str] | None = None) -> list[Target]:
    return [
        Target(p, TABLES[p.name][0], p.name)
        for p in all_projectors()
        if names is None or p.name in names
    ]


def ensure_tables(conn: Connection[Any], targets: Sequence[Target]) -> None:
    for target in targets:
        create_table(conn, target.projector.name, target.table)
        conn.execute(
            "INSERT INTO projection_tracking (name, position) VALUES (%s, 0)"
            " ON CONFLICT (name) DO NOTHING",
            (target.tracking,),
        )


class ProjectionRunner:
    def __init__(
        self,
        pool: ConnectionPool,
        mapper: Mapper[UUID],
        targets: Sequence[Target],
        batch_size: int = 2000,
    ) -> None:
        self.pool = pool
        self.mapper = mapper
        self.targets = list(targets)
        self.batch_size = batch_size
        self.decoder = EventDecoder(mapper)
        # topic -> the targets whose projector consumes it (filled as seen)
        self._routes: dict[str, Route] = {}

    def setup(self) -> None:
        with self.pool.connection() as conn, conn.transaction():
            ensure_tables(conn, self.targets)

    def run_once(self, conn: Connection[Any] | None = None) -> int:
        """Process one batch; returns how many events were read (0 when caught up)."""
        if conn is not None:
            return self._batch(conn)
        with self.pool.connection() as c, c.transaction():
            return self._batch(c)

    def route(self, topic: str) -> Route:
        """The targets whose projector consumes events of ``topic``: those handed its
        stored state, with their handlers, and those handed the event object."""
        cls = self.decoder.event_class(topic)
        by_state: list[tuple[int, Handler]] = []
        by_object: list[int] = []
        for i, t in enumerate(self.targets):
            if not issubclass(cls, t.projector.consumes):
                continue
            handler = getattr(t.projector, "handler", None)
            handle = handler(cls) if handler is not None else None
            if handle is not None:
                by_state.append((i, handle))
            else:
                by_object.append(i)
        route = Route(tuple(by_state), tuple(by_object))
        self._routes[topic] = route
        return route

    def _batch(
        self,
        conn: Connection[Any],
        ahead: Prepared | None = None,
        read_ahead: Callable[[int], None] | None = None,
    ) -> int:
        """One batch in ``conn``'s transaction. ``ahead``: the batch prepared by the read-ahead,
        used if every target is still where it was prepared from. ``read_ahead``: called
        with the batch's last position, before its rows are written, when more may follow."""
        names = [t.tracking for t in self.targets]
        rows = conn.execute(
            "SELECT name, position FROM projection_tracking WHERE name = ANY(%s)"
            " ORDER BY name FOR UPDATE",
            (names,),
        ).fetchall()
        positions = {name: int(pos) for name, pos in rows}
        if ahead is not None and all(p == ahead.start for p in positions.values()):
            batch: Prepared | None = ahead
        else:  # another runner moved on meanwhile, or nothing was read ahead
            floors = [positions[t.tracking] for t in self.targets]
            batch = self._prepare(self._read(conn, min(floors)), floors)
        if batch is None:
            return 0
        if read_ahead is not None and batch.count == self.batch_size:
            read_ahead(batch.last)
        for buffer in batch.buffers:
            buffer.flush(conn)
        # GREATEST: a target already past this batch (rows only above its own position)
        # keeps its position; moving it back would apply events twice.
        conn.execute(
            "UPDATE projection_tracking SET position = GREATEST(position, %s), updated_at = now()"
            " WHERE name = ANY(%s)",
            (batch.last, names),
        )
        return batch.count

    def _read(self, conn: Connection[Any], after: int) -> list[tuple[Any, ...]]:
        # Ids as text: the projectors write them as text, and a UUID object per event
        # would only be turned back into one.
        return conn.execute(
            sql.SQL(
                "SELECT notification_id, originator_id::text, originator_version, topic, state"
                " FROM {} WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
            ).format(sql.Identifier(EVENTS_TABLE)),
            (after, self.batch_size),
            prepare=True,
        ).fetchall()

    def _prepare(self, events: list[tuple[Any, ...]], floors: list[int]) -> Prepared | None:
        """The rows of ``events`` for each target, skipping events at or below its floor."""
        if not events:
            return None
        buffers = [BUFFERS[t.projector.name](t.table) for t in self.targets]
        process = [t.projector.process for t in self.targets]
        routes = self._routes
        decoder = self.decoder
        for nid, oid, version, topic, data in events:
            route = routes.get(topic)
            if route is None:
                route = self.route(topic)
            if route.by_state:
                state = decoder.state(oid, version, topic, data)
                for i, handle in route.by_state:
                    if nid > floors[i]:
                        handle(state, nid, buffers[i])
            if route.by_object:
                event = decoder.decode(UUID(oid), version, topic, data)
                for i in route.by_object:
                    if nid > floors[i]:
                        process[i](event, nid, buffers[i])
        for buffer in buffers:  # rows to bytes here, on the read-ahead thread
            seal = getattr(buffer, "seal", None)
            if seal is not None:
                seal()
        return Prepared(min(floors), len(events), int(events[-1][0]), buffers, tuple(floors))

    def _prepare_after(self, start: int) -> Prepared | None:
        """The read-ahead: the batch after ``start`` for targets all at ``start``, read on a
        connection of its own (events are immutable; the batch's transaction checks the
        positions before using it)."""
        with self.pool.connection() as conn:
            events = self._read(conn, start)
        return self._prepare(events, [start] * len(self.targets))

    def run_until_caught_up(self, progress: Callable[[int], None] | None = None) -> int:
        """Batches until caught up; returns how many events this runner projected.

        While one batch's rows are written, a second thread reads and projects the next
        one, so PostgreSQL's work on a batch overlaps the Python work on the next (the
        projectors are pure and the buffers touch no connection until flushed). Each
        target's rows and position are written in a transaction of its own, all targets
        at once on their own connections, so PostgreSQL's work on the tables (index
        maintenance above all) runs on several backends at a time.
        """
        total = 0
        with (
            ThreadPoolExecutor(1, thread_name_prefix="projection-read-ahead") as reader,
            ThreadPoolExecutor(
                len(self.targets), thread_name_prefix="projection-writer"
            ) as writers,
        ):
            ahead: Future[Prepared | None] | None = None

            def read_ahead(last: int) -> None:
                nonlocal ahead
                ahead = reader.submit(self._prepare_after, last)

            while True:
                batch = ahead.result() if ahead is not None else None
                ahead = None
                if batch is None:
                    batch = self._prepare_from_positions()
                if batch is None:
                    return total
                if batch.count == self.batch_size:
                    read_ahead(batch.last)
                written = list(writers.map(partial(self._write_target, batch), self.indexes))
                if not all(written):  # another runner moved a target: prepare afresh
                    if ahead is not None:
                        ahead.result()
                    ahead = None
                    continue
                total += batch.count
                if progress is not None:
                    progress(batch.count)
                if batch.count < self.batch_size:
                    return total

    @property
    def indexes(self) -> range:
        return range(len(self.targets))

    def _prepare_from_positions(self) -> Prepared | None:
        """The next batch for the targets where they are now (positions read unlocked: each
        target's transaction checks its own before writing)."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT name, position FROM projection_tracking WHERE name = ANY(%s)",
                ([t.tracking for t in self.targets],),
            ).fetchall()
            positions = {name: int(pos) for name, pos in rows}
            floors = [positions[t.tracking] for t in self.targets]
            return self._prepare(self._read(conn, min(floors)), floors)

    def _write_target(self, batch: Prepared, i: int) -> bool:
        """Target ``i``'s rows and new position in one transaction; False, with nothing
        written, if another runner moved the target after the batch was prepared."""
        floor = batch.floors[i]
        if floor >= batch.last:  # already past this batch: nothing of it is for this target
            return True
        target = self.targets[i]
        with self.pool.connection() as conn, conn.transaction():
            row = conn.execute(
                "SELECT position FROM projection_tracking WHERE name = %s FOR UPDATE",
                (target.tracking,),
            ).fetchone()
            if row is None or int(row[0]) != floor:
                return False
            batch.buffers[i].flush(conn)
            conn.execute(
                "UPDATE projection_tracking SET position = %s, updated_at = now() WHERE name = %s",
                (batch.last, target.tracking),
            )
        return True


class BackgroundProjections:
    """Keeps the read models current inside the service: woken on every write."""

    def __init__(self, runner: ProjectionRunner, poll_s: float) -> None:
        self.runner = runner
        self.poll_s = poll_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="projections", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self, _position: int | None = None) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                n = self.runner.run_once()
            except Exception:  # keep running; the next batch retries the same events
                log.exception("projection batch failed")
                n = 0
                self._stop.wait(1.0)
            if n < self.runner.batch_size:
                self._wake.wait(self.poll_s)
                self._wake.clear()


def positions(pool: ConnectionPool) -> tuple[dict[str, int], int]:
    """Each projection's position, and the event store's head position."""
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT name, position FROM projection_tracking ORDER BY name"
        ).fetchall()
        head = conn.execute(
            sql.SQL("SELECT COALESCE(MAX(notification_id), 0) FROM {}").format(
                sql.Identifier(EVENTS_TABLE)
            )
        ).fetchone()
    return {str(n): int(p) for n, p in rows}, int(head[0]) if head else 0


def rebuild(
    pool: ConnectionPool,
    mapper: Mapper[UUID],
    name: str,
    batch_size: int,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Replay ``name`` from position 0 into a new table, then switch over atomically.

    Reads keep using the live table until the switch, which happens in one transaction
    holding the live tracking row, so no event is lost or applied twice across it.
    """
    if name not in TABLES:
        raise ValueError(f"unknown projection {name!r}; known: {', '.join(TABLES)}")
    live_table = TABLES[name][0]
    new_table = live_table + REBUILD_SUFFIX
    tracking = name + REBUILD_SUFFIX
    projector = next(p for p in all_projectors() if p.name == name)
    with pool.connection() as conn, conn.transaction():
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(new_table)))
        conn.execute("DELETE FROM projection_tracking WHERE name = %s", (tracking,))
        ensure_tables(conn, [Target(projector, new_table, tracking)])
    runner = ProjectionRunner(pool, mapper, [Target(projector, new_table, tracking)], batch_size)
    total = runner.run_until_caught_up(progress)
    with pool.connection() as conn:
        # Statistics for the table about to go live: without them the planner takes it
        # for empty until autovacuum comes by (seen as slow reads right after a rebuild).
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(new_table)))
    with pool.connection() as conn, conn.transaction():
        # Hold the live position: the service's runner waits here until the switch commits.
        conn.execute("SELECT position FROM projection_tracking WHERE name = %s FOR UPDATE", (name,))
        while True:
            n = runner.run_once(conn)
            total += n
            if progress is not None and n:
                progress(n)
            if n < batch_size:
                break
        final = conn.execute(
            "SELECT position FROM projection_tracking WHERE name = %s", (tracking,)
        ).fetchone()
        old_table = live_table + "__old"
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(old_table)))
        conn.execute(
            sql.SQL("ALTER TABLE IF EXISTS {} RENAME TO {}").format(
                sql.Identifier(live_table), sql.Identifier(old_table)
            )
        )
        conn.execute(
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                sql.Identifier(new_table), sql.Identifier(live_table)
            )
        )
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(old_table)))
        conn.execute(
            "UPDATE projection_tracking SET position = %s, updated_at = now() WHERE name = %s",
            (final[0] if final else 0, name),
        )
        conn.execute("DELETE FROM projection_tracking WHERE name = %s", (tracking,))
    return total

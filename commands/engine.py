"""The ledger engine: the one seam every write goes through.

Commands are queued to a single writer thread, which checks the idempotency record,
applies the command to the aggregates, and saves every event and the idempotency record
in one transaction. Optimistic concurrency stays the safety net when several processes
write: on a conflict the command is re-run on freshly loaded aggregates.

Batching many queued commands into one transaction (group commit) can replace
``_run_one`` without changing the API or the domain.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from eventsourcing.persistence import RecordConflictError

from commands.application import LedgerApplication
from commands.handlers import UnitOfWork, handle
from commands.idempotency import IdempotencyKeyTaken, IdempotencyRecord, IdempotencyStore
from commands.model import CommandRequest
from commands.problems import RequestProblem, conflict, key_in_use, key_reused, problem_from_error
from domain.context import CommandContext
from domain.errors import LedgerError

log = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES = 20


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the caller gets: HTTP-like status, body, and whether it was replayed."""

    status: int
    body: dict[str, Any]
    position: int | None = None
    replayed: bool = False


@dataclass
class _Job:
    request: CommandRequest
    future: Future[Outcome] = field(default_factory=Future)


def utc_now() -> datetime:
    return datetime.now(UTC)


class LedgerEngine:
    """Executes commands one at a time on a writer thread; thread-safe ``submit``."""

    def __init__(
        self,
        app: LedgerApplication,
        idempotency: IdempotencyStore,
        clock: Callable[[], datetime] = utc_now,
        on_written: Callable[[int], None] | None = None,
    ) -> None:
        self.app = app
        self.idempotency = idempotency
        self.clock = clock
        self.on_written = on_written
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._in_flight: set[tuple[str, str]] = set()
        self._in_flight_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="ledger-writer", daemon=True)
        self._stopped = False
        self._thread.start()

    # ---- public -----------------------------------------------------------------------

    def submit(self, request: CommandRequest) -> Future[Outcome]:
        """Queue a command. A second request with a key still in flight fails at once."""
        if self._stopped:
            raise RuntimeError("engine is stopped")
        job = _Job(request)
        scope = self._scope(request)
        if scope is not None:
            with self._in_flight_lock:
                if scope in self._in_flight:
                    raise key_in_use()
                self._in_flight.add(scope)
        self._queue.put(job)
        return job.future

    def execute(self, request: CommandRequest) -> Outcome:
        """Submit and wait (for the CLI, the sweeper and tests)."""
        return self.submit(request).result()

    def close(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._queue.put(None)
            self._thread.join(timeout=10)

    # ---- writer thread ------------------------------------------------------------------

    @staticmethod
    def _scope(request: CommandRequest) -> tuple[str, str] | None:
        if request.idempotency_key is None:
            return None
        return (request.principal.merchant_id, request.idempotency_key)

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                job.future.set_result(self._run_one(job.request))
            except BaseException as exc:  # delivered to the caller, never lost
                job.future.set_exception(exc)
            finally:
                scope = self._scope(job.request)
                if scope is not None:
                    with self._in_flight_lock:
                        self._in_flight.discard(scope)

    def _replay(self, request: CommandRequest) -> Outcome | None:
        if request.idempotency_key is None:
            return None
        stored = self.idempotency.get(request.principal.merchant_id, request.idempotency_key)
        if stored is None:
            return None
        if stored.request_hash != request.request_hash:
            raise key_reused()
        return Outcome(stored.status, stored.body, stored.body.get("position"), replayed=True)

    def _record(
        self, request: CommandRequest, status: int, body: dict[str, Any]
    ) -> IdempotencyRecord | None:
        if request.idempotency_key is None:
            return None
        return IdempotencyRecord(
            merchant_id=request.principal.merchant_id,
            key=request.idempotency_key,
            request_hash=request.request_hash,
            status=status,
            body=body,
        )

    def _run_one(self, request: CommandRequest) -> Outcome:
        replay = self._replay(request)
        if replay is not None:
            return replay
        now = request.now or self.clock()
        ctx = CommandContext(
            now=now,
            correlation_id=request.correlation_id,
            causation_id=request.idempotency_key or request.correlation_id,
        )
        seed = request.idempotency_key or request.correlation_id
        for _attempt in range(MAX_CONFLICT_RETRIES):
            uow = UnitOfWork(self.app, request.principal, ctx, seed)
            try:
                status, body = handle(request.command, uow)
            except LedgerError as error:
                return self._fail(request, error)
            record = self._record(request, status, body)
            try:
                recordings = self.app.save(*uow.changed(), idempotency=record)
            except IdempotencyKeyTaken:
                # Another process answered this key first: give its answer.
                replay = self._replay(request)
                if replay is None:  # pragma: no cover - the row exists by definition
                    raise
                return replay
            except RecordConflictError:
                # Another writer changed these aggregates: drop cached state and re-run.
                replay = self._replay(request)
                if replay is not None:
                    return replay
                self._evict(uow)
                continue
            position = max((r.notification.id for r in recordings), default=None)
            if position is not None and self.on_written is not None:
                self.on_written(position)
            result = record.body_at(position) if record else {**body, "position": position}
            return Outcome(status, result, position)
        raise conflict()

    def _fail(self, request: CommandRequest, error: LedgerError) -> Outcome:
        body = problem_from_error(error)
        record = self._record(request, error.status, body)
        if record is not None:
            try:
                self.idempotency.record_failure(record)
            except IdempotencyKeyTaken:
                replay = self._replay(request)
                if replay is not None:
                    return replay
        return Outcome(error.status, body)

    def _evict(self, uow: UnitOfWork) -> None:
        cache = self.app.repository.cache
        if cache is None:
            return
        for aggregate in uow.changed():
            with contextlib.suppress(KeyError):
                cache.get(aggregate.id, evict=True)


__all__ = ["LedgerEngine", "Outcome", "RequestProblem"]

"""The ledger engine: the one seam every write goes through, with group commit.

Callers ``submit`` commands from any thread. One writer thread takes every command queued
at that moment (up to ``max_batch``), and for the whole batch:

1. looks up the idempotency keys in one query: a stored answer is replayed, a reused key
   with another request refused;
2. probes the event store once for the current version of every cached aggregate the
   batch names, and drops any that another process has moved on;
3. applies the commands in arrival order to the aggregates (kept in a bounded cache), each
   with every invariant checked: a command that fails fails alone, and any aggregate it
   had partly changed is restored;
4. saves every event and every idempotency record in one transaction (one commit, one
   fsync for the whole batch) and answers every caller with the position of its events.

Optimistic concurrency stays the safety net when several processes write: if the save
conflicts, the cache entries are dropped and each command of the batch is re-run alone on
freshly loaded aggregates, so nothing is lost or applied twice.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import queue
import threading
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import InterfaceError, OperationalError, RecordConflictError

from commands.application import LedgerApplication
from commands.cache import AggregateCache
from commands.dispatch import handle
from commands.handlers import UnitOfWork
from commands.idempotency import IdempotencyKeyTaken, IdempotencyRecord, IdempotencyStore
from commands.model import (
    CloseWallet,
    Command,
    CommandRequest,
    CreateTransfer,
    Deposit,
    ExpireTransfer,
    FreezeWallet,
    PostTransfer,
    TransferBatch,
    UnfreezeWallet,
    VoidTransfer,
    Withdraw,
)
from commands.problems import RequestProblem, conflict, key_in_use, key_reused, problem_from_error
from domain.context import CommandContext
from domain.errors import LedgerError, NotFound
from domain.transfer import PENDING, Transfer

log = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES = 20


class VersionProbe(Protocol):
    """Port: the current (highest stored) version of each aggregate; absent if none."""

    def current_versions(self, ids: Collection[UUID]) -> dict[UUID, int]: ...


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
    resolved: bool = False


@dataclass
class _Applied:
    """A command applied in memory, waiting for its batch to commit."""

    job: _Job
    status: int
    body: dict[str, Any]
    record: IdempotencyRecord | None
    last_event: int | None  # index of its last event in the batch, None if it wrote none


@dataclass
class _Batch:
    events: list[Any] = field(default_factory=list)
    by_aggregate: dict[UUID, list[Any]] = field(default_factory=lambda: defaultdict(list))
    applied: list[_Applied] = field(default_factory=list)
    verified: set[UUID] = field(default_factory=set)


def utc_now() -> datetime:
    return datetime.now(UTC)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a batch is applied and saved.

    A batch keeps every event, body and changed aggregate alive until it commits, so the
    collections its allocations trigger find nothing to free and only walk (and promote)
    those objects: a tenth of the writer's time. Whatever garbage there is, is collected
    after the batch. Only the batch's first attempt: the one-command re-runs after a
    conflict may be many. Left alone if someone else has turned the collector off.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class _Conflict(Exception):
    """The batch's save met another writer's events or idempotency record."""


class LedgerEngine:
    """Executes commands in batches on one writer thread; ``submit`` is thread-safe."""

    def __init__(
        self,
        app: LedgerApplication,
        idempotency: IdempotencyStore,
        probe: VersionProbe,
        *,
        clock: Callable[[], datetime] = utc_now,
        cache_size: int = 10_000,
        max_batch: int = 1_000,
        on_written: Callable[[int], None] | None = None,
    ) -> None:
        self.app = app
        self.idempotency = idempotency
        self.probe = probe
        self.clock = clock
        self.max_batch = max_batch
        self.on_written = on_written
        self.cache = AggregateCache(cache_size)
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._in_flight: set[tuple[str, str]] = set()
        self._in_flight_lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="ledger-writer", daemon=True)
        self._thread.start()

    # ---- public -----------------------------------------------------------------------

    def submit(self, request: CommandRequest) -> Future[Outcome]:
        """Queue a command. A second request with a key still in flight fails at once."""
        if self._stopped:
            raise RuntimeError("engine is stopped")
        scope = self._scope(request)
        if scope is not None:
            with self._in_flight_lock:
                if scope in self._in_flight:
                    raise key_in_use()
                self._in_flight.add(scope)
        job = _Job(request)
        self._queue.put(job)
        return job.future

    def execute(self, request: CommandRequest) -> Outcome:
        """Submit and wait (for the CLI, the sweeper and tests)."""
        return self.submit(request).result()

    def stored_answer(self, request: CommandRequest) -> Outcome | None:
        """The answer stored for the request's idempotency key (replayed), or None; a key
        used with another request is refused. For flows that span several commands."""
        scope = self._scope(request)
        if scope is None:
            return None
        answer = self.idempotency.get_many([scope]).get(scope)
        if answer is None:
            return None
        if answer.request_hash != request.request_hash:
            raise key_reused()
        return Outcome(answer.status, answer.body, answer.body.get("position"), replayed=True)

    def close(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._queue.put(None)
            self._thread.join(timeout=30)

    # ---- writer thread ------------------------------------------------------------------

    @staticmethod
    def _scope(request: CommandRequest) -> tuple[str, str] | None:
        if request.idempotency_key is None:
            return None
        return (request.principal.merchant_id, request.idempotency_key)

    def _resolve(
        self, job: _Job, outcome: Outcome | None = None, error: BaseException | None = None
    ) -> None:
        if job.resolved:
            return
        job.resolved = True
        # Release the key first: its record is committed, so a retry now replays it.
        scope = self._scope(job.request)
        if scope is not None:
            with self._in_flight_lock:
                self._in_flight.discard(scope)
        if error is not None:
            job.future.set_exception(error)
        else:
            assert outcome is not None
            job.future.set_result(outcome)

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            jobs = [first]
            while len(jobs) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                jobs.append(nxt)
            try:
                self._process(jobs)
            except BaseException as exc:  # delivered to every caller, never lost
                log.exception("batch of %d commands failed", len(jobs))
                self.cache.clear()
                for job in jobs:
                    self._resolve(job, error=exc)

    def _process(self, jobs: list[_Job]) -> None:
        try:
            with _collector_paused():
                self._attempt(jobs)
            return
        except _Conflict:
            pass
        # Another writer got in between: re-run each command alone on fresh state.
        for job in jobs:
            if job.resolved:
                continue
            for _ in range(MAX_CONFLICT_RETRIES):
                try:
                    self._attempt([job])
                    break
                except _Conflict:
                    continue
            else:
                self._resolve(job, error=conflict())

    def _attempt(self, jobs: list[_Job]) -> None:
        todo = self._replays(jobs)
        if not todo:
            return
        batch = _Batch()
        self._verify_cache(todo, batch)
        for job in todo:
            self._apply(job, batch)
        records = [(a.record, a.last_event) for a in batch.applied if a.record is not None]
        store = self.app.events
        try:
            # The mapper and recorder directly: Application.save would re-check every
            # event against a runtime Protocol (a tenth of a large batch's time), and the
            # event store's put builds two result objects per event, of which only the
            # position is used (the recorder checks it got one per event, before commit).
            stored = list(map(store.mapper.to_stored_event, batch.events))
            positions = store.recorder.insert_events(stored, idempotency=records) or []
        except (RecordConflictError, IdempotencyKeyTaken, OperationalError, InterfaceError) as exc:
            # A conflict, a lock timeout or a lost connection: nothing or everything of the
            # batch was committed. Re-running each command alone is safe either way: it
            # first looks up its key (a committed command replays) and its aggregates are
            # reloaded (a committed event conflicts instead of applying twice).
            for aggregate_id in batch.by_aggregate:
                self.cache.evict(aggregate_id)
            for applied in batch.applied:
                for aggregate_id in self._declared(applied.job.request.command):
                    self.cache.evict(aggregate_id)
            raise _Conflict from exc
        except BaseException:
            for aggregate_id in batch.by_aggregate:
                self.cache.evict(aggregate_id)
            raise
        for applied in batch.applied:
            position = positions[applied.last_event] if applied.last_event is not None else None
            body = applied.record.body_at(position) if applied.record else applied.body
            if applied.record is None and position is not None:
                body = {**applied.body, "position": position}
            self._resolve(applied.job, Outcome(applied.status, body, position))
        if positions and self.on_written is not None:
            self.on_written(positions[-1])

    def _replays(self, jobs: list[_Job]) -> list[_Job]:
        """Answer the jobs whose key already has a stored answer; return the rest."""
        scopes = [s for s in (self._scope(j.request) for j in jobs) if s is not None]
        stored = self.idempotency.get_many(scopes) if scopes else {}
        todo = []
        for job in jobs:
            if job.resolved:
                continue
            scope = self._scope(job.request)
            answer = stored.get(scope) if scope is not None else None
            if answer is None:
                todo.append(job)
            elif answer.request_hash != job.request.request_hash:
                self._resolve(job, error=key_reused())
            else:
                position = answer.body.get("position")
                self._resolve(job, Outcome(answer.status, answer.body, position, replayed=True))
        return todo

    # ---- the cache ------------------------------------------------------------------------

    def _declared(self, command: Command) -> set[UUID]:
        """Aggregates a command names up front (and, for a cached transfer, its wallets)."""
        if isinstance(command, FreezeWallet | UnfreezeWallet | CloseWallet | Deposit | Withdraw):
            return {command.wallet_id}
        if isinstance(command, CreateTransfer):
            return {command.debit_wallet_id, command.credit_wallet_id}
        if isinstance(command, TransferBatch):
            ids: set[UUID] = set()
            for item in command.transfers:
                ids.add(item.debit_wallet_id)
                ids.add(item.credit_wallet_id)
            return ids
        if isinstance(command, PostTransfer | VoidTransfer | ExpireTransfer):
            ids = {command.transfer_id}
            transfer = self.cache.get(command.transfer_id)
            if isinstance(transfer, Transfer):
                for account in (transfer.debit_account_id, transfer.credit_account_id):
                    ids.add(UUID(account))
            return ids
        for name in ("payment_id", "payout_id", "schedule_id"):  # payments, pay-outs, schedules
            named = getattr(command, name, None)
            if isinstance(named, UUID):
                return {named}
        return set()

    def _verify_cache(self, jobs: list[_Job], batch: _Batch) -> None:
        """One probe for the whole batch: drop cached aggregates another process moved."""
        named: set[UUID] = set()
        for job in jobs:
            named |= self._declared(job.request.command)
        cached = self.cache.versions(named)
        if cached:
            current = self.probe.current_versions(list(cached))
            for aggregate_id, version in cached.items():
                if current.get(aggregate_id) != version:
                    self.cache.evict(aggregate_id)
        batch.verified |= named

    def _loader(self, batch: _Batch) -> Callable[[UUID], Aggregate]:
        def load(aggregate_id: UUID) -> Aggregate:
            aggregate = self.cache.get(aggregate_id)
            if (
                aggregate is not None
                and aggregate_id not in batch.verified
                and aggregate_id not in batch.by_aggregate
            ):
                current = self.probe.current_versions([aggregate_id]).get(aggregate_id)
                if current != aggregate.version:
                    self.cache.evict(aggregate_id)
                    aggregate = None
            batch.verified.add(aggregate_id)
            if aggregate is None:
                try:
                    aggregate = self.app.repository.get(aggregate_id)
                except AggregateNotFoundError:
                    raise NotFound(f"{aggregate_id} not found") from None
                self._keep(aggregate)
            return aggregate

        return load

    def _keep(self, aggregate: Aggregate) -> None:
        # Settled transfers are never written again: keep the cache for wallets and holds.
        if isinstance(aggregate, Transfer) and aggregate.status != PENDING:
            self.cache.evict(aggregate.id)
        else:
            self.cache.put(aggregate)

    # ---- applying one command ---------------------------------------------------------------

    def _apply(self, job: _Job, batch: _Batch) -> None:
        request = job.request
        ctx = CommandContext(
            now=request.now or self.clock(),
            correlation_id=request.correlation_id,
            causation_id=request.idempotency_key or request.correlation_id,
        )
        seed = request.idempotency_key or request.correlation_id
        uow = UnitOfWork(self._loader(batch), request.principal, ctx, seed)
        before = len(batch.events)
        try:
            status, body = handle(request.command, uow)
        except LedgerError as error:
            self._restore(uow, batch)
            body = problem_from_error(error)
            record = self._record(request, error.status, body)
            batch.applied.append(_Applied(job, error.status, body, record, None))
            return
        except Exception as exc:  # a bug in one command must not fail its whole batch
            log.exception("command %s failed unexpectedly", type(request.command).__name__)
            self._restore(uow, batch)
            self._resolve(job, error=exc)
            return
        for aggregate in uow.touched():
            events = aggregate.collect_events()
            if events:
                batch.events.extend(events)
                batch.by_aggregate[aggregate.id].extend(events)
            self._keep(aggregate)
        last = len(batch.events) - 1 if len(batch.events) > before else None
        batch.applied.append(_Applied(job, status, body, self._record(request, status, body), last))

    def _restore(self, uow: UnitOfWork, batch: _Batch) -> None:
        """Undo a failed command's partial changes (an atomic batch's earlier items)."""
        for aggregate in uow.touched():
            if not aggregate.pending_events:
                continue
            aggregate_id = aggregate.id
            self.cache.evict(aggregate_id)
            restored: Any = None
            with contextlib.suppress(AggregateNotFoundError):
                restored = self.app.repository.get(aggregate_id)
            for event in batch.by_aggregate.get(aggregate_id, ()):
                restored = event.mutate(restored)
            if restored is not None:
                self._keep(restored)

    @staticmethod
    def _record(
        request: CommandRequest, status: int, body: dict[str, Any]
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


__all__ = ["LedgerEngine", "Outcome", "RequestProblem", "VersionProbe"]

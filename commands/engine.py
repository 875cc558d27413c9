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

The save runs on a second thread, so that while one batch commits the writer already
applies the next one, on top of the state the committing batch leaves (its aggregates
are pinned until it is settled). Nobody is answered before their batch has committed,
and batches commit in order: the next one is handed to the saver only after the one
before it has committed. If that one fails instead, the next one was built on state that
never was: it is thrown away (its aggregates dropped from the cache) and applied afresh.

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
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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

    def moved(self, versions: Mapping[UUID, int]) -> list[UUID]:
        """The aggregates whose highest stored version is not the one given."""
        ...


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
    jobs: list[_Job]
    # The batch still committing when this one was applied: its changes are this batch's
    # starting point, so its aggregates are taken from it (pinned) rather than from the
    # cache or the store, which may not have them yet.
    base: _Batch | None = None
    events: list[Any] = field(default_factory=list)
    by_aggregate: dict[UUID, list[Any]] = field(default_factory=lambda: defaultdict(list))
    applied: list[_Applied] = field(default_factory=list)
    verified: set[UUID] = field(default_factory=set)
    touched: dict[UUID, Aggregate] = field(default_factory=dict)
    saved: Future[Sequence[int] | None] | None = None

    @property
    def saved_done(self) -> bool:
        return self.saved is not None and self.saved.done()

    def pinned(self, aggregate_id: UUID) -> Aggregate | None:
        """The aggregate as this batch (or, failing that, its base) left it."""
        aggregate = self.touched.get(aggregate_id)
        if aggregate is None and self.base is not None:
            aggregate = self.base.touched.get(aggregate_id)
        return aggregate

    def events_of(self, aggregate_id: UUID) -> list[Any]:
        """Uncommitted events of an aggregate, the base's first."""
        earlier = self.base.by_aggregate.get(aggregate_id, []) if self.base else []
        return [*earlier, *self.by_aggregate.get(aggregate_id, ())]


def utc_now() -> datetime:
    return datetime.now(UTC)


class _CollectorHold:
    """No cyclic garbage collection while the writer is busy, for at most ``max_s`` at a
    time.

    Batches keep their events, bodies and changed aggregates alive until they commit, and
    with overlapping batches one is always alive: every collection their allocations
    trigger finds nothing to free and only walks (and promotes) those objects, a tenth of
    the writer's time when it ran after every batch. Held from the first batch on, the
    collector is let go when the writer has nothing queued (it is about to wait) or has
    held it ``max_s``: the next allocation then collects as usual, once. Not held during
    the one-command re-runs after a conflict, which may be many. Left alone if someone
    else has turned the collector off.
    """

    def __init__(self, max_s: float) -> None:
        self.max_s = max_s
        self.since: float | None = None

    def hold(self) -> None:
        if self.since is None and gc.isenabled():
            gc.disable()
            self.since = time.monotonic()

    def release(self) -> None:
        if self.since is not None:
            self.since = None
            gc.enable()

    def release_if_due(self) -> None:
        if self.since is not None and time.monotonic() - self.since >= self.max_s:
            self.release()


_WAKE = object()  # queued when a save finishes: the writer may answer its callers


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
        overlap: bool = True,
        on_written: Callable[[int], None] | None = None,
    ) -> None:
        self.app = app
        self.idempotency = idempotency
        self.probe = probe
        self.clock = clock
        self.max_batch = max_batch
        self.overlap = overlap
        self.on_written = on_written
        self.cache = AggregateCache(cache_size)
        self._saver = ThreadPoolExecutor(1, thread_name_prefix="ledger-saver")
        self._collector = _CollectorHold(max_s=1.0)
        self._queue: queue.SimpleQueue[_Job | object | None] = queue.SimpleQueue()
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
            self._saver.shutdown(wait=True)

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

    def _take(self) -> tuple[list[_Job], bool]:
        """Wait for something to do, then take the commands queued now (at most
        ``max_batch``); and whether to stop. A save that finished wakes it with none."""
        jobs: list[_Job] = []
        item = self._queue.get()
        while True:
            if item is None:
                return jobs, True
            if isinstance(item, _Job):
                jobs.append(item)
                if len(jobs) >= self.max_batch:
                    return jobs, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return jobs, False

    def _loop(self) -> None:
        in_flight: _Batch | None = None
        while True:
            if self._queue.empty():
                self._collector.release()  # about to wait: collect now, if need be
            jobs, stopping = self._take()
            try:
                if jobs:
                    self._collector.hold()
                    in_flight = self._next(jobs, in_flight)
                    self._collector.release_if_due()
                if in_flight is not None and (stopping or in_flight.saved_done):
                    settling, in_flight = in_flight, None
                    self._settle(settling, None)
            except BaseException as exc:  # the writer must never die: everyone is answered
                # The batch in flight first: its callers get what its save did. Then
                # whichever of these commands has no answer yet gets the error.
                if in_flight is not None:
                    settling, in_flight = in_flight, None
                    try:
                        self._settle(settling, None)
                    except BaseException as again:
                        self._fail(settling.jobs, again)
                self._fail(jobs, exc)
            if stopping:
                self._collector.release()
                return

    def _next(self, jobs: list[_Job], in_flight: _Batch | None) -> _Batch | None:
        """Apply ``jobs`` (on top of the batch in flight), settle the one in flight, and
        start saving the new one; returns the batch now in flight."""
        try:
            batch = self._prepare(jobs, in_flight)
        except BaseException as exc:  # delivered to every caller, never lost
            self.cache.clear()  # it may hold what these half-applied commands changed
            if in_flight is not None:
                self._settle(in_flight, None)
            self._fail(jobs, exc)
            return None
        if in_flight is not None:
            batch = self._settle(in_flight, batch)
        if batch is None:
            return None
        try:
            self._save(batch)
        except BaseException as exc:  # an event its mapper cannot encode, say
            self._discard(batch)
            self._fail(batch.jobs, exc)
            return None
        if self.overlap:
            return batch
        self._settle(batch, None)
        return None

    def _fail(self, jobs: list[_Job], exc: BaseException) -> None:
        log.exception("batch of %d commands failed", len(jobs), exc_info=exc)
        self.cache.clear()
        for job in jobs:
            self._resolve(job, error=exc)

    def _settle(self, batch: _Batch, following: _Batch | None) -> _Batch | None:
        """Wait for ``batch``'s save and answer its callers. On a conflict each of its
        commands is re-run alone; ``following`` (applied on top of it) is then thrown
        away and applied again, and the batch to save next is returned."""
        try:
            self._finish(batch)
            if following is not None:
                following.base = None  # in the store now; and no chain of every batch
            return following
        except _Conflict:
            failure: BaseException | None = None
        except BaseException as exc:
            failure = exc
        if following is not None:
            self._discard(following)
        if failure is not None:
            self._fail(batch.jobs, failure)
        else:
            self._rerun_alone(batch.jobs)
        if following is None:
            return None
        try:
            return self._prepare(following.jobs, None)
        except BaseException as exc:
            self._fail(following.jobs, exc)
            return None

    def _rerun_alone(self, jobs: list[_Job]) -> None:
        """Another writer got in between: re-run each command alone on fresh state."""
        self._collector.release()
        for job in jobs:
            if job.resolved:
                continue
            try:
                for _ in range(MAX_CONFLICT_RETRIES):
                    try:
                        self._attempt([job])
                        break
                    except _Conflict:
                        continue
                else:
                    self._resolve(job, error=conflict())
            except BaseException as exc:  # the store is down, say: this command fails
                self._fail([job], exc)

    def _attempt(self, jobs: list[_Job]) -> None:
        """Apply, save and answer, all before returning."""
        batch = self._prepare(jobs, None)
        if batch is not None:
            self._save(batch)
            self._finish(batch)

    def _prepare(self, jobs: list[_Job], base: _Batch | None) -> _Batch | None:
        """Apply the commands (on top of ``base``, still committing, if given); None when
        every one of them was answered already."""
        todo = self._replays(jobs)
        if not todo:
            return None
        batch = _Batch(todo, base)
        self._verify_cache(todo, batch)
        for job in todo:
            self._apply(job, batch)
        return batch

    def _save(self, batch: _Batch) -> None:
        records = [(a.record, a.last_event) for a in batch.applied if a.record is not None]
        # The mapper and recorder directly: Application.save would re-check every event
        # against a runtime Protocol (a tenth of a large batch's time), and the event
        # store's put builds two result objects per event, of which only the position is
        # used (the recorder checks it got one per event, before commit).
        store = self.app.events
        stored = list(map(store.mapper.to_stored_event, batch.events))
        batch.saved = self._saver.submit(store.recorder.insert_events, stored, idempotency=records)
        batch.saved.add_done_callback(self._wake)

    def _wake(self, _: object) -> None:
        self._queue.put(_WAKE)

    def _discard(self, batch: _Batch) -> None:
        """Drop from the cache everything a batch that will not commit has changed."""
        for aggregate_id in batch.touched:  # every aggregate it wrote events for
            self.cache.evict(aggregate_id)
        for applied in batch.applied:
            for aggregate_id in self._declared(applied.job.request.command):
                self.cache.evict(aggregate_id)

    def _finish(self, batch: _Batch) -> None:
        """Wait for the batch's save, then answer its callers."""
        assert batch.saved is not None
        try:
            positions = batch.saved.result() or []
        except (RecordConflictError, IdempotencyKeyTaken, OperationalError, InterfaceError) as exc:
            # A conflict, a lock timeout or a lost connection: nothing or everything of the
            # batch was committed. Re-running each command alone is safe either way: it
            # first looks up its key (a committed command replays) and its aggregates are
            # reloaded (a committed event conflicts instead of applying twice).
            self._discard(batch)
            raise _Conflict from exc
        except BaseException:
            self._discard(batch)
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
        if batch.base is not None:  # pinned: ahead of the store until the base commits
            pinned = named & batch.base.touched.keys()
            named -= pinned
            batch.verified |= pinned
        cached = self.cache.versions(named)
        if cached:
            for aggregate_id in self.probe.moved(cached):
                self.cache.evict(aggregate_id)
        batch.verified |= named

    def _loader(self, batch: _Batch) -> Callable[[UUID], Aggregate]:
        def load(aggregate_id: UUID) -> Aggregate:
            aggregate = batch.pinned(aggregate_id)
            if aggregate is not None:
                return aggregate
            aggregate = self.cache.get(aggregate_id)
            # Not pinned: the batch has not changed it (what it changed is pinned).
            if aggregate_id not in batch.verified:
                batch.verified.add(aggregate_id)
                if aggregate is not None and self.probe.moved({aggregate_id: aggregate.version}):
                    self.cache.evict(aggregate_id)
                    aggregate = None
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
            aggregate_id = aggregate.id
            events = aggregate.collect_events()
            if events:
                batch.events.extend(events)
                batch.by_aggregate[aggregate_id].extend(events)
                batch.touched[aggregate_id] = aggregate
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
            batch.touched.pop(aggregate_id, None)
            restored: Any = None
            with contextlib.suppress(AggregateNotFoundError):
                restored = self.app.repository.get(aggregate_id)
            # The store has the base's events or not, depending on whether it has
            # committed by now: apply only what it does not have.
            uncommitted = batch.events_of(aggregate_id)
            for event in uncommitted:
                if restored is None or event.originator_version > restored.version:
                    restored = event.mutate(restored)
            if restored is not None:
                if uncommitted:  # ahead of the store: pinned, as every changed aggregate
                    batch.touched[aggregate_id] = restored
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

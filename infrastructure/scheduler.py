"""The scheduler of recurring payments: a background loop, one pass per interval.

Each pass reads the active schedules due at ``now`` from the read model
(``rm_scheduled_payments``), submits one ``RunScheduleOccurrences`` per schedule through
the engine (they share group commits), repeats for the schedules whose plan was bounded
(``more``), and then hands every payment created to ``drive`` (the payment processor's
authorize), after the commit, as for any other payment.

Any number of schedulers may run, in any number of processes: correctness comes from the
schedule's guard and the event store's optimistic concurrency, not from a lock. A
scheduler that lost a race finds nothing to do; the read model's lag only costs a
command that answers "nothing due".
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from uuid import UUID

from psycopg_pool import ConnectionPool

from commands.engine import LedgerEngine, Outcome
from commands.model import CommandRequest
from commands.schedule_commands import RunScheduleOccurrences, as_command
from domain.errors import OccurrenceAlreadyHandled
from domain.principal import Principal

log = logging.getLogger(__name__)

SCHEDULER = Principal("scheduler", "admin")
# Schedules taken per pass, and rounds per pass for schedules whose plan was bounded (a
# per-minute schedule down for a day needs 15 rounds of at most 100 occurrences).
BATCH = 500
MAX_ROUNDS = 50
ALREADY_HANDLED = "/problems/" + OccurrenceAlreadyHandled.code

DUE_QUERY = (
    "SELECT schedule_id FROM rm_scheduled_payments"
    " WHERE status = 'active' AND next_due_at <= %s"
    " ORDER BY next_due_at LIMIT %s"
)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Scheduler:
    """Runs the occurrences of due schedules every ``interval_s`` seconds; ``drive``
    (``payment_id``, ``correlation_id``) sends each new payment to a provider (None: the
    payments stay created, for the payment worker to pick up)."""

    def __init__(
        self,
        pool: ConnectionPool,
        engine: LedgerEngine,
        *,
        interval_s: float,
        drive: Callable[[UUID, str], object] | None,
        clock: Callable[[], datetime] = _utc_now,
        batch: int = BATCH,
    ) -> None:
        self.pool = pool
        self.engine = engine
        self.interval_s = interval_s
        self.drive = drive
        self.clock = clock
        self.batch = batch
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def due(self, now: datetime) -> list[UUID]:
        """The active schedules the read model says are due at ``now``, oldest first."""
        with self.pool.connection() as conn:
            rows = conn.execute(DUE_QUERY, (now, self.batch)).fetchall()
        return [UUID(str(schedule_id)) for (schedule_id,) in rows]

    def run_once(self, now: datetime | None = None) -> list[UUID]:
        """One pass at ``now`` (default: the clock); answers the payments it created."""
        now = now or self.clock()
        todo = self.due(now)
        created: list[tuple[UUID, str]] = []
        for _ in range(MAX_ROUNDS):
            if not todo:
                break
            submitted = [(sid, *self._submit(sid, now)) for sid in todo]
            todo = []
            for schedule_id, correlation_id, future in submitted:
                outcome = self._outcome(schedule_id, future)
                if outcome is None:
                    continue
                for payment_id in outcome.body.get("payment_ids", ()):
                    created.append((UUID(payment_id), correlation_id))
                if outcome.body.get("more"):
                    todo.append(schedule_id)
        if todo:
            log.warning("scheduler: %d schedules still have due occurrences", len(todo))
        for payment_id, correlation_id in created:
            self._drive(payment_id, correlation_id)
        return [payment_id for payment_id, _ in created]

    def _submit(self, schedule_id: UUID, now: datetime) -> tuple[str, Future[Outcome]]:
        correlation_id = f"scheduler:{schedule_id}:{uuid.uuid4().hex[:12]}"
        request = CommandRequest(
            as_command(RunScheduleOccurrences(schedule_id, now)),
            principal=SCHEDULER,
            correlation_id=correlation_id,
            now=now,
        )
        return correlation_id, self.engine.submit(request)

    @staticmethod
    def _outcome(schedule_id: UUID, future: Future[Outcome]) -> Outcome | None:
        try:
            outcome = future.result()
        except Exception:  # a conflict that kept recurring, or a bug: next pass retries
            log.exception("scheduler: schedule %s failed; retried next pass", schedule_id)
            return None
        if outcome.status < 400:
            return outcome
        if outcome.body.get("type") == ALREADY_HANDLED:
            return None  # another scheduler ran it first: nothing to do
        log.warning(
            "scheduler: schedule %s refused: %s", schedule_id, outcome.body.get("detail", "")
        )
        return None

    def _drive(self, payment_id: UUID, correlation_id: str) -> None:
        if self.drive is None:
            return
        try:
            self.drive(payment_id, correlation_id)
        except Exception:  # the payment says what is in flight: the payment worker resumes it
            log.exception("scheduler: payment %s not sent; resumed later", payment_id)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.run_once()
            except Exception:
                log.exception("scheduler pass failed; retrying next interval")

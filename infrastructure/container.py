"""The composition root: builds every component from one Settings object.

The service, every CLI subcommand and the tests build the ledger through ``build``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from commands.application import LedgerApplication
from commands.engine import LedgerEngine
from commands.model import CommandRequest, ExpireTransfer
from domain.principal import Principal
from infrastructure import database, schema
from infrastructure.database import ConnectionParams
from infrastructure.eventstore import eventsourcing_env
from infrastructure.projection_runner import (
    BackgroundProjections,
    ProjectionRunner,
    ensure_tables,
    live_targets,
    positions,
)
from infrastructure.settings import Settings
from infrastructure.stores import PgApiKeyStore, PgIdempotencyStore, PgVersionProbe

log = logging.getLogger(__name__)

SYSTEM = Principal("system", "admin")


def bootstrap_schema(db: ConnectionParams, settings: Settings) -> None:
    """Create every table once, under one advisory lock shared by all ledger processes."""
    with psycopg.connect(db.conninfo, autocommit=True) as lock_conn:
        lock_conn.execute("SELECT pg_advisory_lock(%s)", (schema.SCHEMA_LOCK_KEY,))
        try:
            schema.migrate(db.conninfo)
            creator = LedgerApplication(env=eventsourcing_env(db, settings, create_table=True))
            creator.close()
            with psycopg.connect(db.conninfo) as conn, conn.transaction():
                ensure_tables(conn, live_targets())
        finally:
            lock_conn.execute("SELECT pg_advisory_unlock(%s)", (schema.SCHEMA_LOCK_KEY,))


class Sweeper:
    """Releases holds of pending transfers past their expiry; purges old idempotency keys."""

    def __init__(self, container: Container, interval_s: float) -> None:
        self.container = container
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sweeper", daemon=True)
        self._last_purge = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def sweep_once(self) -> int:
        """Expire every due pending transfer the read model knows of; returns how many."""
        c = self.container
        with c.pool.connection() as conn:
            due = conn.execute(
                "SELECT transfer_id FROM rm_transfers WHERE status = 'pending'"
                " AND expires_at IS NOT NULL AND expires_at <= now()"
                " ORDER BY expires_at LIMIT 500"
            ).fetchall()
        expired = 0
        for (transfer_id,) in due:
            outcome = c.engine.execute(
                CommandRequest(
                    ExpireTransfer(transfer_id),
                    principal=SYSTEM,
                    correlation_id=f"sweeper:{transfer_id}",
                )
            )
            expired += outcome.status < 400
        return expired

    def _loop(self) -> None:
        import time

        while not self._stop.wait(self.interval_s):
            try:
                if self.sweep_once() and self.container.background is not None:
                    self.container.background.wake()
                if time.monotonic() - self._last_purge > 3600:
                    self._last_purge = time.monotonic()
                    self.container.idempotency.purge_older_than(
                        timedelta(hours=self.container.settings.idempotency_ttl_hours)
                    )
            except Exception:
                log.exception("sweeper pass failed; retrying next interval")


@dataclass
class Container:
    settings: Settings
    db: ConnectionParams
    pool: ConnectionPool
    app: LedgerApplication
    engine: LedgerEngine
    idempotency: PgIdempotencyStore
    api_keys: PgApiKeyStore
    runner: ProjectionRunner
    background: BackgroundProjections | None = None
    sweeper: Sweeper | None = None
    payments: Any = None  # commands.payments.service.PaymentServices, when configured
    payment_worker: Any = None
    scheduler: Any = None  # infrastructure.scheduler.Scheduler, once started
    _closed: bool = field(default=False, repr=False)
    _worker_started: bool = field(default=False, repr=False)

    def start_background(self) -> None:
        """Projections catch-up, the sweeper, the scheduler of recurring payments and the
        payment worker, inside this process."""
        if self.settings.run_projections_in_service and self.background is None:
            self.background = BackgroundProjections(self.runner, self.settings.projection_poll_s)
            self.engine.on_written = self.background.wake
            self.background.start()
        if self.sweeper is None:
            self.sweeper = Sweeper(self, self.settings.sweeper_interval_s)
            self.sweeper.start()
        if self.scheduler is None:
            from infrastructure.scheduler import Scheduler

            self.scheduler = Scheduler(
                self.pool,
                self.engine,
                interval_s=self.settings.sweeper_interval_s,
                drive=self.payments.processor.authorize if self.payments else None,
            )
            self.scheduler.start()
        if self.payment_worker is not None and not self._worker_started:
            self._worker_started = True
            self.payment_worker.start()

    def health(self) -> dict[str, Any]:
        tracked, head = positions(self.pool)
        return {
            "status": "ok",
            "database": "ok",
            "head_position": head,
            "projections": {n: {"position": p, "lag": head - p} for n, p in tracked.items()},
        }

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.payment_worker is not None and self._worker_started:
            self.payment_worker.stop()
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.sweeper is not None:
            self.sweeper.stop()
        if self.background is not None:
            self.background.stop()
        self.engine.close()
        self.app.close()
        self.pool.close()


def build(settings: Settings, *, db: ConnectionParams | None = None) -> Container:
    """Resolve the database, create tables once, and wire every component."""
    db = db or database.resolve(settings)
    bootstrap_schema(db, settings)
    pool: ConnectionPool = ConnectionPool(
        db.conninfo,
        min_size=1,
        max_size=settings.pool_size,
        kwargs={"autocommit": True},
        open=True,
        name="ledger",
    )
    app = LedgerApplication(env=eventsourcing_env(db, settings, create_table=False))
    idempotency = PgIdempotencyStore(pool)
    engine = LedgerEngine(
        app,
        idempotency,
        PgVersionProbe(pool),
        cache_size=settings.wallet_cache_size,
        max_batch=settings.max_batch_commands,
        overlap=settings.writer_overlap,
    )
    runner = ProjectionRunner(pool, app.mapper, live_targets(), settings.projection_batch_size)
    from infrastructure.payments import build_payment_services

    payments = build_payment_services(settings, pool, engine, app.repository.get)
    return Container(
        settings=settings,
        db=db,
        pool=pool,
        app=app,
        engine=engine,
        idempotency=idempotency,
        api_keys=PgApiKeyStore(pool),
        runner=runner,
        payments=payments[0] if payments else None,
        payment_worker=payments[1] if payments else None,
    )

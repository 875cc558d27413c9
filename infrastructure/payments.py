"""Payments wiring: providers from settings, the processor, dead letters in Postgres, and
the worker that resumes payments and pay-outs left in flight and expires authorizations."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from commands.model import CommandRequest, ExpireAuthorization
from commands.payments.processor import SYSTEM, PaymentProcessor
from read_api.payment_ports import ProviderHealthRow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeadLetter:
    id: int
    kind: str
    subject_id: UUID
    reason: str
    detail: str
    created_at: datetime
    replayed_at: datetime | None


class PgDeadLetters:
    """Payments and pay-outs the processor gave up on, for an admin to inspect and replay."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def add(self, kind: str, subject_id: UUID, reason: str, detail: str) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO dead_letters (kind, subject_id, reason, detail)"
                " VALUES (%s, %s, %s, %s)",
                (kind, subject_id, reason[:500], detail[:2000]),
            )

    def list(self, *, open_only: bool = True, limit: int = 100) -> list[DeadLetter]:
        where = "WHERE replayed_at IS NULL" if open_only else ""
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                f"SELECT id, kind, subject_id, reason, detail, created_at, replayed_at"
                f" FROM dead_letters {where} ORDER BY id LIMIT %s",
                (limit,),
            ).fetchall()
        return [DeadLetter(**row) for row in rows]

    def get(self, letter_id: int) -> DeadLetter | None:
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                "SELECT id, kind, subject_id, reason, detail, created_at, replayed_at"
                " FROM dead_letters WHERE id = %s",
                (letter_id,),
            ).fetchone()
        return DeadLetter(**row) if row else None

    def mark_replayed(self, letter_id: int) -> None:
        with self.pool.connection() as conn:
            conn.execute("UPDATE dead_letters SET replayed_at = now() WHERE id = %s", (letter_id,))


def replay_dead_letter(
    letters: PgDeadLetters, processor: PaymentProcessor, letter_id: int
) -> dict[str, Any] | None:
    """Drive the dead letter's payment or pay-out again; answers its state after."""
    letter = letters.get(letter_id)
    if letter is None:
        return None
    letters.mark_replayed(letter_id)
    corr = f"dead-letter:{letter_id}"
    if letter.kind == "payout":
        payout = processor.payout(letter.subject_id, corr)
        return {"kind": "payout", "id": str(payout.id), "status": payout.status}
    payment = processor.resume(letter.subject_id, corr)
    return {"kind": "payment", "id": str(payment.id), "status": payment.status}


class PaymentWorker:
    """Every ``interval_s``: resume payments and pay-outs untouched for ``resume_after``
    (a crash, a timeout, an answer still pending), and expire due authorizations.

    Several processes may run it: each step is a command on the payment, guarded by the
    payment's state and the event store's optimistic concurrency, and provider calls carry
    idempotency keys, so two workers resuming the same payment cannot charge twice.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        engine: Any,
        processor: PaymentProcessor,
        *,
        interval_s: float,
        resume_after: timedelta,
    ) -> None:
        self.pool = pool
        self.engine = engine
        self.processor = processor
        self.interval_s = interval_s
        self.resume_after = resume_after
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="payment-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def run_once(self) -> dict[str, int]:
        from infrastructure import payment_queries as q

        done = {"resumed": 0, "expired": 0, "payouts": 0}
        now = datetime.now(UTC)
        for payment_id in q.expired_authorizations(self.pool, now, 200):
            out = self.engine.execute(
                CommandRequest(ExpireAuthorization(payment_id), SYSTEM, f"expiry:{payment_id}")
            )
            done["expired"] += out.status < 400
        for payment_id in q.payments_needing_work(self.pool, self.resume_after, 50):
            if self._stop.is_set():
                break
            try:
                self.processor.resume(payment_id, f"resume:{payment_id}")
                done["resumed"] += 1
            except Exception:
                log.exception("resuming payment %s failed", payment_id)
        for payout_id in q.payouts_needing_work(self.pool, self.resume_after, 50):
            if self._stop.is_set():
                break
            try:
                self.processor.payout(payout_id, f"resume:{payout_id}")
                done["payouts"] += 1
            except Exception:
                log.exception("resuming payout %s failed", payout_id)
        return done

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.run_once()
            except Exception:
                log.exception("payment worker pass failed; retrying next interval")


class DeadLetterDesk:
    """``commands.payments.service.DeadLetterAdmin`` over Postgres and the processor."""

    def __init__(self, letters: PgDeadLetters, processor: PaymentProcessor) -> None:
        self.letters = letters
        self.processor = processor

    def list_open(self, limit: int) -> list[dict[str, Any]]:
        return [
            {
                "id": d.id,
                "kind": d.kind,
                "subject_id": str(d.subject_id),
                "reason": d.reason,
                "detail": d.detail,
                "created_at": d.created_at.isoformat(),
            }
            for d in self.letters.list(limit=limit)
        ]

    def replay(self, letter_id: int) -> dict[str, Any] | None:
        return replay_dead_letter(self.letters, self.processor, letter_id)


class SandboxProcess:
    """The sandbox PSP as a child process of ``ledger serve`` (``--psp-sandbox``)."""

    def __init__(self, proc: Any, url: str, secret: str) -> None:
        self.proc = proc
        self.url = url
        self.secret = secret

    def register_webhooks(self, base: str) -> None:
        """Point every sandbox provider's webhooks at ``{base}/{provider}``."""
        import httpx

        for provider in SANDBOX_PROVIDERS:
            httpx.put(
                f"{self.url}/_config/{provider}",
                json={"webhook_url": f"{base}/{provider}"},
                timeout=5,
            ).raise_for_status()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()


SANDBOX_PROVIDERS = ("zenith", "ramp", "monnify")


def start_sandbox(settings: Any) -> SandboxProcess:
    """Start ``python -m infrastructure.psp_sandbox`` on the configured port, wait for it."""
    import base64
    import os
    import secrets
    import subprocess
    import sys
    import time

    import httpx

    secret = (
        settings.psp_sandbox_secret.get_secret_value()
        if settings.psp_sandbox_secret
        else "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    )
    port = settings.psp_sandbox_port
    # Its own log file: a child holding our stdout would keep a reader of it waiting.
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with (settings.state_dir / "psp-sandbox.log").open("ab") as log_file:
        proc = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
            [sys.executable, "-m", "infrastructure.psp_sandbox", "--host", "127.0.0.1",
             "--port", str(port), "--webhook-secret", secret],
            env={k: v for k, v in os.environ.items() if not k.startswith("PSP_SANDBOX_")},
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/_health", timeout=1).status_code == 200:
                return SandboxProcess(proc, url, secret)
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the PSP sandbox did not start on port {port}")
        time.sleep(0.1)


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def build_payment_services(
    settings: Any, pool: ConnectionPool, engine: Any, load: Any
) -> tuple[Any, Any] | None:
    """Providers from settings (the sandbox PSP's three, Stripe), routing and breakers,
    the processor and its dead letters. None when no provider is configured."""
    import httpx

    from commands.payments.breaker import BreakerBoard
    from commands.payments.ports import PaymentProvider
    from commands.payments.routing import Router, parse_rules_json
    from commands.payments.service import PaymentServices

    providers: dict[str, PaymentProvider] = {}
    if settings.psp_sandbox_url:
        from infrastructure.providers.sandbox import SandboxProvider

        secret = _secret(settings.psp_sandbox_secret)
        if secret is None:  # ask the sandbox (development only: it is unauthenticated)
            config = httpx.get(f"{settings.psp_sandbox_url}/_config", timeout=5).json()
            secret = str(config["webhook_secret"])
        for name in SANDBOX_PROVIDERS:
            providers[name] = SandboxProvider(
                name, settings.psp_sandbox_url, secret, timeout_s=settings.payment_call_timeout_s
            )
    if settings.stripe_api_key is not None:
        from infrastructure.providers.stripe import StripeProvider

        providers["stripe"] = StripeProvider(
            settings.stripe_api_key.get_secret_value(),
            api_base=settings.stripe_api_base,
            webhook_secret=_secret(settings.stripe_webhook_secret) or "",
            timeout_s=settings.payment_call_timeout_s,
            stripe_version=settings.stripe_api_version,
        )
    if not providers:
        return None
    board = BreakerBoard()
    rules = parse_rules_json(settings.payment_routing) if settings.payment_routing else ()
    router = Router(rules, providers, board)
    letters = PgDeadLetters(pool)
    processor = PaymentProcessor(
        engine,
        load,
        providers,
        router,
        board,
        dead_letters=letters,
        max_attempts=settings.payment_max_attempts,
        budget_s=settings.payment_budget_s,
    )
    services = PaymentServices(processor, providers, DeadLetterDesk(letters, processor), board)
    worker = PaymentWorker(
        pool,
        engine,
        processor,
        interval_s=settings.payment_worker_interval_s,
        resume_after=timedelta(seconds=settings.payment_resume_after_s),
    )
    return services, worker


HEALTH_BY_STATE = {"closed": "healthy", "half_open": "degraded", "open": "down"}


class BreakerHealth:
    """The read API's ``ProviderHealthPort`` over the circuit breakers: every configured
    provider (one with no call yet is healthy with no statistics), in configuration order."""

    def __init__(self, board: Any, names: Any) -> None:
        self.board = board
        self.names = list(names)

    def providers(self) -> list[ProviderHealthRow]:
        rows = []
        for name in self.names:
            snap = self.board.breaker(name).snapshot()
            rows.append(
                ProviderHealthRow(
                    name=name,
                    health=HEALTH_BY_STATE.get(snap.state, snap.state),
                    breaker_state=snap.state,
                    success_rate=snap.success_rate,
                    p99_latency_ms=snap.p99_latency_ms,
                    calls_in_window=snap.calls,
                )
            )
        return rows

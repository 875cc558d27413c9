"""The `ledger` CLI as a user runs it, as subprocesses on the same database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from commands.model import CommandRequest, CreateTransfer, Deposit, OpenWallet
from domain.money import Currency, Money
from domain.principal import Principal
from infrastructure.projection_runner import positions

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def ledger(db, *args, timeout=120):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env["LEDGER_DATABASE_URL"] = db.conninfo
    return subprocess.run(
        [sys.executable, "-m", "infrastructure.cli", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_keys_create_prints_a_working_key_once(container):
    result = ledger(container.db, "keys", "create", "--merchant", "acme", "--role", "auditor")
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert key.startswith("lk_") and "\n" not in key
    assert container.api_keys.authenticate(key) == Principal("acme", "auditor")
    with container.pool.connection() as conn:
        stored = conn.execute("SELECT key_hash FROM api_keys").fetchall()
    assert all(key not in row[0] for row in stored)  # only the hash is stored
    bad = ledger(container.db, "keys", "create", "--merchant", "acme", "--role", "root")
    assert bad.returncode == 2


def _history(container):
    p = Principal("acme", "merchant")
    usd = Currency.of("USD")

    def run(cmd):
        out = container.engine.execute(CommandRequest(cmd, p, str(uuid.uuid4()), str(uuid.uuid4())))
        assert out.status < 400, out.body
        return out

    a = uuid.UUID(run(OpenWallet("acme", usd)).body["wallet"]["id"])
    b = uuid.UUID(run(OpenWallet("acme", usd)).body["wallet"]["id"])
    run(Deposit(a, Money.parse("10.00", usd)))
    return run(CreateTransfer(a, b, Money.parse("2.50", usd))).position


def test_project_worker_status_rebuild_and_audit(container):
    head = _history(container)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env["LEDGER_DATABASE_URL"] = container.db.conninfo
    worker = subprocess.Popen(
        [sys.executable, "-m", "infrastructure.cli", "project"], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while min(positions(container.pool)[0].values()) < head:
            assert time.monotonic() < deadline, "worker did not catch up"
            assert worker.poll() is None, worker.stdout.read() if worker.stdout else ""
            time.sleep(0.1)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0

    status = ledger(container.db, "projections", "status")
    assert status.returncode == 0, status.stderr
    assert f"head position: {head}" in status.stdout
    for name in ("balances", "statements", "transfers"):
        assert name in status.stdout

    rebuilt = ledger(container.db, "projections", "rebuild", "statements")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "rebuilt statements" in rebuilt.stdout
    assert ledger(container.db, "projections", "rebuild", "bogus").returncode == 2

    audit = ledger(container.db, "audit", "verify", "--quiet")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "AUDIT PASSED" in audit.stdout

    with container.pool.connection() as conn:
        conn.execute("UPDATE rm_transfers SET status = 'voided'")
    audit = ledger(container.db, "audit", "verify", "--quiet")
    assert audit.returncode == 1
    assert "AUDIT FAILED" in audit.stdout

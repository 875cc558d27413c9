"""Two `ledger serve` processes on one database both run the scheduler of recurring
payments: every due occurrence becomes exactly one payment, whichever process ran it."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from domain.schedule import occurrence_payment_id
from infrastructure.audit import verify
from tests.conftest import _free_port
from tests.e2e.server import ledger_env, start_server
from tests.integration.test_scheduled_payments import occurrences, payment_created_counts

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

SCHEDULES = 12


def test_two_serve_processes_run_each_occurrence_once(container):
    key = container.api_keys.create("acme", "merchant")
    auth = {"Authorization": f"Bearer {key}"}
    env = ledger_env(LEDGER_DATABASE_URL=container.db.conninfo, LEDGER_SWEEPER_INTERVAL_S="0.1")
    ports = [_free_port(), _free_port()]
    servers = [start_server(env, port, capture=False) for port in ports]
    try:
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        r = httpx.post(f"{urls[0]}/v1/wallets", json={"currency": "USD"},
                       headers={**auth, "Idempotency-Key": "w"})  # fmt: skip
        assert r.status_code == 201, r.text
        wallet = r.json()["wallet"]["id"]
        starts = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
        schedule_ids = []
        for i in range(SCHEDULES):  # created through both processes
            r = httpx.post(
                f"{urls[i % 2]}/v1/scheduled-payments",
                json={
                    "wallet_id": wallet,
                    "amount": "5.00",
                    "currency": "USD",
                    "method": "card",
                    "payment_method_token": "tok_visa_4242",
                    "frequency": {"type": "interval", "every_seconds": 3600},
                    "starts_at": starts.isoformat(),
                },
                headers={**auth, "Idempotency-Key": f"s{i}"},
            )
            assert r.status_code == 201, r.text
            schedule_ids.append(r.json()["scheduled_payment"]["id"])

        expected = {str(occurrence_payment_id(sid, 1)) for sid in schedule_ids}
        deadline = time.monotonic() + 60
        while set(payment_created_counts(container)) != expected:
            assert time.monotonic() < deadline, "the schedulers did not run the occurrences"
            time.sleep(0.2)
        time.sleep(1.0)  # both schedulers make a few more passes over the same schedules

        assert all(s.poll() is None for s in servers)  # both ran throughout
        counts = payment_created_counts(container)
        assert set(counts) == expected and set(counts.values()) == {1}
        for sid in schedule_ids:
            assert occurrences(container, sid) == [("started", 1)]
            r = httpx.get(f"{urls[1]}/v1/payments/{occurrence_payment_id(sid, 1)}", headers=auth)
            assert r.status_code == 200, r.text
            assert r.json()["payment"]["amount"] == "5.00"
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=20)
    container.runner.run_until_caught_up()
    assert verify(container).ok

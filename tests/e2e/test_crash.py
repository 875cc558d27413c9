"""Kill the server (SIGKILL) in the middle of a batched load: after a restart every
acknowledged command is there exactly once, and the audit passes."""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp
import httpx
import pytest

from infrastructure.audit import verify
from tests.conftest import _free_port
from tests.e2e.server import ledger_env, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


async def load(url, key, wallets, acked, sent, stop_after):
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(url, headers=headers) as session:

        async def client(n):
            i = 0
            while True:
                i += 1
                idem = f"crash-{n}-{i}"
                body = {
                    "debit_wallet_id": wallets[(n + i) % len(wallets)],
                    "credit_wallet_id": wallets[(n + i + 1) % len(wallets)],
                    "amount": "0.01",
                    "currency": "USD",
                }
                sent[idem] = body
                try:
                    async with session.post(
                        "/v1/transfers", json=body, headers={"Idempotency-Key": idem}
                    ) as r:
                        payload = await r.json()
                        if r.status == 201:
                            acked[idem] = payload
                except (TimeoutError, aiohttp.ClientError):
                    return  # the server died under us

        tasks = [asyncio.create_task(client(n)) for n in range(32)]
        await asyncio.sleep(stop_after)
        await asyncio.gather(*tasks, return_exceptions=True)


def test_sigkill_mid_load_loses_and_duplicates_nothing(container):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    key = container.api_keys.create("acme", "merchant")
    server = start_server(
        ledger_env(LEDGER_DATABASE_URL=container.db.conninfo), port, capture=False
    )
    try:
        auth = {"Authorization": f"Bearer {key}"}
        wallets = []
        for i in range(8):
            r = httpx.post(
                f"{url}/v1/wallets",
                json={"currency": "USD"},
                headers={**auth, "Idempotency-Key": f"w{i}"},
            )
            wid = r.json()["wallet"]["id"]
            httpx.post(f"{url}/v1/deposits", json={"wallet_id": wid, "amount": "1000.00", "currency": "USD"},
                       headers={**auth, "Idempotency-Key": f"d{i}"})  # fmt: skip
            wallets.append(wid)
        acked, sent = {}, {}

        def killer():
            time.sleep(1.5)
            server.send_signal(signal.SIGKILL)

        import threading

        threading.Thread(target=killer).start()
        asyncio.run(load(url, key, wallets, acked, sent, stop_after=1.0))
        server.wait(timeout=10)
        assert server.returncode == -signal.SIGKILL
        assert len(acked) > 50, "the load did not get going before the kill"
        assert len(sent) > len(acked)  # some requests were in flight when it died
    finally:
        if server.poll() is None:
            server.kill()

    server = start_server(
        ledger_env(LEDGER_DATABASE_URL=container.db.conninfo), port, capture=False
    )
    try:
        # Every acknowledged command is durable: its key replays the very same answer.
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
            for idem, body in acked.items():
                r = client.post("/v1/transfers", json=sent[idem], headers={"Idempotency-Key": idem})
                assert r.status_code == 201 and r.headers.get("Idempotent-Replayed") == "true", idem
                assert r.json() == body
            # A command that may or may not have committed before the kill is applied at
            # most once: retrying it either replays or applies it now.
            for idem in set(sent) - set(acked):
                r = client.post("/v1/transfers", json=sent[idem], headers={"Idempotency-Key": idem})
                assert r.status_code == 201, r.text
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)

    with container.pool.connection() as conn:
        created = conn.execute(
            "SELECT count(*) FROM ledger_events WHERE topic LIKE %s", ("%Transfer.Created",)
        ).fetchone()[0]
        keys = conn.execute(
            "SELECT count(*) FROM idempotency_keys WHERE key LIKE 'crash-%%'"
        ).fetchone()[0]
    assert keys == len(sent)
    assert created == 8 + len(sent)  # 8 deposits, then every transfer exactly once
    container.runner.run_until_caught_up()
    report = verify(container)
    assert report.ok, report.summary()

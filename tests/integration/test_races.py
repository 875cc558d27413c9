"""Real races: many concurrent HTTP requests against uvicorn on loopback."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.conftest import auth, new_key
from tests.integration.api_support import PROBLEM_JSON, audit_ok, head, state

pytestmark = pytest.mark.integration


async def _post(
    http: httpx.AsyncClient, path: str, key: str, body: Any, idem: str | None = None
) -> httpx.Response:
    return await http.post(path, json=body, headers=auth(key, idem or new_key()))


async def _fire(
    base: str, requests: list[tuple[str, str, Any, str | None]]
) -> list[httpx.Response]:
    """Send every request at once, each on its own connection, and wait for all."""
    limits = httpx.Limits(max_connections=len(requests) + 5, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
        start = asyncio.Event()

        async def one(path: str, key: str, body: Any, idem: str | None) -> httpx.Response:
            await start.wait()
            return await _post(http, path, key, body, idem)

        tasks = [asyncio.ensure_future(one(*r)) for r in requests]
        await asyncio.sleep(0)  # every task is now waiting on the start signal
        start.set()
        return list(await asyncio.gather(*tasks))


def _setup(base: str, key: str, funds: str) -> tuple[str, str]:
    async def go() -> tuple[str, str]:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            a = (await _post(http, "/v1/wallets", key, {"currency": "USD"})).json()["wallet"]["id"]
            b = (await _post(http, "/v1/wallets", key, {"currency": "USD"})).json()["wallet"]["id"]
            r = await _post(
                http, "/v1/deposits", key, {"wallet_id": a, "amount": funds, "currency": "USD"}
            )
            assert r.status_code == 201, r.text
            return a, b

    return asyncio.run(go())


def _never_negative(container: Any, wallet_id: str) -> None:
    """Every posted balance the wallet ever had, from its events, is >= 0."""
    with container.pool.connection() as conn:
        rows = conn.execute(
            "SELECT (convert_from(state, 'UTF8')::jsonb ->> 'posted_after')::bigint"
            " FROM ledger_events WHERE originator_id = %s AND topic LIKE %s",
            (wallet_id, "%Wallet.Debited"),
        ).fetchall()
    assert rows and min(r[0] for r in rows) >= 0


@pytest.mark.parametrize("kind", ["withdrawal", "transfer", "pending"])
def test_fifty_concurrent_debits_of_ten_from_one_hundred(
    live_server, container, merchant_key, kind
):
    a, b = _setup(live_server, merchant_key, "100.00")
    path, body = {
        "withdrawal": ("/v1/withdrawals", {"wallet_id": a, "amount": "10.00", "currency": "USD"}),
        "transfer": (
            "/v1/transfers",
            {"debit_wallet_id": a, "credit_wallet_id": b, "amount": "10.00", "currency": "USD"},
        ),
        "pending": (
            "/v1/transfers",
            {
                "debit_wallet_id": a,
                "credit_wallet_id": b,
                "amount": "10.00",
                "currency": "USD",
                "pending": True,
            },
        ),
    }[kind]
    responses = asyncio.run(_fire(live_server, [(path, merchant_key, body, None)] * 50))

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 10, 422: 40}, statuses
    for r in responses:
        if r.status_code == 422:
            assert r.headers["content-type"] == PROBLEM_JSON
            assert r.json()["type"] == "/problems/insufficient-funds"
        assert "idempotent-replayed" not in r.headers
    transfers = {r.json()["transfer"]["id"] for r in responses if r.status_code == 201}
    assert len(transfers) == 10
    if kind == "pending":
        assert state(container, a) == (10000, 10000, "active")
    else:
        assert state(container, a) == (0, 0, "active")
        _never_negative(container, a)
    assert state(container, b) == ((10000, 0, "active") if kind == "transfer" else (0, 0, "active"))
    report = audit_ok(container)
    assert report.transfers == 11


def test_concurrent_debits_from_both_sides_keep_every_balance(live_server, container, merchant_key):
    """A->B and B->A at once: no deadlock, no lost update, totals conserved."""
    a, b = _setup(live_server, merchant_key, "50.00")
    asyncio.run(
        _fire(
            live_server,
            [
                (
                    "/v1/deposits",
                    merchant_key,
                    {"wallet_id": b, "amount": "50.00", "currency": "USD"},
                    None,
                )
            ],
        )
    )
    ab = {"debit_wallet_id": a, "credit_wallet_id": b, "amount": "1.00", "currency": "USD"}
    ba = {"debit_wallet_id": b, "credit_wallet_id": a, "amount": "1.00", "currency": "USD"}
    responses = asyncio.run(
        _fire(
            live_server,
            [("/v1/transfers", merchant_key, ab, None)] * 30
            + [("/v1/transfers", merchant_key, ba, None)] * 20,
        )
    )
    assert all(r.status_code == 201 for r in responses), [
        r.text for r in responses if r.status_code != 201
    ]
    assert state(container, a)[0] == 5000 - 3000 + 2000
    assert state(container, b)[0] == 5000 + 3000 - 2000
    audit_ok(container)


def test_concurrent_duplicates_of_one_key_have_one_effect(live_server, container, merchant_key):
    a, b = _setup(live_server, merchant_key, "100.00")
    key = new_key()
    body = {"debit_wallet_id": a, "credit_wallet_id": b, "amount": "10.00", "currency": "USD"}
    before = head(container)
    responses = asyncio.run(_fire(live_server, [("/v1/transfers", merchant_key, body, key)] * 20))

    originals = [
        r for r in responses if r.status_code == 201 and "idempotent-replayed" not in r.headers
    ]
    replays = [
        r
        for r in responses
        if r.status_code == 201 and r.headers.get("idempotent-replayed") == "true"
    ]
    in_use = [r for r in responses if r.status_code == 409]
    assert len(originals) == 1, [(r.status_code, dict(r.headers)) for r in responses]
    assert len(originals) + len(replays) + len(in_use) == 20, [r.text for r in responses]
    # While the first is in flight a duplicate is refused at once (409); once it is
    # written, a duplicate replays it (201 + Idempotent-Replayed). Fired together, in
    # practice all 19 duplicates arrive while the first is in flight and get 409.
    for r in in_use:
        assert r.headers["content-type"] == PROBLEM_JSON
        assert r.json()["type"] == "/problems/idempotency-key-in-use"
    for r in replays:
        assert r.json() == originals[0].json()
    assert len(in_use) >= 1

    # Exactly one effect: one transfer (3 events: debit, credit, transfer), money moved once.
    assert head(container) == before + 3
    assert state(container, a) == (9000, 0, "active") and state(container, b) == (1000, 0, "active")
    # And a later duplicate replays.
    [late] = asyncio.run(_fire(live_server, [("/v1/transfers", merchant_key, body, key)]))
    assert late.status_code == 201 and late.headers["idempotent-replayed"] == "true"
    assert late.json() == originals[0].json()
    report = audit_ok(container)
    assert report.transfers == 2


def test_concurrent_duplicates_of_a_failing_request_have_one_answer(
    live_server, container, merchant_key
):
    a, b = _setup(live_server, merchant_key, "5.00")
    key = new_key()
    body = {"wallet_id": a, "amount": "10.00", "currency": "USD"}
    before = head(container)
    responses = asyncio.run(_fire(live_server, [("/v1/withdrawals", merchant_key, body, key)] * 20))
    statuses = Counter((r.status_code, r.headers.get("idempotent-replayed")) for r in responses)
    assert statuses[(422, None)] == 1, statuses
    assert set(statuses) <= {(422, None), (422, "true"), (409, None)}, statuses
    failures = {r.text for r in responses if r.status_code == 422}
    assert len(failures) == 1  # every 422 is the same stored answer
    assert head(container) == before
    assert state(container, a) == (500, 0, "active")


def test_concurrent_posts_of_one_pending_transfer(live_server, container, merchant_key):
    """Many different requests to post and void one hold: exactly one wins."""
    a, b = _setup(live_server, merchant_key, "100.00")
    [hold] = asyncio.run(
        _fire(
            live_server,
            [
                (
                    "/v1/transfers",
                    merchant_key,
                    {
                        "debit_wallet_id": a,
                        "credit_wallet_id": b,
                        "amount": "40.00",
                        "currency": "USD",
                        "pending": True,
                    },
                    None,
                )
            ],
        )
    )
    tid = hold.json()["transfer"]["id"]
    requests = [(f"/v1/transfers/{tid}/post", merchant_key, {"amount": "25.00"}, None)] * 10
    requests += [(f"/v1/transfers/{tid}/void", merchant_key, None, None)] * 10
    responses = asyncio.run(_fire(live_server, requests))
    wins = [r for r in responses if r.status_code == 200]
    assert len(wins) == 1, [r.text for r in responses]
    assert all(
        r.json()["type"] == "/problems/transfer-not-pending"
        for r in responses
        if r.status_code != 200
    )
    if wins[0].json()["transfer"]["status"] == "posted":
        assert state(container, a) == (7500, 0, "active") and state(container, b) == (
            2500,
            0,
            "active",
        )
    else:
        assert state(container, a) == (10000, 0, "active") and state(container, b) == (
            0,
            0,
            "active",
        )
    audit_ok(container)

"""The GraphQL read API on real read models: read-your-writes, scoping, statements,
balances as of past instants, pagination."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from tests.conftest import auth, new_key

pytestmark = pytest.mark.integration


def post(client, key, path, body):
    r = client.post(path, json=body, headers=auth(key, new_key()))
    assert r.status_code in (200, 201), r.text
    return r.json()


def gql(client, key, query, variables=None, min_position=None):
    headers = auth(key)
    if min_position is not None:
        headers["Ledger-Min-Position"] = str(min_position)
    r = client.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
    )
    assert r.status_code == 200, r.text
    return r.json()


def wallet(client, key, currency="USD"):
    return post(client, key, "/v1/wallets", {"currency": currency})["wallet"]["id"]


WALLET_Q = "query($id: ID!) { wallet(id: $id) { id currency status balance { posted { amount currency } pending { amount } available { amount } } } }"


def test_read_your_writes_with_min_position(client, merchant_key):
    a = wallet(client, merchant_key)
    pos = post(
        client, merchant_key, "/v1/deposits", {"wallet_id": a, "amount": "12.34", "currency": "USD"}
    )["position"]
    body = gql(client, merchant_key, WALLET_Q, {"id": a}, min_position=pos)
    assert "errors" not in body, body
    bal = body["data"]["wallet"]["balance"]
    assert bal["posted"] == {"amount": "12.34", "currency": "USD"}
    assert bal["available"]["amount"] == "12.34"


def test_min_position_beyond_head_times_out_with_a_problem_type(client, container, merchant_key):
    assert container.settings.min_position_wait_s == 5.0  # the default bound
    t0 = time.monotonic()
    body = gql(client, merchant_key, "{ wallets { edges { node { id } } } }", min_position=10**9)
    elapsed = time.monotonic() - t0
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["type"] == "/problems/position-not-reached"
    assert 4.0 <= elapsed < 15
    bad = gql(client, merchant_key, "{ wallets { edges { node { id } } } }", min_position="abc")
    assert bad["errors"][0]["extensions"]["type"] == "/problems/validation-error"


def test_merchant_scoping(client, merchant_key, other_merchant_key, admin_key):
    mine = wallet(client, merchant_key)
    theirs = wallet(client, other_merchant_key)
    pos = post(
        client,
        other_merchant_key,
        "/v1/deposits",
        {"wallet_id": theirs, "amount": "5.00", "currency": "USD"},
    )["position"]
    body = gql(client, merchant_key, WALLET_Q, {"id": theirs}, min_position=pos)
    assert body["data"]["wallet"] is None
    assert body["errors"][0]["extensions"]["type"] == "/problems/not-found"
    listed = gql(client, merchant_key, "{ wallets(first: 50) { edges { node { id } } } }")
    ids = {e["node"]["id"] for e in listed["data"]["wallets"]["edges"]}
    assert ids == {mine}
    admin = gql(client, admin_key, "{ wallets(first: 50) { edges { node { id isSystem } } } }")
    admin_ids = {e["node"]["id"] for e in admin["data"]["wallets"]["edges"]}
    assert {mine, theirs} <= admin_ids
    anonymous = client.post("/graphql", json={"query": "{ wallets { edges { node { id } } } }"})
    assert anonymous.json()["errors"][0]["extensions"]["type"] == "/problems/unauthorized"


def test_statement_transfers_and_balance_at(client, merchant_key):
    a = wallet(client, merchant_key, "JPY")
    b = wallet(client, merchant_key, "JPY")
    post(
        client, merchant_key, "/v1/deposits", {"wallet_id": a, "amount": "1000", "currency": "JPY"}
    )
    time.sleep(0.05)
    between = datetime.now(UTC).isoformat()
    time.sleep(0.05)
    pending = post(
        client,
        merchant_key,
        "/v1/transfers",
        {
            "debit_wallet_id": a,
            "credit_wallet_id": b,
            "amount": "300",
            "currency": "JPY",
            "pending": True,
        },
    )
    tid = pending["transfer"]["id"]
    pos = post(client, merchant_key, f"/v1/transfers/{tid}/post", {"amount": "200"})["position"]

    q = """query($w: ID!, $at: DateTime!) {
      statement(walletId: $w, first: 10) { edges { node { amount { amount currency } balanceAfter { amount } transferId counterpartyId } } }
      balanceAt(walletId: $w, at: $at) { posted { amount } }
      transfers(walletId: $w, first: 10) { edges { node { id status kind amount { amount } postedAmount { amount } debitWalletId creditWalletId } } }
    }"""
    body = gql(client, merchant_key, q, {"w": a, "at": between}, min_position=pos)
    assert "errors" not in body, body
    entries = [e["node"] for e in body["data"]["statement"]["edges"]]
    assert [(e["amount"]["amount"], e["balanceAfter"]["amount"]) for e in entries] == [
        ("1000", "1000"),
        ("-200", "800"),
    ]
    assert entries[0]["counterpartyId"] is None  # the world account
    assert entries[1]["counterpartyId"] == b and entries[1]["transferId"] == tid
    assert body["data"]["balanceAt"]["posted"]["amount"] == "1000"
    transfers = {t["node"]["id"]: t["node"] for t in body["data"]["transfers"]["edges"]}
    assert transfers[tid]["status"] == "posted"
    assert transfers[tid]["postedAmount"]["amount"] == "200"
    assert transfers[tid]["amount"]["amount"] == "300"
    deposit = next(t for t in transfers.values() if t["kind"] == "deposit")
    assert deposit["debitWalletId"] is None and deposit["creditWalletId"] == a


def test_pagination_walks_every_wallet_once(client, merchant_key):
    ids = {wallet(client, merchant_key) for _ in range(7)}
    pos = post(
        client,
        merchant_key,
        "/v1/deposits",
        {"wallet_id": next(iter(ids)), "amount": "1.00", "currency": "USD"},
    )["position"]
    seen, after = [], None
    while True:
        body = gql(
            client,
            merchant_key,
            "query($a: String) { wallets(first: 3, after: $a) { edges { cursor node { id } } pageInfo { hasNextPage endCursor } } }",
            {"a": after},
            min_position=pos,
        )
        page = body["data"]["wallets"]
        seen += [e["node"]["id"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert sorted(seen) == sorted(ids)

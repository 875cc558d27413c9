"""A first end-to-end pass through the command API on real PostgreSQL."""

from __future__ import annotations

import pytest

from tests.conftest import auth, new_key, wait_for_projections

pytestmark = pytest.mark.integration


def test_open_deposit_transfer_and_audit(client, container, merchant_key):
    r = client.post("/v1/wallets", json={"currency": "USD"}, headers=auth(merchant_key, new_key()))
    assert r.status_code == 201, r.text
    a = r.json()["wallet"]["id"]
    b = client.post(
        "/v1/wallets", json={"currency": "USD"}, headers=auth(merchant_key, new_key())
    ).json()["wallet"]["id"]
    r = client.post(
        "/v1/deposits",
        json={"wallet_id": a, "amount": "100.00", "currency": "USD"},
        headers=auth(merchant_key, new_key()),
    )
    assert r.status_code == 201, r.text
    r = client.post(
        "/v1/transfers",
        json={"debit_wallet_id": a, "credit_wallet_id": b, "amount": "40.50", "currency": "USD"},
        headers=auth(merchant_key, new_key()),
    )
    assert r.status_code == 201, r.text
    body = r.json()
    balances = {w["id"]: w["balance"]["posted"] for w in body["wallets"]}
    assert balances == {a: "59.50", b: "40.50"}
    wait_for_projections(container, body["position"])

    from infrastructure.audit import verify

    report = verify(container)
    assert report.ok, report.summary()
    assert report.wallets == 2 and report.transfers == 2

"""Idempotency keys through the HTTP API: replay, stored failures, per-merchant scope,
and records that outlive the process."""

from __future__ import annotations

import pytest

from tests.conftest import auth, new_key, test_settings
from tests.integration.api_support import (
    assert_problem,
    audit_ok,
    created,
    deposit,
    funded_wallet,
    head,
    idempotency_rows,
    open_wallet,
    post,
    state,
)

pytestmark = pytest.mark.integration


def replayed(r, status: int, original) -> None:
    assert r.status_code == status, r.text
    assert r.headers["idempotent-replayed"] == "true"
    assert r.json() == original


def test_replay_returns_the_stored_answer_and_writes_nothing(client, container, merchant_key):
    a = funded_wallet(client, merchant_key, "100.00")
    b = open_wallet(client, merchant_key)
    key = new_key()
    body = {"debit_wallet_id": a, "credit_wallet_id": b, "amount": "10.00", "currency": "USD"}
    first = post(client, "/v1/transfers", merchant_key, body, idem=key)
    original = created(first)
    assert original["position"] == head(container)
    before, keys = head(container), idempotency_rows(container)
    for _ in range(3):
        r = post(client, "/v1/transfers", merchant_key, body, idem=key)
        replayed(r, 201, original)
        assert r.headers["content-type"] == "application/json"
    # The same JSON with its keys in another order is the same request.
    reordered = dict(reversed(list(body.items())))
    replayed(post(client, "/v1/transfers", merchant_key, reordered, idem=key), 201, original)
    assert head(container) == before
    assert idempotency_rows(container) == keys
    assert state(container, a)[0] == 9000 and state(container, b)[0] == 1000
    audit_ok(container)


@pytest.mark.parametrize(
    "make",
    [
        lambda a, b: ("/v1/wallets", {"currency": "JPY", "metadata": {"k": "v"}}, 201),
        lambda a, b: ("/v1/deposits", {"wallet_id": b, "amount": "3.00", "currency": "USD"}, 201),
        lambda a, b: (
            "/v1/withdrawals",
            {"wallet_id": a, "amount": "3.00", "currency": "USD", "pending": True},
            201,
        ),
        lambda a, b: (f"/v1/wallets/{b}/freeze", None, 200),
        lambda a, b: (
            "/v1/transfers/batch",
            {
                "transfers": [
                    {
                        "debit_wallet_id": a,
                        "credit_wallet_id": b,
                        "amount": "1.00",
                        "currency": "USD",
                    }
                ]
                * 3
            },
            201,
        ),
    ],
    ids=["open", "deposit", "pending-withdrawal", "freeze", "batch"],
)
def test_every_endpoint_replays(client, container, merchant_key, make):
    a = funded_wallet(client, merchant_key, "100.00")
    b = open_wallet(client, merchant_key)
    path, body, status = make(a, b)
    key = new_key()
    original = created(post(client, path, merchant_key, body, idem=key), status)
    before = head(container)
    replayed(post(client, path, merchant_key, body, idem=key), status, original)
    assert head(container) == before
    audit_ok(container)


def test_post_and_void_replay(client, container, merchant_key):
    a = funded_wallet(client, merchant_key, "100.00")
    b = open_wallet(client, merchant_key)
    body = {
        "debit_wallet_id": a,
        "credit_wallet_id": b,
        "amount": "10.00",
        "currency": "USD",
        "pending": True,
    }
    t1 = created(post(client, "/v1/transfers", merchant_key, body))["transfer"]["id"]
    t2 = created(post(client, "/v1/transfers", merchant_key, body))["transfer"]["id"]
    k1, k2 = new_key(), new_key()
    posted = created(
        post(client, f"/v1/transfers/{t1}/post", merchant_key, {"amount": "4.00"}, idem=k1), 200
    )
    voided = created(post(client, f"/v1/transfers/{t2}/void", merchant_key, idem=k2), 200)
    before = head(container)
    # A retry of a post or void that went through answers the same, not "not pending".
    replayed(
        post(client, f"/v1/transfers/{t1}/post", merchant_key, {"amount": "4.00"}, idem=k1),
        200,
        posted,
    )
    replayed(post(client, f"/v1/transfers/{t2}/void", merchant_key, idem=k2), 200, voided)
    assert head(container) == before
    # A new key is a new request: now refused.
    assert_problem(
        post(client, f"/v1/transfers/{t1}/post", merchant_key), 409, "transfer-not-pending"
    )
    assert state(container, a) == (9600, 0, "active")
    audit_ok(container)


def test_a_business_failure_is_replayed_and_never_succeeds_later(client, container, merchant_key):
    a = funded_wallet(client, merchant_key, "5.00")
    b = open_wallet(client, merchant_key)
    key = new_key()
    body = {"debit_wallet_id": a, "credit_wallet_id": b, "amount": "10.00", "currency": "USD"}
    first = post(client, "/v1/transfers", merchant_key, body, idem=key)
    failure = assert_problem(first, 422, "insufficient-funds")
    assert "idempotent-replayed" not in first.headers
    deposit(client, merchant_key, a, "100.00")  # now it could succeed...
    before = head(container)
    r = post(client, "/v1/transfers", merchant_key, body, idem=key)
    replayed(r, 422, failure)  # ...but the key's answer is the stored failure
    assert r.headers["content-type"] == "application/problem+json"
    assert head(container) == before
    assert state(container, a)[0] == 10500 and state(container, b)[0] == 0
    # A fresh key goes through.
    created(post(client, "/v1/transfers", merchant_key, body))
    assert state(container, b)[0] == 1000
    audit_ok(container)


def test_other_stored_failures_replay(client, container, merchant_key):
    a = funded_wallet(client, merchant_key, "5.00")
    key = new_key()
    r = post(client, f"/v1/wallets/{a}/close", merchant_key, idem=key)
    failure = assert_problem(r, 409, "wallet-not-empty")
    created(
        post(
            client,
            "/v1/withdrawals",
            merchant_key,
            {"wallet_id": a, "amount": "5.00", "currency": "USD"},
        )
    )
    replayed(post(client, f"/v1/wallets/{a}/close", merchant_key, idem=key), 409, failure)
    assert state(container, a) == (0, 0, "active")
    # not-found is a stored answer too: the wallet does not appear later under this key.
    key = new_key()
    missing = "00000000-0000-4000-8000-000000000000"
    r = post(
        client,
        "/v1/deposits",
        merchant_key,
        {"wallet_id": missing, "amount": "1.00", "currency": "USD"},
        idem=key,
    )
    failure = assert_problem(r, 404, "not-found")
    replayed(
        post(
            client,
            "/v1/deposits",
            merchant_key,
            {"wallet_id": missing, "amount": "1.00", "currency": "USD"},
            idem=key,
        ),
        404,
        failure,
    )


def test_input_refused_before_the_ledger_does_not_consume_the_key(client, container, merchant_key):
    """Bad input is refused before any command runs: nothing is stored under the key,
    so the corrected request may use it."""
    a = open_wallet(client, merchant_key)
    key = new_key()
    keys = idempotency_rows(container)
    r = post(
        client,
        "/v1/deposits",
        merchant_key,
        {"wallet_id": a, "amount": "1.001", "currency": "USD"},
        idem=key,
    )
    assert_problem(r, 422, "invalid-amount")
    r = post(
        client,
        "/v1/deposits",
        merchant_key,
        {"wallet_id": a, "amount": 1.0, "currency": "USD"},
        idem=key,
    )
    assert_problem(r, 422, "validation-error")
    assert idempotency_rows(container) == keys
    created(
        post(
            client,
            "/v1/deposits",
            merchant_key,
            {"wallet_id": a, "amount": "1.00", "currency": "USD"},
            idem=key,
        )
    )
    assert state(container, a)[0] == 100


def test_keys_are_scoped_per_merchant(client, container, merchant_key, other_merchant_key):
    a = funded_wallet(client, merchant_key, "10.00")
    g = funded_wallet(client, other_merchant_key, "10.00")
    key = new_key()
    acme = created(
        post(
            client,
            "/v1/withdrawals",
            merchant_key,
            {"wallet_id": a, "amount": "1.00", "currency": "USD"},
            idem=key,
        )
    )
    # The same key, another merchant, another body: not a reuse, a first request.
    globex = created(
        post(
            client,
            "/v1/withdrawals",
            other_merchant_key,
            {"wallet_id": g, "amount": "2.00", "currency": "USD"},
            idem=key,
        )
    )
    assert acme["transfer"]["id"] != globex["transfer"]["id"]
    # Even with the very same body (its own wallet) the other merchant gets its own answer.
    b = open_wallet(client, merchant_key)
    h = open_wallet(client, other_merchant_key)
    key2 = new_key()
    r1 = post(client, f"/v1/wallets/{b}/freeze", merchant_key, idem=key2)
    r2 = post(client, f"/v1/wallets/{h}/freeze", other_merchant_key, idem=key2)
    assert created(r1, 200)["wallet"]["id"] == b and created(r2, 200)["wallet"]["id"] == h
    # Each replays its own answer.
    replayed(
        post(
            client,
            "/v1/withdrawals",
            merchant_key,
            {"wallet_id": a, "amount": "1.00", "currency": "USD"},
            idem=key,
        ),
        201,
        acme,
    )
    replayed(
        post(
            client,
            "/v1/withdrawals",
            other_merchant_key,
            {"wallet_id": g, "amount": "2.00", "currency": "USD"},
            idem=key,
        ),
        201,
        globex,
    )
    assert state(container, a)[0] == 900 and state(container, g)[0] == 800
    audit_ok(container)


def test_two_keys_of_one_merchant_share_its_idempotency_scope(client, container, merchant_key):
    second_key = container.api_keys.create("acme", "merchant")
    a = funded_wallet(client, merchant_key, "10.00")
    key = new_key()
    body = {"wallet_id": a, "amount": "1.00", "currency": "USD"}
    original = created(post(client, "/v1/withdrawals", merchant_key, body, idem=key))
    replayed(post(client, "/v1/withdrawals", second_key, body, idem=key), 201, original)
    assert state(container, a)[0] == 900


def test_records_survive_a_restart(container, merchant_key):
    from fastapi.testclient import TestClient

    from infrastructure.container import build
    from infrastructure.web import create_app

    key = new_key()
    with TestClient(create_app(container, manage_lifecycle=False)) as client:
        a = funded_wallet(client, merchant_key, "10.00")
        body = {"wallet_id": a, "amount": "4.00", "currency": "USD"}
        original = created(post(client, "/v1/withdrawals", merchant_key, body, idem=key))
        fail_key = new_key()
        failure = assert_problem(
            post(
                client, "/v1/withdrawals", merchant_key, {**body, "amount": "7.00"}, idem=fail_key
            ),
            422,
            "insufficient-funds",
        )
    before = head(container)

    restarted = build(test_settings(), db=container.db)  # a new process: empty caches
    try:
        with TestClient(create_app(restarted, manage_lifecycle=False)) as client:
            replayed(post(client, "/v1/withdrawals", merchant_key, body, idem=key), 201, original)
            replayed(
                post(
                    client,
                    "/v1/withdrawals",
                    merchant_key,
                    {**body, "amount": "7.00"},
                    idem=fail_key,
                ),
                422,
                failure,
            )
            r = post(client, "/v1/withdrawals", merchant_key, {**body, "amount": "5.00"}, idem=key)
            assert_problem(r, 422, "idempotency-key-reused")
            assert head(restarted) == before
            created(post(client, "/v1/withdrawals", merchant_key, {**body, "amount": "6.00"}))
    finally:
        restarted.close()
    assert state(container, a)[0] == 0
    audit_ok(container)


def test_replay_header_only_on_replays(client, merchant_key):
    r = client.post("/v1/wallets", json={"currency": "USD"}, headers=auth(merchant_key, new_key()))
    assert r.status_code == 201 and "idempotent-replayed" not in r.headers

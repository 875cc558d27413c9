"""POST /v1/wallets and the wallet lifecycle (freeze, unfreeze, close), plus the
service endpoints (health, OpenAPI, docs), on the real app and a real database."""

from __future__ import annotations

import pytest

from tests.conftest import auth, new_key
from tests.integration.api_support import (
    assert_problem,
    audit_ok,
    balance,
    created,
    deposit,
    funded_wallet,
    head,
    open_wallet,
    post,
    state,
)

pytestmark = pytest.mark.integration


# ---- opening --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "limit", "shown"),
    [
        ("USD", "0", "0.00"),
        ("USD", "50.00", "50.00"),
        ("JPY", "1000", "1000"),
        ("KWD", "1.5", "1.500"),
    ],
)
def test_open_wallet_in_each_exponent(client, container, merchant_key, currency, limit, shown):
    before = head(container)
    r = post(
        client,
        "/v1/wallets",
        merchant_key,
        {"currency": currency, "credit_limit": limit, "metadata": {"ref": "abc", "team": "ops"}},
    )
    body = created(r)
    wallet = body["wallet"]
    assert wallet["currency"] == currency
    assert wallet["merchant_id"] == "acme"
    assert wallet["status"] == "active"
    assert wallet["credit_limit"] == shown
    zero = {"USD": "0.00", "JPY": "0", "KWD": "0.000"}[currency]
    assert balance(wallet) == (zero, zero, shown)  # available = posted - pending + limit
    assert wallet["metadata"] == {"ref": "abc", "team": "ops"}
    assert body["position"] == before + 1 == head(container)
    assert state(container, wallet["id"]) == (0, 0, "active")


def test_open_wallet_defaults(client, merchant_key):
    wallet = created(post(client, "/v1/wallets", merchant_key, {"currency": "USD"}))["wallet"]
    assert wallet["credit_limit"] == "0.00"
    assert wallet["metadata"] == {}


def test_admin_opens_a_wallet_for_another_merchant(client, container, admin_key, merchant_key):
    r = post(client, "/v1/wallets", admin_key, {"currency": "USD", "merchant_id": "acme"})
    wallet = created(r)["wallet"]
    assert wallet["merchant_id"] == "acme"
    # The merchant owns it: it can move money in and out.
    deposit(client, merchant_key, wallet["id"], "5.00")
    own = created(post(client, "/v1/wallets", admin_key, {"currency": "EUR"}))["wallet"]
    assert own["merchant_id"] == "platform"
    audit_ok(container)


def test_merchant_may_not_open_a_wallet_for_another_merchant(client, container, merchant_key):
    before = head(container)
    r = post(client, "/v1/wallets", merchant_key, {"currency": "USD", "merchant_id": "globex"})
    assert_problem(r, 403, "forbidden")
    assert head(container) == before
    # Naming itself is allowed.
    r = post(client, "/v1/wallets", merchant_key, {"currency": "USD", "merchant_id": "acme"})
    assert created(r)["wallet"]["merchant_id"] == "acme"


BAD_OPEN = [
    ({"currency": "XXX"}, 422, "unknown-currency"),
    ({"currency": "usd"}, 422, "unknown-currency"),
    ({"currency": "US"}, 422, "validation-error"),
    ({}, 422, "validation-error"),
    ({"currency": "USD", "credit_limit": "-1.00"}, 422, "invalid-amount"),
    ({"currency": "USD", "credit_limit": "1.001"}, 422, "invalid-amount"),
    ({"currency": "JPY", "credit_limit": "1.5"}, 422, "invalid-amount"),
    ({"currency": "USD", "credit_limit": 50}, 422, "validation-error"),
    ({"currency": "USD", "credit_limit": 50.0}, 422, "validation-error"),
    ({"currency": "USD", "credit_limit": "99999999999999999999.00"}, 422, "invalid-amount"),
    ({"currency": "USD", "metadata": {"k": 1}}, 422, "validation-error"),
    ({"currency": "USD", "metadata": {f"k{i}": "v" for i in range(51)}}, 422, "validation-error"),
    ({"currency": "USD", "colour": "blue"}, 422, "validation-error"),
]


def test_open_wallet_bad_input_writes_nothing(client, container, merchant_key):
    before = head(container)
    for body, status, code in BAD_OPEN:
        assert_problem(post(client, "/v1/wallets", merchant_key, body), status, code)
    assert head(container) == before


# ---- freeze / unfreeze ----------------------------------------------------------------


def test_freeze_refuses_debit_and_credit_until_unfrozen(client, container, merchant_key):
    a = funded_wallet(client, merchant_key, "100.00")
    b = open_wallet(client, merchant_key)

    r = post(client, f"/v1/wallets/{a}/freeze", merchant_key, {"reason": "kyc review"})
    wallet = created(r, 200)["wallet"]
    assert wallet["status"] == "frozen"
    assert balance(wallet) == ("100.00", "0.00", "100.00")

    refused = [
        ("/v1/deposits", {"wallet_id": a, "amount": "1.00", "currency": "USD"}),
        ("/v1/withdrawals", {"wallet_id": a, "amount": "1.00", "currency": "USD"}),
        ("/v1/withdrawals", {"wallet_id": a, "amount": "1.00", "currency": "USD", "pending": True}),
        (
            "/v1/transfers",
            {"debit_wallet_id": a, "credit_wallet_id": b, "amount": "1.00", "currency": "USD"},
        ),
        (
            "/v1/transfers",
            {"debit_wallet_id": b, "credit_wallet_id": a, "amount": "0.01", "currency": "USD"},
        ),
    ]
    deposit(client, merchant_key, b, "1.00")
    frozen_at = head(container)
    for path, body in refused:
        assert_problem(post(client, path, merchant_key, body), 409, "wallet-frozen")
    assert_problem(
        post(client, f"/v1/wallets/{a}/freeze", merchant_key), 409, "invalid-wallet-state"
    )
    assert head(container) == frozen_at
    assert state(container, a) == (10000, 0, "frozen")

    r = post(client, f"/v1/wallets/{a}/unfreeze", merchant_key)
    assert created(r, 200)["wallet"]["status"] == "active"
    assert_problem(
        post(client, f"/v1/wallets/{a}/unfreeze", merchant_key), 409, "invalid-wallet-state"
    )
    created(post(client, "/v1/withdrawals", merchant_key, refused[1][1]))
    assert state(container, a) == (9900, 0, "active")
    audit_ok(container)


def test_freeze_without_body_and_empty_body(client, merchant_key):
    a = open_wallet(client, merchant_key)
    assert (
        created(post(client, f"/v1/wallets/{a}/freeze", merchant_key), 200)["wallet"]["status"]
        == "frozen"
    )
    r = post(client, f"/v1/wallets/{a}/unfreeze", merchant_key, {})
    assert created(r, 200)["wallet"]["status"] == "active"
    r = post(client, f"/v1/wallets/{a}/unfreeze", merchant_key, {"reason": "x"})
    assert_problem(r, 422, "validation-error")  # unfreeze takes no fields


def test_frozen_wallet_blocks_posting_a_pending_transfer(client, container, merchant_key):
    a = funded_wallet(client, merchant_key, "10.00")
    b = open_wallet(client, merchant_key)
    r = post(
        client,
        "/v1/transfers",
        merchant_key,
        {
            "debit_wallet_id": a,
            "credit_wallet_id": b,
            "amount": "4.00",
            "currency": "USD",
            "pending": True,
        },
    )
    transfer = created(r)["transfer"]["id"]
    created(post(client, f"/v1/wallets/{b}/freeze", merchant_key), 200)
    before = head(container)
    assert_problem(
        post(client, f"/v1/transfers/{transfer}/post", merchant_key), 409, "wallet-frozen"
    )
    assert head(container) == before
    # Voiding only releases the hold on the (active) debit wallet: allowed.
    r = post(client, f"/v1/transfers/{transfer}/void", merchant_key)
    assert created(r, 200)["transfer"]["status"] == "voided"
    assert state(container, a) == (1000, 0, "active")
    audit_ok(container)


# ---- close ----------------------------------------------------------------------------


def test_close_only_at_zero_balance(client, container, merchant_key):
    a = funded_wallet(client, merchant_key, "25.00")
    before = head(container)
    body = assert_problem(
        post(client, f"/v1/wallets/{a}/close", merchant_key), 409, "wallet-not-empty"
    )
    assert "25.00" in body["detail"]
    assert head(container) == before

    created(
        post(
            client,
            "/v1/withdrawals",
            merchant_key,
            {"wallet_id": a, "amount": "25.00", "currency": "USD"},
        )
    )
    wallet = created(post(client, f"/v1/wallets/{a}/close", merchant_key), 200)["wallet"]
    assert wallet["status"] == "closed"
    assert balance(wallet) == ("0.00", "0.00", "0.00")
    closed_at = head(container)

    money = {"wallet_id": a, "amount": "1.00", "currency": "USD"}
    assert_problem(post(client, "/v1/deposits", merchant_key, money), 409, "wallet-closed")
    assert_problem(post(client, "/v1/withdrawals", merchant_key, money), 409, "wallet-closed")
    assert_problem(post(client, f"/v1/wallets/{a}/close", merchant_key), 409, "wallet-closed")
    assert_problem(
        post(client, f"/v1/wallets/{a}/freeze", merchant_key), 409, "invalid-wallet-state"
    )
    assert_problem(
        post(client, f"/v1/wallets/{a}/unfreeze", merchant_key), 409, "invalid-wallet-state"
    )
    assert head(container) == closed_at
    b = funded_wallet(client, merchant_key, "5.00")
    closed_at = head(container)
    transfer = {"debit_wallet_id": b, "credit_wallet_id": a, "amount": "1.00", "currency": "USD"}
    assert_problem(post(client, "/v1/transfers", merchant_key, transfer), 409, "wallet-closed")
    assert head(container) == closed_at
    assert state(container, a) == (0, 0, "closed")
    audit_ok(container)


def test_close_refused_while_a_hold_is_pending(client, container, merchant_key):
    # Posted is zero but money is held (the credit limit pays for it): not empty.
    a = open_wallet(client, merchant_key, credit_limit="10.00")
    r = post(
        client,
        "/v1/withdrawals",
        merchant_key,
        {"wallet_id": a, "amount": "5.00", "currency": "USD", "pending": True},
    )
    hold = created(r)
    assert balance(hold["wallets"][0]) == ("0.00", "5.00", "5.00")
    assert_problem(post(client, f"/v1/wallets/{a}/close", merchant_key), 409, "wallet-not-empty")
    created(post(client, f"/v1/transfers/{hold['transfer']['id']}/void", merchant_key), 200)
    assert (
        created(post(client, f"/v1/wallets/{a}/close", merchant_key), 200)["wallet"]["status"]
        == "closed"
    )
    audit_ok(container)


def test_close_a_frozen_empty_wallet(client, merchant_key):
    a = open_wallet(client, merchant_key)
    created(post(client, f"/v1/wallets/{a}/freeze", merchant_key), 200)
    assert (
        created(post(client, f"/v1/wallets/{a}/close", merchant_key), 200)["wallet"]["status"]
        == "closed"
    )


@pytest.mark.parametrize("action", ["freeze", "unfreeze", "close"])
def test_lifecycle_on_unknown_or_malformed_wallet(client, container, merchant_key, action):
    before = head(container)
    assert_problem(
        post(client, f"/v1/wallets/{new_key()}/{action}", merchant_key), 404, "not-found"
    )
    assert_problem(
        post(client, f"/v1/wallets/not-a-uuid/{action}", merchant_key), 422, "validation-error"
    )
    assert head(container) == before


def test_admin_may_freeze_any_merchants_wallet(client, container, merchant_key, admin_key):
    a = funded_wallet(client, merchant_key, "1.00")
    assert (
        created(post(client, f"/v1/wallets/{a}/freeze", admin_key), 200)["wallet"]["status"]
        == "frozen"
    )
    assert (
        created(post(client, f"/v1/wallets/{a}/unfreeze", admin_key), 200)["wallet"]["status"]
        == "active"
    )


# ---- service endpoints ------------------------------------------------------------------


def test_health(client, container, merchant_key):
    open_wallet(client, merchant_key)
    r = client.get("/v1/health")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["status"] == "ok" and body["database"] == "ok"
    assert body["head_position"] == head(container) == 1
    assert set(body["projections"]) >= {"balances", "statements", "transfers"}
    for p in body["projections"].values():
        assert p["lag"] == body["head_position"] - p["position"] >= 0


def test_openapi_describes_every_endpoint(client):
    r = client.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    paths = spec["paths"]
    for path in (
        "/v1/wallets",
        "/v1/wallets/{wallet_id}/freeze",
        "/v1/wallets/{wallet_id}/unfreeze",
        "/v1/wallets/{wallet_id}/close",
        "/v1/deposits",
        "/v1/withdrawals",
        "/v1/transfers",
        "/v1/transfers/batch",
        "/v1/transfers/{transfer_id}/post",
        "/v1/transfers/{transfer_id}/void",
    ):
        assert "post" in paths[path], path
    assert "get" in paths["/v1/health"]
    # Amounts are documented as strings, never numbers.
    schema = spec["components"]["schemas"]["DepositCreate"]["properties"]["amount"]
    assert schema["type"] == "string"


def test_docs_page(client):
    r = client.get("/docs")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in r.text


def test_problem_type_pages(client):
    r = client.get("/problems/insufficient-funds")
    assert r.status_code == 200
    assert r.text == "Insufficient funds"


def test_unknown_route_and_wrong_method_are_problems(client, merchant_key):
    assert_problem(client.get("/v1/nowhere", headers=auth(merchant_key)), 404, "not-found")
    assert_problem(client.get("/v1/wallets", headers=auth(merchant_key)), 405, "method-not-allowed")

"""Deposits, withdrawals, transfers (posted and pending), post/void, expiry and batches
through the HTTP API on a real database."""

from __future__ import annotations

import time

import pytest

from tests.integration.api_support import (
    assert_problem,
    audit_ok,
    balance,
    by_id,
    created,
    deposit,
    funded_wallet,
    head,
    open_wallet,
    post,
    state,
)

pytestmark = pytest.mark.integration


def transfer_body(debit: str, credit: str, amount: str, currency: str = "USD", **extra):
    return {
        "debit_wallet_id": debit,
        "credit_wallet_id": credit,
        "amount": amount,
        "currency": currency,
        **extra,
    }


def pending(client, key, debit, credit, amount, **extra):
    r = post(
        client, "/v1/transfers", key, transfer_body(debit, credit, amount, pending=True, **extra)
    )
    return created(r)


# ---- deposits and withdrawals ---------------------------------------------------------


def test_deposit(client, container, merchant_key):
    a = open_wallet(client, merchant_key)
    before = head(container)
    body = deposit(client, merchant_key, a, "12.34")
    t = body["transfer"]
    assert t["kind"] == "deposit" and t["status"] == "posted"
    assert t["debit_wallet_id"] is None and t["credit_wallet_id"] == a
    assert (t["amount"], t["currency"], t["posted_amount"], t["pending_amount"]) == (
        "12.34",
        "USD",
        "12.34",
        "0.00",
    )
    assert [w["id"] for w in body["wallets"]] == [a]
    assert balance(body["wallets"][0]) == ("12.34", "0.00", "12.34")
    assert body["position"] == head(container) > before
    assert state(container, a) == (1234, 0, "active")
    audit_ok(container)


@pytest.mark.parametrize(
    ("currency", "amount", "minor"), [("JPY", "1500", 1500), ("KWD", "1.234", 1234)]
)
def test_deposit_in_other_exponents(client, container, merchant_key, currency, amount, minor):
    a = open_wallet(client, merchant_key, currency)
    body = deposit(client, merchant_key, a, amount, currency)
    assert body["wallets"][0]["balance"]["posted"] == amount
    assert state(container, a)[0] == minor
    audit_ok(container)


def test_deposit_metadata_is_kept(client, merchant_key):
    a = open_wallet(client, merchant_key)
    r = post(
        client,
        "/v1/deposits",
        merchant_key,
        {
            "wallet_id": a,
            "amount": "1.00",
            "currency": "USD",
            "metadata": {"psp": "stripe", "ref": "ch_1"},
        },
    )
    assert created(r)["transfer"]["metadata"] == {"psp": "stripe", "ref": "ch_1"}


def test_withdrawal(client, container, merchant_key):
    a = funded_wallet(client, merchant_key, "50.00")
    r = post(
        client,
        "/v1/withdrawals",
        merchant_key,
        {"wallet_id": a, "amount": "20.01", "currency": "USD"},
    )
    body = created(r)
    t = body["transfer"]
    assert t["kind"] == "withdrawal" and t["status"] == "posted"
    assert t["debit_wallet_id"] == a and t["credit_wallet_id"] is None
    assert balance(body["wallets"][0]) == ("29.99", "0.00", "29.99")
    assert state(container, a) == (2999, 0, "active")
    audit_ok(container)


def test_pending_withdrawal_then_post(client, container, merchant_key):
    a = funded_wallet(client, merchant_key, "50.00")
    r = post(
        client,
        "/v1/withdrawals",
        merchant_key,
        {
            "wallet_id": a,
            "amount": "30.00",
            "currency": "USD",
            "pending": True,
            "timeout_seconds": 3600,
        },
    )
    body = created(r)
    t = body["transfer"]
    assert (t["status"], t["pending_amount"], t["posted_amount"]) == ("pending", "30.00", "0.00")
    assert t["expires_at"] is not None
    assert balance(body["wallets"][0]) == ("50.00", "30.00", "20.00")
    # The hold counts: 20.01 more is not available.
    r = post(
        client,
        "/v1/withdrawals",
        merchant_key,
        {"wallet_id": a, "amount": "20.01", "currency": "USD"},
    )
    assert_problem(r, 422, "insufficient-funds")

    body = created(post(client, f"/v1/transfers/{t['id']}/post", merchant_key), 200)
    assert body["transfer"]["status"] == "posted" and body["transfer"]["posted_amount"] == "30.00"
    assert [w["id"] for w in body["wallets"]] == [a]  # world is not a wallet
    assert balance(body["wallets"][0]) == ("20.00", "0.00", "20.00")
    assert state(container, a) == (2000, 0, "active")
    audit_ok(container)


def test_pending_withdrawal_then_void(client, container, merchant_key):
    a = funded_wallet(client, merchant_key, "50.00")
    r = post(
        client,
        "/v1/withdrawals",
        merchant_key,
        {"wallet_id": a, "amount": "30.00", "currency": "USD", "pending": True},
    )
    t = created(r)["transfer"]
    assert t["expires_at"] is None
    body = created(post(client, f"/v1/transfers/{t['id']}/void", merchant_key), 200)
    assert body["transfer"]["status"] == "voided"
    assert body["transfer"]["posted_amount"] == "0.00"
    assert balance(body["wallets"][0]) == ("50.00", "0.00", "50.00")
    assert state(container, a) == (5000, 0, "active")
    audit_ok(container)


def test_timeout_without_pending_is_refused(client, container, merchant_key):
    a = funded_wallet(client, merchant_key, "5.00")
    b = open_wallet(client, merchant_key)
    before = head(container)
    r = post(
        client,
        "/v1/withdrawals",
        merchant_key,
        {"wallet_id": a, "amount": "1.00", "currency": "USD", "timeout_seconds": 60},
    )
    assert_problem(r, 422, "validation-error")
    r = post(client, "/v1/transfers", merchant_key, transfer_body(a, b, "1.00", timeout_seconds=60))
    assert_problem(r, 422, "validation-error")
    for bad in (0, -5, 1.5, "60", 30 * 24 * 3600 + 1):
        r = post(
            client,
            "/v1/transfers",
            merchant_key,
            transfer_body(a, b, "1.00", pending=True, timeout_seconds=bad),
        )
        assert_problem(r, 422, "validation-error")
    assert head(container) == before


# ---- transfers ------------------------------------------------------------------------


def test_posted_transfer(client, container, merchant_key):
    a = funded_wallet(client, merchant_key, "100.00")
    b = open_wallet(client, merchant_key)
    body = created(
        post(
            client,
            "/v1/transfers",
            merchant_key,
            transfer_body(a, b, "40.50", metadata={"order": "42"}),
        )
    )
    t = body["transfer"]
    assert t["kind"] == "transfer" and t["status"] == "posted" and t["pending"] is False
    assert (t["debit_wallet_id"], t["credit_wallet_id"]) == (a, b)
    assert t["metadata"] == {"order": "42"}
    wallets = by_id(body)
    assert balance(wallets[a]) == ("59.50", "0.00", "59.50")
    assert balance(wallets[b]) == ("40.50", "0.00", "40.50")
    assert body["position"] == head(container)
    assert state(container, a)[0] == 5950 and state(container, b)[0] == 4050
    audit_ok(container)


def test_pending_transfer_holds_then_full_post(client, container, merchant_key):
    a = funded_wallet(client, merchant_key, "100.00")
    b = open_wallet(client, merchant_key)
    body = pending(client, merchant_key, a, b, "60.00", timeout_seconds=600)
    t = body["transfer"]
    assert t["status"] == "pending" and t["pending"] is True
    assert (t["pending_amount"], t["posted_amount"]) == ("60.00", "0.00")
    assert t["expires_at"] > t["created_at"]
    wallets = by_id(body)
    assert balance(wallets[a]) == ("100.00", "60.00", "40.00")
    assert balance(wallets[b]) == ("0.00", "0.00", "0.00")

    body = created(post(client, f"/v1/transfers/{t['id']}/post", merchant_key, {}), 200)
    assert body["transfer"]["status"] == "posted"
    assert (body["transfer"]["posted_amount"], body["transfer"]["pending_amount"]) == (
        "60.00",
        "0.00",
    )
    wallets = by_id(body)
    assert balance(wallets[a]) == ("40.00", "0.00", "40.00")
    assert balance(wallets[b]) == ("60.00", "0.00", "60.00")
    assert state(container, a) == (4000, 0, "active") and state(container, b) == (6000, 0, "active")
    audit_ok(container)


def test_partial_post_releases_the_rest(client, container, merchant_key):
    a = funded_wallet(client, merchant_key, "100.00")
    b = funded_wallet(client, merchant_key, "1.00")
    t = pending(client, merchant_key, a, b, "75.00")["transfer"]
    before = head(container)
    r = post(client, f"/v1/transfers/{t['id']}/post", merchant_key, {"amount": "75.01"})
    assert_problem(r, 422, "post-exceeds-pending")
    assert head(container) == before
    for bad, code in (
        ("0", "invalid-amount"),
        ("1.001", "invalid-amount"),
        ("-1", "invalid-amount"),
    ):
        assert_problem(
            post(client, f"/v1/transfers/{t['id']}/post", merchant_key, {"amount": bad}), 422, code
        )
    r = post(
        client, f"/v1/transfers/{t['id']}/post", merchant_key, {"amount": "1.00", "currency": "EUR"}
    )
    assert_problem(r, 422, "currency-mismatch")
    assert head(container) == before

    body = created(
        post(
            client,
            f"/v1/transfers/{t['id']}/post",
            merchant_key,
            {"amount": "30.25", "currency": "USD"},
        ),
        200,
    )
    assert body["transfer"]["status"] == "posted"
    assert body["transfer"]["posted_amount"] == "30.25"
    assert body["transfer"]["pending_amount"] == "0.00"
    wallets = by_id(body)
    assert balance(wallets[a]) == ("69.75", "0.00", "69.75")
    assert balance(wallets[b]) == ("31.25", "0.00", "31.25")
    assert state(container, a) == (6975, 0, "active") and state(container, b) == (3125, 0, "active")
    audit_ok(container)


def test_post_and_void_only_once(client, container, merchant_key):
    a = funded_wallet(client, merchant_key, "100.00")
    b = open_wallet(client, merchant_key)
    posted = pending(client, merchant_key, a, b, "10.00")["transfer"]["id"]
    voided = pending(client, merchant_key, a, b, "20.00")["transfer"]["id"]
    created(post(client, f"/v1/transfers/{posted}/post", merchant_key), 200)
    body = created(post(client, f"/v1/transfers/{voided}/void", merchant_key), 200)
    assert balance(by_id(body)[a]) == ("90.00", "0.00", "90.00")
    before = head(container)
    for tid in (posted, voided):
        for action in ("post", "void"):
            assert_problem(
                post(client, f"/v1/transfers/{tid}/{action}", merchant_key),
                409,
                "transfer-not-pending",
            )
    # A transfer posted at once was never pending.
    direct = created(post(client, "/v1/transfers", merchant_key, transfer_body(a, b, "1.00")))[
        "transfer"
    ]["id"]
    before = head(container)
    assert_problem(
        post(client, f"/v1/transfers/{direct}/void", merchant_key), 409, "transfer-not-pending"
    )
    assert head(container) == before
    assert state(container, a) == (8900, 0, "active") and state(container, b) == (1100, 0, "active")
    audit_ok(container)


def test_post_and_void_unknown_or_malformed_transfer(client, container, merchant_key):
    a = open_wallet(client, merchant_key)
    before = head(container)
    for action in ("post", "void"):
        unknown = "00000000-0000-4000-8000-000000000000"
        assert_problem(
            post(client, f"/v1/transfers/{unknown}/{action}", merchant_key), 404, "not-found"
        )
        # A wallet is not a transfer.
        assert_problem(post(client, f"/v1/transfers/{a}/{action}", merchant_key), 404, "not-found")
        assert_problem(
            post(client, f"/v1/transfers/12345/{action}", merchant_key), 422, "validation-error"
        )
    assert head(container) == before


def test_pending_transfer_expires(client, container, merchant_key):
    a = funded_wallet(client, merchant_key, "10.00")
    b = open_wallet(client, merchant_key)
    to_post = pending(client, merchant_key, a, b, "3.00", timeout_seconds=1)["transfer"]
    to_void = pending(client, merchant_key, a, b, "4.00", timeout_seconds=1)["transfer"]
    assert state(container, a) == (1000, 700, "active")
    time.sleep(1.2)
    # Expiry is decided by command time against expiry time, whether or not the
    # sweeper has released the hold yet: the answer is always transfer-expired.
    assert_problem(
        post(client, f"/v1/transfers/{to_post['id']}/post", merchant_key), 409, "transfer-expired"
    )
    assert_problem(
        post(client, f"/v1/transfers/{to_void['id']}/void", merchant_key), 409, "transfer-expired"
    )
    # The sweeper releases both holds; nothing was ever posted.
    deadline = time.monotonic() + 10
    while state(container, a)[1] != 0:
        assert time.monotonic() < deadline, "expired holds were not released"
        time.sleep(0.05)
    assert state(container, a) == (1000, 0, "active") and state(container, b) == (0, 0, "active")
    assert_problem(
        post(client, f"/v1/transfers/{to_post['id']}/post", merchant_key), 409, "transfer-expired"
    )
    audit_ok(container)


def test_credit_limit_allows_an_overdraft_down_to_minus_the_limit(client, container, merchant_key):
    a = open_wallet(client, merchant_key, credit_limit="50.00")
    b = open_wallet(client, merchant_key)
    body = created(post(client, "/v1/transfers", merchant_key, transfer_body(a, b, "30.00")))
    assert balance(by_id(body)[a]) == ("-30.00", "0.00", "20.00")
    before = head(container)
    r = post(
        client,
        "/v1/withdrawals",
        merchant_key,
        {"wallet_id": a, "amount": "20.01", "currency": "USD"},
    )
    assert_problem(r, 422, "insufficient-funds")
    assert_problem(
        post(client, "/v1/transfers", merchant_key, transfer_body(a, b, "20.01", pending=True)),
        422,
        "insufficient-funds",
    )
    assert head(container) == before
    body = created(
        post(
            client,
            "/v1/withdrawals",
            merchant_key,
            {"wallet_id": a, "amount": "20.00", "currency": "USD"},
        )
    )
    assert balance(body["wallets"][0]) == ("-50.00", "0.00", "0.00")
    before = head(container)
    r = post(
        client,
        "/v1/withdrawals",
        merchant_key,
        {"wallet_id": a, "amount": "0.01", "currency": "USD"},
    )
    assert_problem(r, 422, "insufficient-funds")
    assert head(container) == before
    assert state(container, a) == (-5000, 0, "active")
    # A wallet without a limit never goes below zero.
    assert_problem(
        post(client, "/v1/transfers", merchant_key, transfer_body(b, a, "30.01")),
        422,
        "insufficient-funds",
    )
    audit_ok(container)


# ---- batches --------------------------------------------------------------------------


def test_batch_non_atomic_gives_per_item_results(client, container, merchant_key):
    a = funded_wallet(client, merchant_key, "10.00")
    b = open_wallet(client, merchant_key)
    e = open_wallet(client, merchant_key, "EUR")
    items = [
        transfer_body(a, b, "4.00"),
        transfer_body(a, b, "7.00"),  # only 6.00 left
        transfer_body(a, a, "1.00"),
        transfer_body(a, e, "1.00"),
        transfer_body(a, "00000000-0000-4000-8000-000000000000", "1.00"),
        transfer_body(a, b, "6.00"),
    ]
    body = created(post(client, "/v1/transfers/batch", merchant_key, {"transfers": items}))
    assert (body["atomic"], body["succeeded"], body["failed"]) == (False, 2, 4)
    results = body["results"]
    assert [r["index"] for r in results] == list(range(6))
    assert [r["status"] for r in results] == ["ok", "failed", "failed", "failed", "failed", "ok"]
    assert [r["error"]["type"] for r in results if r["status"] == "failed"] == [
        "insufficient-funds",
        "same-account",
        "currency-mismatch",
        "not-found",
    ]
    assert results[0]["transfer"]["amount"] == "4.00" and results[5]["transfer"]["amount"] == "6.00"
    assert body["position"] == head(container)
    assert state(container, a) == (0, 0, "active") and state(container, b) == (1000, 0, "active")
    audit_ok(container)


def test_batch_non_atomic_all_failed(client, container, merchant_key):
    a = funded_wallet(client, merchant_key, "1.00")
    b = open_wallet(client, merchant_key)
    before = head(container)
    r = post(
        client, "/v1/transfers/batch", merchant_key, {"transfers": [transfer_body(a, b, "2.00")]}
    )
    body = assert_problem(r, 422, "batch-failed")
    assert (body["succeeded"], body["failed"]) == (0, 1)
    assert body["results"][0]["error"]["type"] == "insufficient-funds"
    assert head(container) == before


def test_batch_atomic_all_or_nothing(client, container, merchant_key):
    a = funded_wallet(client, merchant_key, "10.00")
    b = open_wallet(client, merchant_key)
    c = open_wallet(client, merchant_key)
    before = head(container)
    items = [transfer_body(a, b, "5.00"), transfer_body(a, c, "4.00"), transfer_body(a, c, "2.00")]
    r = post(client, "/v1/transfers/batch", merchant_key, {"atomic": True, "transfers": items})
    body = assert_problem(r, 422, "insufficient-funds")
    assert body["index"] == 2
    assert head(container) == before
    assert [state(container, w)[0] for w in (a, b, c)] == [1000, 0, 0]

    items[2] = transfer_body(b, c, "2.00", pending=True)  # uses money item 0 brings in
    body = created(
        post(client, "/v1/transfers/batch", merchant_key, {"atomic": True, "transfers": items})
    )
    assert (body["atomic"], body["succeeded"], body["failed"]) == (True, 3, 0)
    assert [r["transfer"]["status"] for r in body["results"]] == ["posted", "posted", "pending"]
    assert state(container, a) == (100, 0, "active")
    assert state(container, b) == (500, 200, "active")
    assert state(container, c) == (400, 0, "active")
    audit_ok(container)


def test_batch_of_the_maximum_size_is_accepted(client, container, merchant_key):
    a = funded_wallet(client, merchant_key, "81.90")
    b = open_wallet(client, merchant_key)
    items = [transfer_body(a, b, "0.01", metadata={"n": str(i)}) for i in range(8190)]
    body = created(
        post(client, "/v1/transfers/batch", merchant_key, {"atomic": True, "transfers": items})
    )
    assert (body["succeeded"], body["failed"]) == (8190, 0)
    assert state(container, a) == (0, 0, "active") and state(container, b) == (8190, 0, "active")
    audit_ok(container)


def test_batch_over_the_maximum_is_refused(client, container, merchant_key):
    a = funded_wallet(client, merchant_key, "100.00")
    b = open_wallet(client, merchant_key)
    before = head(container)
    items = [transfer_body(a, b, "0.01")] * 8191
    r = post(client, "/v1/transfers/batch", merchant_key, {"atomic": False, "transfers": items})
    body = assert_problem(r, 422, "validation-error")
    assert body["errors"][0]["loc"] == ["body", "transfers"]
    assert_problem(
        post(client, "/v1/transfers/batch", merchant_key, {"transfers": []}),
        422,
        "validation-error",
    )
    assert head(container) == before
    assert state(container, a) == (10000, 0, "active")

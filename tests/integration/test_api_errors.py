"""Every error type of the command API: status, problem ``type``, problem+json, and that
nothing was written (the event store's head does not move, balances stay put)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest

from tests.conftest import auth, new_key
from tests.integration.api_support import (
    assert_problem,
    audit_ok,
    created,
    funded_wallet,
    head,
    idempotency_rows,
    open_wallet,
    post,
    state,
)

pytestmark = pytest.mark.integration

UNKNOWN = "00000000-0000-4000-8000-000000000000"


def transfer_body(debit: str, credit: str, amount: str, currency: str = "USD", **extra):
    return {
        "debit_wallet_id": debit,
        "credit_wallet_id": credit,
        "amount": amount,
        "currency": currency,
        **extra,
    }


@pytest.fixture
def wallets(client, merchant_key):
    """A (funded with 100.00) and B, both USD, of merchant acme."""
    return funded_wallet(client, merchant_key, "100.00"), open_wallet(client, merchant_key)


# ---- business rules -------------------------------------------------------------------


def test_insufficient_funds(client, container, merchant_key, wallets):
    a, b = wallets
    before = head(container)
    cases = [
        ("/v1/withdrawals", {"wallet_id": a, "amount": "100.01", "currency": "USD"}),
        (
            "/v1/withdrawals",
            {"wallet_id": a, "amount": "100.01", "currency": "USD", "pending": True},
        ),
        ("/v1/transfers", transfer_body(a, b, "100.01")),
        ("/v1/transfers", transfer_body(a, b, "100.01", pending=True)),
        ("/v1/transfers", transfer_body(b, a, "0.01")),
    ]
    for path, body in cases:
        problem = assert_problem(post(client, path, merchant_key, body), 422, "insufficient-funds")
        assert problem["title"] == "Insufficient funds"
    assert head(container) == before
    assert state(container, a) == (10000, 0, "active") and state(container, b) == (0, 0, "active")
    # Exactly the available amount is fine.
    created(post(client, "/v1/transfers", merchant_key, transfer_body(a, b, "100.00")))
    audit_ok(container)


def test_currency_mismatch(client, container, merchant_key, wallets):
    a, b = wallets
    eur = funded_wallet(client, merchant_key, "10.00", "EUR")
    before = head(container)
    cases = [
        ("/v1/deposits", {"wallet_id": a, "amount": "1.00", "currency": "EUR"}),
        ("/v1/withdrawals", {"wallet_id": a, "amount": "1.00", "currency": "EUR"}),
        ("/v1/transfers", transfer_body(a, eur, "1.00", "USD")),
        ("/v1/transfers", transfer_body(a, eur, "1.00", "EUR")),
        ("/v1/transfers", transfer_body(eur, a, "1.00", "EUR")),
        ("/v1/transfers", transfer_body(a, b, "1.00", "EUR")),
        ("/v1/deposits", {"wallet_id": a, "amount": "1", "currency": "JPY"}),
    ]
    for path, body in cases:
        assert_problem(post(client, path, merchant_key, body), 422, "currency-mismatch")
    assert head(container) == before
    assert state(container, a)[0] == 10000 and state(container, eur)[0] == 1000


def test_same_account(client, container, merchant_key, wallets):
    a, _ = wallets
    before = head(container)
    for pending in (False, True):
        r = post(
            client, "/v1/transfers", merchant_key, transfer_body(a, a, "1.00", pending=pending)
        )
        assert_problem(r, 422, "same-account")
    assert head(container) == before


# ---- bad input --------------------------------------------------------------------------


# (amount as sent, currency, problem type): every one is a 4xx that writes nothing.
BAD_AMOUNTS = [
    (12.5, "USD", "validation-error"),  # a JSON number is never money
    (12, "USD", "validation-error"),
    (True, "USD", "validation-error"),
    (None, "USD", "validation-error"),
    ("", "USD", "validation-error"),
    ("12.345", "USD", "invalid-amount"),  # more decimals than the currency has
    ("1.5", "JPY", "invalid-amount"),
    ("1.0001", "KWD", "invalid-amount"),
    ("0", "USD", "invalid-amount"),
    ("0.00", "USD", "invalid-amount"),
    ("-1.00", "USD", "invalid-amount"),
    ("+1.00", "USD", "invalid-amount"),
    ("1e3", "USD", "invalid-amount"),
    ("1E3", "USD", "invalid-amount"),
    ("NaN", "USD", "invalid-amount"),
    ("Infinity", "USD", "invalid-amount"),
    ("0x10", "USD", "invalid-amount"),
    ("1,00", "USD", "invalid-amount"),
    (" 1.00", "USD", "invalid-amount"),
    ("1.00 ", "USD", "invalid-amount"),
    ("01.00", "USD", "invalid-amount"),
    (".50", "USD", "invalid-amount"),
    ("1.", "USD", "invalid-amount"),
    ("١٢", "USD", "invalid-amount"),  # non-ASCII digits
    ("99999999999999999999.00", "USD", "invalid-amount"),
    ("10000000000000.01", "USD", "invalid-amount"),  # just above the 10^15 minor-unit cap
    ("1" * 41, "JPY", "validation-error"),  # longer than any amount
    ("1.00", "XXX", "unknown-currency"),
    ("1.00", "usd", "unknown-currency"),
    ("1.00", "US", "validation-error"),
    ("1.00", 840, "validation-error"),
]


@pytest.mark.parametrize("endpoint", ["deposit", "withdrawal", "transfer", "pending", "batch"])
def test_bad_amounts_are_refused_and_write_nothing(
    client, container, merchant_key, wallets, endpoint
):
    a, b = wallets
    before, keys = head(container), idempotency_rows(container)
    for amount, currency, code in BAD_AMOUNTS:
        money = {"amount": amount, "currency": currency}
        path, body = {
            "deposit": ("/v1/deposits", {"wallet_id": b, **money}),
            "withdrawal": ("/v1/withdrawals", {"wallet_id": a, **money}),
            "transfer": ("/v1/transfers", {"debit_wallet_id": a, "credit_wallet_id": b, **money}),
            "pending": (
                "/v1/transfers",
                {"debit_wallet_id": a, "credit_wallet_id": b, "pending": True, **money},
            ),
            "batch": (
                "/v1/transfers/batch",
                {
                    "transfers": [
                        transfer_body(a, b, "1.00"),
                        {"debit_wallet_id": a, "credit_wallet_id": b, **money},
                    ]
                },
            ),
        }[endpoint]
        r = post(client, path, merchant_key, body)
        assert 400 <= r.status_code < 500, (amount, currency, r.text)
        problem = assert_problem(r, 422, code)
        assert problem["detail"], (amount, currency)
    assert head(container) == before
    assert idempotency_rows(container) == keys  # refused before it reached the ledger
    assert state(container, a) == (10000, 0, "active") and state(container, b) == (0, 0, "active")


def test_largest_amount_is_accepted(client, container, merchant_key):
    a = open_wallet(client, merchant_key)
    body = created(
        post(
            client,
            "/v1/deposits",
            merchant_key,
            {"wallet_id": a, "amount": "10000000000000.00", "currency": "USD"},
        )
    )
    assert body["wallets"][0]["balance"]["posted"] == "10000000000000.00"
    audit_ok(container)


MALFORMED = [
    ("/v1/deposits", {"wallet_id": "not-a-uuid", "amount": "1.00", "currency": "USD"}),
    ("/v1/deposits", {"wallet_id": 42, "amount": "1.00", "currency": "USD"}),
    ("/v1/withdrawals", {"wallet_id": "1234", "amount": "1.00", "currency": "USD"}),
    ("/v1/transfers", transfer_body("zzz", UNKNOWN, "1.00")),
    ("/v1/transfers", transfer_body(UNKNOWN, "", "1.00")),
    ("/v1/deposits", {"amount": "1.00", "currency": "USD"}),  # missing field
    ("/v1/deposits", {"wallet_id": UNKNOWN, "amount": "1.00", "currency": "USD", "extra": 1}),
    ("/v1/transfers", transfer_body(UNKNOWN, UNKNOWN, "1.00", pending="yes")),
    ("/v1/deposits", ["not", "an", "object"]),
    (
        "/v1/deposits",
        {
            "wallet_id": UNKNOWN,
            "amount": "1.00",
            "currency": "USD",
            "metadata": {"k": {"nested": 1}},
        },
    ),
]


def test_malformed_bodies_are_validation_errors(client, container, merchant_key):
    before = head(container)
    for path, body in MALFORMED:
        problem = assert_problem(post(client, path, merchant_key, body), 422, "validation-error")
        assert problem["errors"] and all(
            {"loc", "msg", "type"} <= set(e) for e in problem["errors"]
        )
    assert head(container) == before


def test_invalid_json_and_missing_body(client, container, merchant_key):
    before = head(container)
    headers = {**auth(merchant_key, new_key()), "Content-Type": "application/json"}
    assert_problem(
        client.post("/v1/deposits", content=b'{"wallet_id": ', headers=headers),
        422,
        "validation-error",
    )
    assert_problem(
        client.post("/v1/deposits", headers=auth(merchant_key, new_key())), 422, "validation-error"
    )
    assert head(container) == before


# ---- not found ------------------------------------------------------------------------


def test_unknown_wallets_are_not_found(client, container, merchant_key, wallets):
    a, _ = wallets
    before = head(container)
    cases = [
        ("/v1/deposits", {"wallet_id": UNKNOWN, "amount": "1.00", "currency": "USD"}),
        ("/v1/withdrawals", {"wallet_id": UNKNOWN, "amount": "1.00", "currency": "USD"}),
        ("/v1/transfers", transfer_body(a, UNKNOWN, "1.00")),
        ("/v1/transfers", transfer_body(UNKNOWN, a, "1.00")),
        ("/v1/wallets/" + UNKNOWN + "/freeze", None),
    ]
    for path, body in cases:
        assert_problem(post(client, path, merchant_key, body), 404, "not-found")
    assert head(container) == before
    assert state(container, a) == (10000, 0, "active")


def test_a_transfer_id_is_not_a_wallet(client, container, merchant_key, wallets):
    a, b = wallets
    tid = created(post(client, "/v1/transfers", merchant_key, transfer_body(a, b, "1.00")))[
        "transfer"
    ]["id"]
    before = head(container)
    assert_problem(post(client, f"/v1/wallets/{tid}/freeze", merchant_key), 404, "not-found")
    r = post(
        client,
        "/v1/deposits",
        merchant_key,
        {"wallet_id": tid, "amount": "1.00", "currency": "USD"},
    )
    assert_problem(r, 404, "not-found")
    assert head(container) == before


# ---- authentication and authorisation ---------------------------------------------------


def test_unauthorized(client, container, merchant_key):
    before = head(container)
    for headers in (
        {},
        {"Authorization": "Bearer lk_not-a-real-key"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "bearer"},
        {"Authorization": merchant_key},  # the key without the scheme
    ):
        for path, body in (
            ("/v1/wallets", {"currency": "USD"}),
            ("/v1/deposits", {"wallet_id": UNKNOWN, "amount": "1.00", "currency": "USD"}),
            ("/v1/transfers/batch", {"transfers": []}),
            (f"/v1/transfers/{UNKNOWN}/void", None),
        ):
            r = client.post(path, json=body, headers={**headers, "Idempotency-Key": new_key()})
            assert_problem(r, 401, "unauthorized")
    assert head(container) == before


@pytest.mark.parametrize("role", ["auditor", "analyst"])
def test_read_only_roles_may_not_write(client, container, merchant_key, wallets, role):
    a, b = wallets
    key = container.api_keys.create("acme", role)
    before = head(container)
    for path, body in (
        ("/v1/wallets", {"currency": "USD"}),
        (f"/v1/wallets/{a}/freeze", None),
        ("/v1/deposits", {"wallet_id": a, "amount": "1.00", "currency": "USD"}),
        ("/v1/withdrawals", {"wallet_id": a, "amount": "1.00", "currency": "USD"}),
        ("/v1/transfers", transfer_body(a, b, "1.00")),
        ("/v1/transfers/batch", {"transfers": [transfer_body(a, b, "1.00")]}),
    ):
        assert_problem(post(client, path, key, body), 403, "forbidden")
    assert head(container) == before
    assert state(container, a) == (10000, 0, "active")


# ---- merchant scoping ---------------------------------------------------------------------


def test_merchants_cannot_touch_each_others_money(
    client, container, merchant_key, other_merchant_key, wallets
):
    a, b = wallets
    pending = created(
        post(client, "/v1/transfers", merchant_key, transfer_body(a, b, "10.00", pending=True))
    )
    tid = pending["transfer"]["id"]
    g = funded_wallet(client, other_merchant_key, "50.00")
    before = head(container)
    globex = other_merchant_key
    for path, body in (
        (f"/v1/wallets/{a}/freeze", None),
        (f"/v1/wallets/{a}/close", None),
        ("/v1/deposits", {"wallet_id": a, "amount": "1.00", "currency": "USD"}),
        ("/v1/withdrawals", {"wallet_id": a, "amount": "1.00", "currency": "USD"}),
        ("/v1/transfers", transfer_body(a, g, "1.00")),  # from acme's wallet
        ("/v1/transfers", transfer_body(g, a, "1.00")),  # into acme's wallet
        (f"/v1/transfers/{tid}/post", None),
        (f"/v1/transfers/{tid}/void", None),
    ):
        problem = assert_problem(post(client, path, globex, body), 404, "not-found")
        assert "acme" not in problem["detail"]
    r = post(
        client,
        "/v1/transfers/batch",
        globex,
        {"atomic": True, "transfers": [transfer_body(a, g, "1.00")]},
    )
    assert_problem(r, 404, "not-found")
    assert head(container) == before
    assert state(container, a) == (10000, 1000, "active")
    assert state(container, g) == (5000, 0, "active")
    # And acme can still do all of it.
    assert (
        created(post(client, f"/v1/transfers/{tid}/post", merchant_key), 200)["transfer"]["status"]
        == "posted"
    )
    audit_ok(container)


def test_admin_moves_money_across_merchants(
    client, container, merchant_key, other_merchant_key, admin_key
):
    a = funded_wallet(client, merchant_key, "10.00")
    g = open_wallet(client, other_merchant_key)
    body = created(post(client, "/v1/transfers", admin_key, transfer_body(a, g, "4.00")))
    assert body["transfer"]["status"] == "posted"
    assert state(container, a)[0] == 600 and state(container, g)[0] == 400
    # A merchant cannot move money into another merchant's wallet, even from its own.
    assert_problem(
        post(client, "/v1/transfers", merchant_key, transfer_body(a, g, "1.00")), 404, "not-found"
    )
    audit_ok(container)


# ---- idempotency-key errors ------------------------------------------------------------------


def test_idempotency_key_missing(client, container, merchant_key, wallets):
    a, _ = wallets
    before = head(container)
    for headers in (
        auth(merchant_key),
        {**auth(merchant_key), "Idempotency-Key": ""},
        {**auth(merchant_key), "Idempotency-Key": "  "},
    ):
        r = client.post(
            "/v1/deposits",
            json={"wallet_id": a, "amount": "1.00", "currency": "USD"},
            headers=headers,
        )
        assert_problem(r, 400, "idempotency-key-missing")
    r = client.post(f"/v1/wallets/{a}/freeze", headers=auth(merchant_key))
    assert_problem(r, 400, "idempotency-key-missing")
    assert head(container) == before


def test_idempotency_key_too_long(client, container, merchant_key, wallets):
    a, _ = wallets
    before = head(container)
    r = post(
        client,
        "/v1/deposits",
        merchant_key,
        {"wallet_id": a, "amount": "1.00", "currency": "USD"},
        idem="k" * 256,
    )
    assert_problem(r, 400, "validation-error")
    r = post(
        client,
        "/v1/deposits",
        merchant_key,
        {"wallet_id": a, "amount": "1.00", "currency": "USD"},
        idem="k" * 255,
    )
    created(r)
    assert head(container) > before


def test_idempotency_key_reused_with_another_body_or_endpoint(
    client, container, merchant_key, wallets
):
    a, b = wallets
    key = new_key()
    first = created(
        post(
            client,
            "/v1/deposits",
            merchant_key,
            {"wallet_id": a, "amount": "1.00", "currency": "USD"},
            idem=key,
        )
    )
    before = head(container)
    r = post(
        client,
        "/v1/deposits",
        merchant_key,
        {"wallet_id": a, "amount": "2.00", "currency": "USD"},
        idem=key,
    )
    assert_problem(r, 422, "idempotency-key-reused")
    r = post(
        client,
        "/v1/withdrawals",
        merchant_key,
        {"wallet_id": a, "amount": "1.00", "currency": "USD"},
        idem=key,
    )
    assert_problem(r, 422, "idempotency-key-reused")
    r = post(client, f"/v1/wallets/{a}/freeze", merchant_key, idem=key)
    assert_problem(r, 422, "idempotency-key-reused")
    assert head(container) == before
    assert state(container, a) == (10100, 0, "active")
    # The original request still replays.
    r = post(
        client,
        "/v1/deposits",
        merchant_key,
        {"wallet_id": a, "amount": "1.00", "currency": "USD"},
        idem=key,
    )
    assert r.status_code == 201 and r.json() == first and r.headers["idempotent-replayed"] == "true"


def test_idempotency_key_in_use(live_server, container, merchant_key, wallets):
    """A duplicate arriving while the first request is still being written: 409."""
    a, b = wallets
    body = transfer_body(a, b, "5.00")
    key = new_key()
    blocker = psycopg.connect(container.db.conninfo)
    try:
        # Hold the event table's write lock: the first request stays in flight.
        blocker.execute("LOCK TABLE ledger_events IN EXCLUSIVE MODE")
        results: dict[str, httpx.Response] = {}

        def first() -> None:
            results["first"] = httpx.post(
                f"{live_server}/v1/transfers",
                json=body,
                headers=auth(merchant_key, key),
                timeout=30,
            )

        thread = threading.Thread(target=first)
        thread.start()
        _wait_for_lock_waiter(container)
        dup = httpx.post(
            f"{live_server}/v1/transfers", json=body, headers=auth(merchant_key, key), timeout=30
        )
        assert_problem(dup, 409, "idempotency-key-in-use")
        other = httpx.post(
            f"{live_server}/v1/transfers",
            json=transfer_body(a, b, "6.00"),
            headers=auth(merchant_key, key),
            timeout=30,
        )
        assert_problem(other, 409, "idempotency-key-in-use")
        blocker.rollback()
        thread.join(timeout=30)
    finally:
        blocker.close()
    done = results["first"]
    assert done.status_code == 201, done.text
    # Now that it is done, the duplicate replays.
    again = httpx.post(
        f"{live_server}/v1/transfers", json=body, headers=auth(merchant_key, key), timeout=30
    )
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == done.json()
    assert state(container, a) == (9500, 0, "active") and state(container, b) == (500, 0, "active")
    audit_ok(container)


def _wait_for_lock_waiter(container, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    with psycopg.connect(container.db.conninfo, autocommit=True) as conn:
        while True:
            (waiting,) = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'ledger_events'::regclass"
            ).fetchone()
            if waiting:
                return
            assert time.monotonic() < deadline, "the first request never reached the event store"
            time.sleep(0.01)


# ---- body size -------------------------------------------------------------------------------


def test_body_over_one_mib_is_refused(client, container, merchant_key, wallets):
    a, _ = wallets
    before = head(container)
    big = {"wallet_id": a, "amount": "1.00", "currency": "USD", "metadata": {"x": "y" * (1 << 20)}}
    r = post(client, "/v1/deposits", merchant_key, big)
    body = assert_problem(r, 413, "payload-too-large")
    assert "1048576" in body["detail"]
    r = post(
        client, "/v1/wallets", merchant_key, {"currency": "USD", "metadata": {"x": "y" * (1 << 20)}}
    )
    assert_problem(r, 413, "payload-too-large")
    assert head(container) == before


def test_batch_body_limit_is_larger_but_finite(client, container, merchant_key, wallets):
    a, b = wallets
    before = head(container)
    item = transfer_body(a, b, "0.01", metadata={"note": "n" * 500})
    r = post(client, "/v1/transfers/batch", merchant_key, {"transfers": [item] * 20000})
    assert_problem(r, 413, "payload-too-large")
    assert head(container) == before


def test_chunked_body_over_the_limit_is_refused(live_server, container, merchant_key, wallets):
    """Without a Content-Length the limit is enforced while the body streams in."""
    a, _ = wallets
    before = head(container)
    chunk = b" " * 65536

    async def body() -> AsyncIterator[bytes]:
        yield b'{"wallet_id": "' + a.encode() + b'", "amount": "1.00", "currency": "USD"'
        for _ in range(20):  # 1.25 MiB of whitespace
            yield chunk
        yield b"}"

    async def send() -> httpx.Response:
        async with httpx.AsyncClient(base_url=live_server, timeout=30) as http:
            return await http.post(
                "/v1/deposits",
                content=body(),
                headers={**auth(merchant_key, new_key()), "Content-Type": "application/json"},
            )

    r = asyncio.run(send())
    assert "content-length" not in r.request.headers
    assert_problem(r, 413, "payload-too-large")
    assert head(container) == before

"""The GraphQL payment fields on real read models: scoping, a payment with its refunds,
dispute and timeline in order, pagination and filters, pay-outs, disputes, and the
providers' health through a fake ``ProviderHealthPort``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from infrastructure.payment_read_queries import PgPaymentReadQueries
from infrastructure.projection_runner import positions
from infrastructure.read_queries import PgReadQueries
from read_api.payment_ports import ProviderHealthRow
from read_api.payment_types import PAYOUTS_CURSOR, position_cursor
from read_api.router import create_graphql_router
from tests.conftest import auth, wait_for_projections
from tests.integration.payment_support import (
    PROVIDER,
    Books,
    captured_payment,
    expired_authorization,
    full_story,
)

pytestmark = pytest.mark.integration


@dataclass
class FakeProviders:
    """``ProviderHealthPort`` over a list, counting calls."""

    rows: list[ProviderHealthRow] = field(default_factory=list)
    calls: int = 0

    def providers(self) -> list[ProviderHealthRow]:
        self.calls += 1
        return list(self.rows)


@pytest.fixture
def providers():
    return FakeProviders(
        [
            ProviderHealthRow("zenith", "healthy", "closed", 0.995, 180.5, 1200),
            ProviderHealthRow("ramp", "down", "open", 0.2, None, 15),
        ]
    )


@pytest.fixture
def gql_client(container, providers):
    """The read router as the composition root will wire it, the health port included."""
    app = FastAPI()
    app.include_router(
        create_graphql_router(
            PgReadQueries(container.pool),
            container.api_keys.authenticate,
            min_position_timeout_s=0.3,
            payments=PgPaymentReadQueries(container.pool),
            providers=providers,
        ),
        prefix="/graphql",
    )
    with TestClient(app) as c:
        yield c


def gql(client, key, query, variables=None, min_position=None):
    headers = auth(key)
    if min_position is not None:
        headers["Ledger-Min-Position"] = str(min_position)
    r = client.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
    )
    assert r.status_code == 200, r.text
    return r.json()


def data(body):
    assert "errors" not in body, body
    return body["data"]


def problem(body):
    return body["errors"][0]["extensions"]["type"]


def head(container):
    return positions(container.pool)[1]


def caught_up(container):
    """Wait for the service's runner (started by the ``client`` fixture) to reach the head."""
    wait_for_projections(container, head(container))


PAYMENT_Q = """query($id: ID!, $first: Int, $after: String) {
  payment(id: $id) {
    id merchantId walletId status method captureMethod provider providerRef currency
    amount { amount currency } authorizedAmount { amount } capturedAmount { amount }
    releasedAmount { amount } refundedAmount { amount } fees { amount }
    attempts lastAttemptOutcome outcomeUnknown failureReason cancelReason
    authorizationExpiresAt metadata version position
    pendingOperations { id kind amount { amount } }
    dispute { id paymentId amount { amount currency } status }
    refunds { id amount { amount } status code reason requestedAt }
    timeline(first: $first, after: $after) {
      edges { cursor node {
        position type attemptNumber provider operation outcome latencyMs decision code detail
        providerEventId reference amount { amount currency } fee { amount } transferId
        transferKind debitWalletId creditWalletId correlationId causationId
      } }
      pageInfo { hasNextPage endCursor }
    }
  }
}"""


def test_a_payment_with_refunds_dispute_and_timeline(container, client, merchant_key):
    books = Books(container.app)
    payment = full_story(books)
    body = gql(client, merchant_key, PAYMENT_Q, {"id": str(payment.id)}, head(container))
    p = data(body)["payment"]
    assert p["id"] == str(payment.id) and p["merchantId"] == "acme"
    assert p["walletId"] == str(books.merchant.id)
    assert (p["status"], p["provider"], p["providerRef"]) == ("won", PROVIDER, "zen_1")
    assert p["amount"] == {"amount": "100.00", "currency": "USD"}
    assert p["capturedAmount"]["amount"] == "100.00"
    assert p["refundedAmount"]["amount"] == "25.00"
    assert p["fees"]["amount"] == "3.00"
    assert (p["attempts"], p["lastAttemptOutcome"], p["outcomeUnknown"]) == (2, "captured", False)
    assert p["pendingOperations"] == [] and p["metadata"] == {"order": "o-1"}
    assert p["dispute"] == {
        "id": "dp_1",
        "paymentId": str(payment.id),
        "amount": {"amount": "30.00", "currency": "USD"},
        "status": "won",
    }
    refunds = [(r["id"], r["amount"]["amount"], r["status"], r["code"]) for r in p["refunds"]]
    assert refunds == [
        ("r1", "20.00", "succeeded", None),
        ("r2", "10.00", "failed", "insufficient"),
        ("r3", "5.00", "succeeded", None),
    ]
    assert p["refunds"][2]["requestedAt"] is None

    entries = [e["node"] for e in p["timeline"]["edges"]]
    assert not p["timeline"]["pageInfo"]["hasNextPage"]
    assert [int(e["position"]) for e in entries] == sorted(int(e["position"]) for e in entries)
    assert [e["type"] for e in entries][:7] == [
        "Payment.Created",
        "Payment.AttemptStarted",
        "Payment.ProviderCalled",
        "Payment.AttemptErrored",
        "Payment.AttemptStarted",
        "Payment.ProviderCalled",
        "Payment.Captured",
    ]
    assert entries[2]["latencyMs"] == 80.0 and entries[2]["code"] == "503"
    assert entries[5]["decision"] == "failover: ramp breaker open"
    capture = entries[7]
    assert capture["type"] == "Transfer.Created" and capture["transferKind"] == "payment_capture"
    assert capture["amount"] == {"amount": "97.00", "currency": "USD"}
    assert capture["creditWalletId"] == str(books.merchant.id)
    assert capture["debitWalletId"] == str(books.accounts.clearing.id)
    assert entries[6]["fee"] == {"amount": "3.00"}
    assert {e["type"] for e in entries} >= {"Transfer.Posted", "Transfer.Voided"}

    # The timeline pages in order, each entry once.
    seen, after = [], None
    while True:
        page = data(
            gql(
                client, merchant_key, PAYMENT_Q, {"id": str(payment.id), "first": 4, "after": after}
            )
        )["payment"]["timeline"]
        seen += [e["node"]["position"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == [e["position"] for e in entries]


def test_merchants_see_only_their_own_admins_see_all(
    container, client, merchant_key, other_merchant_key, admin_key
):
    acme = Books(container.app)
    globex = Books(container.app, "globex", share=acme)
    mine = captured_payment(acme)
    theirs = captured_payment(globex, "7.00")
    their_payout = globex.new_payout("1.00", paid=True)
    pos = head(container)

    hidden = gql(client, merchant_key, PAYMENT_Q, {"id": str(theirs.id)}, pos)
    assert hidden["data"]["payment"] is None and problem(hidden) == "/problems/not-found"
    hidden = gql(client, merchant_key, "query($id: ID!) { payout(id: $id) { id } }",
                 {"id": str(their_payout.id)})  # fmt: skip
    assert hidden["data"]["payout"] is None and problem(hidden) == "/problems/not-found"

    listing = "{ payments(first: 50) { edges { node { id merchantId } } } payouts { edges { node { id } } } }"
    own = data(gql(client, merchant_key, listing))
    assert [e["node"]["id"] for e in own["payments"]["edges"]] == [str(mine.id)]
    assert own["payouts"]["edges"] == []
    other = data(gql(client, other_merchant_key, listing))
    assert [e["node"]["id"] for e in other["payments"]["edges"]] == [str(theirs.id)]
    assert [e["node"]["id"] for e in other["payouts"]["edges"]] == [str(their_payout.id)]
    admin = data(gql(client, admin_key, listing))
    assert {e["node"]["id"] for e in admin["payments"]["edges"]} == {str(mine.id), str(theirs.id)}
    seen_by_admin = data(gql(client, admin_key, PAYMENT_Q, {"id": str(theirs.id)}))
    assert seen_by_admin["payment"]["merchantId"] == "globex"

    anonymous = client.post("/graphql", json={"query": listing})
    assert problem(anonymous.json()) == "/problems/unauthorized"
    bad = gql(client, merchant_key, PAYMENT_Q, {"id": "nope"})
    assert problem(bad) == "/problems/validation-error"


def test_payments_pagination_and_filters(container, client, merchant_key):
    books = Books(container.app)
    made = [books.new_payment(f"{n}.00") for n in range(1, 8)]
    cut = datetime.now(UTC)
    upi = books.new_payment("9.00", method="upi")
    captured = captured_payment(books, "10.00")
    made += [upi, captured]
    caught_up(container)
    q = """query($f: PaymentFilter, $a: String) {
      payments(filter: $f, first: 3, after: $a) {
        edges { cursor node { id status method createdAt } }
        pageInfo { hasNextPage endCursor hasPreviousPage startCursor }
      }
    }"""

    def walk(where):
        seen, after = [], None
        while True:
            page = data(gql(client, merchant_key, q, {"f": where, "a": after}))["payments"]
            assert len(page["edges"]) <= 3 and page["pageInfo"]["hasPreviousPage"] is False
            seen += [e["node"]["id"] for e in page["edges"]]
            if not page["pageInfo"]["hasNextPage"]:
                return seen
            after = page["pageInfo"]["endCursor"]

    assert walk(None) == [str(p.id) for p in made]  # creation order, each once
    assert walk({"status": "captured"}) == [str(captured.id)]
    assert walk({"method": "upi"}) == [str(upi.id)]
    assert walk({"provider": PROVIDER, "currency": "USD"}) == [str(captured.id)]
    assert walk({"createdAfter": cut.isoformat()}) == [str(upi.id), str(captured.id)]
    assert walk({"createdBefore": cut.isoformat()}) == [str(p.id) for p in made[:7]]
    assert walk({"currency": "EUR"}) == []

    for where, expected in [
        ({"status": "nope"}, "/problems/validation-error"),
        ({"method": "cash"}, "/problems/validation-error"),
        ({"currency": "XXX"}, "/problems/unknown-currency"),
        ({"createdAfter": "2024-01-01T00:00:00"}, "/problems/validation-error"),
    ]:
        assert problem(gql(client, merchant_key, q, {"f": where})) == expected, where
    payout_cursor = position_cursor(PAYOUTS_CURSOR, 5)  # another connection's cursor
    for cursor in ("bm9wZQ", payout_cursor, "!!"):
        assert problem(gql(client, merchant_key, q, {"a": cursor})) == "/problems/validation-error"


def test_disputes_and_payouts(container, client, merchant_key):
    books = Books(container.app)
    won = full_story(books)
    open_ = captured_payment(books, "40.00")
    books.update(open_, "dispute_opened", provider_event_id="e-open", dispute_id="dp_2")
    captured_payment(books, "1.00")  # no dispute
    paid = books.new_payout("12.00", paid=True, fee=150)
    pending = books.new_payout("3.00", paid=None)
    caught_up(container)

    q = """query($s: String) { disputes(status: $s) { edges { node { id status
      dispute { id status amount { amount } } } } } }"""
    every = data(gql(client, merchant_key, q))["disputes"]["edges"]
    assert [e["node"]["id"] for e in every] == [str(won.id), str(open_.id)]
    opened = data(gql(client, merchant_key, q, {"s": "open"}))["disputes"]["edges"]
    assert [e["node"]["dispute"] for e in opened] == [
        {"id": "dp_2", "status": "open", "amount": {"amount": "40.00"}}
    ]
    assert problem(gql(client, merchant_key, q, {"s": "closed"})) == "/problems/validation-error"

    payout_q = """query($id: ID!) { payout(id: $id) { id status amount { amount currency }
      fee { amount } provider providerRef calls lastCallOutcome transferId
      destination { accountNumberLast4 bankCode accountName }
      timeline { edges { node { type transferKind outcome amount { amount } } } } } }"""
    p = data(gql(client, merchant_key, payout_q, {"id": str(paid.id)}))["payout"]
    assert (p["status"], p["amount"], p["fee"]) == (
        "paid",
        {"amount": "12.00", "currency": "USD"},
        {"amount": "1.50"},
    )
    assert p["transferId"] == paid.transfer_id and p["providerRef"] == "ref-1"
    assert p["destination"] == {
        "accountNumberLast4": "6789",
        "bankCode": "058",
        "accountName": "Acme Ltd",
    }
    assert [e["node"]["type"] for e in p["timeline"]["edges"]] == [
        "Payout.Created",
        "Transfer.Created",
        "Payout.ProviderCalled",
        "Payout.Paid",
        "Transfer.Posted",
        "Transfer.Created",
    ]
    listed = data(
        gql(
            client,
            merchant_key,
            '{ payouts(filter: {status: "processing"}) { edges { node { id } } } }',
        )
    )["payouts"]["edges"]
    assert [e["node"]["id"] for e in listed] == [str(pending.id)]


def test_expiring_authorization_reads_back(container, client, merchant_key):
    books = Books(container.app)
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    payment = expired_authorization(books, expires)
    q = "query($id: ID!) { payment(id: $id) { status captureMethod authorizationExpiresAt authorizedAmount { amount } } }"
    p = data(gql(client, merchant_key, q, {"id": str(payment.id)}, head(container)))["payment"]
    assert (p["status"], p["captureMethod"]) == ("authorized", "manual")
    assert datetime.fromisoformat(p["authorizationExpiresAt"]) == expires
    assert p["authorizedAmount"]["amount"] == "50.00"


def test_min_position_waits_for_the_payment_projections(container, gql_client, merchant_key):
    # gql_client has no background runner: the projections move only when run here.
    books = Books(container.app)
    payment = books.new_payment("1.00")
    pos = head(container)
    container.runner.run_until_caught_up()
    with container.pool.connection() as conn:  # as if the refunds projection lagged
        conn.execute("UPDATE projection_tracking SET position = 0 WHERE name = 'refunds'")
    query = "{ payments { edges { node { id } } } }"
    body = gql(gql_client, merchant_key, query, min_position=pos)
    assert body["data"] is None and problem(body) == "/problems/position-not-reached"
    container.runner.run_until_caught_up()
    body = gql(gql_client, merchant_key, query, min_position=pos)
    assert [e["node"]["id"] for e in data(body)["payments"]["edges"]] == [str(payment.id)]


def test_providers_through_the_health_port(gql_client, client, merchant_key, admin_key, providers):
    q = "{ providers { name health breakerState successRate p99LatencyMs callsInWindow } }"
    for key in (merchant_key, admin_key):
        assert data(gql(gql_client, key, q))["providers"] == [
            {
                "name": "zenith",
                "health": "healthy",
                "breakerState": "closed",
                "successRate": 0.995,
                "p99LatencyMs": 180.5,
                "callsInWindow": 1200,
            },
            {
                "name": "ramp",
                "health": "down",
                "breakerState": "open",
                "successRate": 0.2,
                "p99LatencyMs": None,
                "callsInWindow": 15,
            },
        ]
    assert providers.calls == 2
    anonymous = gql_client.post("/graphql", json={"query": q})
    assert problem(anonymous.json()) == "/problems/unauthorized"
    assert providers.calls == 2
    # The service as wired today has no health port: an empty list, not an error.
    assert data(gql(client, merchant_key, q))["providers"] == []

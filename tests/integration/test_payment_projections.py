"""The payment projections on real PostgreSQL: payments, refunds, pay-outs and the timeline
(ledger postings included) from events made through the domain; exactly once under
competing runners and re-runs; a rebuild from position 0 gives the same rows; the
queries the payment worker relies on."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from domain import payment_ledger as postings
from infrastructure import payment_queries as q
from infrastructure.payment_readmodels import PAYMENT_NEEDS_WORK
from infrastructure.projection_runner import ProjectionRunner, live_targets, positions, rebuild
from tests.integration.payment_support import (
    PROVIDER,
    Books,
    captured_payment,
    expired_authorization,
    full_story,
)

pytestmark = pytest.mark.integration

PAYMENT_TABLES = {
    "payments": "SELECT * FROM rm_payments ORDER BY payment_id",
    "refunds": "SELECT * FROM rm_refunds ORDER BY payment_id, refund_id",
    "payouts": "SELECT * FROM rm_payouts ORDER BY payout_id",
    "payment_timeline": "SELECT * FROM rm_payment_timeline ORDER BY owner_id, position",
}


def rows(container, query, params=()):
    with container.pool.connection() as conn:
        return conn.execute(query, params).fetchall()


def one(container, query, params=()):
    with container.pool.connection() as conn:
        cur = conn.execute(query, params)
        names = [d.name for d in cur.description]
        found = cur.fetchall()
    assert len(found) == 1, found
    return dict(zip(names, found[0], strict=True))


def snapshot(container):
    return {name: rows(container, query) for name, query in PAYMENT_TABLES.items()}


def project(container):
    container.runner.run_until_caught_up()
    tracked, head = positions(container.pool)
    assert all(p == head for p in tracked.values()), tracked


def timeline(container, owner_id):
    return rows(
        container,
        "SELECT position, event_type, attempt_number, provider, operation, outcome, latency_ms,"
        " decision, code, detail, provider_event_id, reference, amount, fee, transfer_id,"
        " transfer_kind, debit_account_id, credit_account_id, correlation_id, causation_id"
        " FROM rm_payment_timeline WHERE owner_id = %s ORDER BY position",
        (owner_id,),
    )


def test_a_payment_its_refunds_dispute_and_timeline(container):
    books = Books(container.app)
    payment = full_story(books)
    project(container)

    row = one(container, "SELECT * FROM rm_payments WHERE payment_id = %s", (payment.id,))
    assert row["merchant_id"] == "acme" and row["wallet_id"] == str(books.merchant.id)
    assert (row["amount"], row["currency"], row["method"], row["capture_method"]) == (
        10000,
        "USD",
        "card",
        "automatic",
    )
    assert (row["status"], row["provider"], row["provider_ref"]) == ("won", PROVIDER, "zen_1")
    assert (row["authorized_amount"], row["captured_amount"], row["released_amount"]) == (
        10000,
        10000,
        0,
    )
    assert (row["refunded_amount"], row["fees"]) == (2500, 300)
    assert (row["dispute_id"], row["disputed_amount"], row["dispute_status"]) == (
        "dp_1",
        3000,
        "won",
    )
    assert (row["attempts"], row["last_attempt_outcome"]) == (2, "captured")
    assert row["operations"] == {}
    assert row["metadata"] == {"order": "o-1"}
    assert row["version"] == payment.version
    # The row says what the aggregate says.
    assert row["status"] == payment.status and row["refunded_amount"] == payment.refunded_amount

    refunds = rows(
        container,
        "SELECT refund_id, amount, status, code, reason, requested_at IS NOT NULL"
        " FROM rm_refunds WHERE payment_id = %s ORDER BY created_position",
        (payment.id,),
    )
    assert refunds == [
        ("r1", 2000, "succeeded", None, None, True),
        ("r2", 1000, "failed", "insufficient", "no funds", True),
        ("r3", 500, "succeeded", None, None, False),  # reported by the provider unasked
    ]

    entries = timeline(container, payment.id)
    positions_ = [e[0] for e in entries]
    assert positions_ == sorted(positions_) and len(set(positions_)) == len(positions_)
    kinds = [(e[1], e[15]) for e in entries]
    assert kinds == [
        ("Payment.Created", None),
        ("Payment.AttemptStarted", None),
        ("Payment.ProviderCalled", None),
        ("Payment.AttemptErrored", None),
        ("Payment.AttemptStarted", None),
        ("Payment.ProviderCalled", None),
        ("Payment.Captured", None),
        ("Transfer.Created", postings.PAYMENT_CAPTURE),
        ("Transfer.Created", postings.PAYMENT_FEE),
        ("Payment.OperationRequested", None),
        ("Transfer.Created", postings.REFUND),  # the hold
        ("Payment.Refunded", None),
        ("Transfer.Posted", postings.REFUND),
        ("Payment.OperationRequested", None),
        ("Transfer.Created", postings.REFUND),
        ("Payment.OperationFailed", None),
        ("Transfer.Voided", postings.REFUND),
        ("Payment.Refunded", None),
        ("Transfer.Created", postings.PROVIDER_REFUND),
        ("Payment.DisputeOpened", None),
        ("Transfer.Created", postings.DISPUTE),
        ("Payment.DisputeWon", None),
        ("Transfer.Created", postings.DISPUTE_WON),
    ]
    by_type = {}
    for e in entries:
        by_type.setdefault(e[1], []).append(e)
    failed_call, ok_call = by_type["Payment.ProviderCalled"]
    assert failed_call[2:10] == (1, "ramp", "authorize", "error", 80.0, None, "503", "unavailable")
    assert ok_call[2:8] == (2, PROVIDER, "authorize", "ok", 12.5, "failover: ramp breaker open")
    assert by_type["Payment.AttemptErrored"][0][5] == "error"
    captured = by_type["Payment.Captured"][0]
    assert (captured[10], captured[11], captured[12], captured[13]) == (
        f"{PROVIDER}:e-cap",
        "zen_1",
        10000,
        300,
    )
    capture_posting = next(e for e in entries if e[15] == postings.PAYMENT_CAPTURE)
    assert capture_posting[12] == 9700  # net of the fee
    assert str(capture_posting[16]) == str(books.accounts.clearing.id)
    assert str(capture_posting[17]) == str(books.merchant.id)
    hold, posted = [e for e in entries if e[15] == postings.REFUND][:2]
    assert hold[14] == posted[14] and (hold[5], posted[5]) == ("pending", "posted")
    assert (posted[12], str(posted[16]), str(posted[17])) == (
        2000,
        str(books.merchant.id),
        str(books.accounts.clearing.id),
    )
    voided = by_type["Transfer.Voided"][0]
    assert (voided[5], voided[12]) == ("voided", 1000)  # the whole hold released
    assert all(e[18].startswith("corr-") and e[19].startswith("cause-") for e in entries)


def test_payouts_and_their_timeline(container):
    books = Books(container.app)
    captured_payment(books, "500.00", fee=0)
    paid = books.new_payout("120.00", paid=True, fee=150)
    failed = books.new_payout("30.00", paid=False)
    open_ = books.new_payout("10.00", paid=None)
    project(container)

    got = {
        str(r[0]): r[1:]
        for r in rows(
            container,
            "SELECT payout_id, status, amount, fee, calls, last_call_outcome, failure_reason,"
            " provider_ref, destination FROM rm_payouts",
        )
    }
    destination = {"account_number_last4": "6789", "bank_code": "058", "account_name": "Acme Ltd"}
    assert got == {
        str(paid.id): ("paid", 12000, 150, 1, "pending", None, "ref-1", destination),
        str(failed.id): ("failed", 3000, 0, 1, "pending", "account closed", None, destination),
        str(open_.id): ("processing", 1000, 0, 1, "pending", None, None, destination),
    }
    kinds = [(e[1], e[15], e[5]) for e in timeline(container, paid.id)]
    assert kinds == [
        ("Payout.Created", None, None),
        ("Transfer.Created", postings.PAYOUT, "pending"),
        ("Payout.ProviderCalled", None, "pending"),
        ("Payout.Paid", None, None),
        ("Transfer.Posted", postings.PAYOUT, "posted"),
        ("Transfer.Created", postings.PAYOUT_FEE, "posted"),
    ]
    assert [e[1] for e in timeline(container, failed.id)][-1] == "Transfer.Voided"
    assert q.payouts_needing_work(container.pool, timedelta(0), 10) == [open_.id]
    assert q.payouts_needing_work(container.pool, timedelta(hours=1), 10) == []


def test_the_queries_of_the_payment_worker(container):
    books = Books(container.app)
    now = datetime.now(UTC)
    new = books.new_payment("1.00")
    unknown = books.new_payment("2.00")
    books.step(unknown, lambda c: unknown.start_attempt(PROVIDER, c))
    errored = books.new_payment("3.00")
    books.step(errored, lambda c: errored.start_attempt(PROVIDER, c))
    books.step(errored, lambda c: errored.record_attempt_error("refused", c))
    done = captured_payment(books, "4.00", fee=0)
    refunding = captured_payment(books, "5.00", fee=0)
    books.step(refunding, lambda c: refunding.request_refund("rf", books.money("1.00"), c))
    expired = expired_authorization(books, now - timedelta(minutes=1))
    later = expired_authorization(books, now + timedelta(days=1))
    capturing = expired_authorization(books, now + timedelta(days=2))
    books.step(capturing, lambda c: capturing.request_capture("cap-1", c))
    project(container)

    soon = datetime.now(UTC) + timedelta(seconds=1)
    due = q.payments_needing_work(container.pool, timedelta(0), 100, now=soon)
    assert set(due) == {new.id, unknown.id, errored.id, refunding.id, capturing.id}
    assert due[0] == new.id  # the longest untouched first
    assert done.id not in due and expired.id not in due and later.id not in due
    assert q.payments_needing_work(container.pool, timedelta(0), 2, now=soon) == due[:2]
    assert q.payments_needing_work(container.pool, timedelta(minutes=5), 100) == []

    assert q.expired_authorizations(container.pool, now, 10) == [expired.id]
    assert q.expired_authorizations(container.pool, now + timedelta(days=3), 10) == [
        expired.id,
        later.id,
        capturing.id,
    ]
    with pytest.raises(ValueError, match="timezone"):
        q.expired_authorizations(container.pool, now.replace(tzinfo=None), 10)

    # Each query walks its partial index.
    with container.pool.connection() as conn:
        conn.execute("SET enable_seqscan = off")
        plans = [
            conn.execute(
                "EXPLAIN SELECT payment_id FROM rm_payments WHERE "
                + PAYMENT_NEEDS_WORK
                + " AND updated_at < now() ORDER BY updated_at LIMIT 5"
            ).fetchall(),
            conn.execute(
                "EXPLAIN SELECT payment_id FROM rm_payments WHERE status = 'authorized'"
                " AND authorization_expires_at <= now() ORDER BY authorization_expires_at LIMIT 5"
            ).fetchall(),
        ]
    for plan in plans:
        text = "\n".join(r[0] for r in plan)
        assert "Index Scan" in text and "Sort" not in text, text

    # A payment moving on leaves the list once the projection has seen it.
    books.update(unknown, "captured", provider_event_id="late-capture")
    project(container)
    due = q.payments_needing_work(
        container.pool, timedelta(0), 100, now=datetime.now(UTC) + timedelta(seconds=1)
    )
    assert unknown.id not in due


def test_each_event_applied_exactly_once_by_competing_runners(container):
    books = Books(container.app)
    other = Books(container.app, "globex", share=books)
    for _ in range(3):
        full_story(books)
        captured_payment(other, "70.00")
    books.new_payout("50.00", paid=True, fee=25)
    # Small batches: a transfer is often created in one batch and posted in the next.
    runners = [
        ProjectionRunner(container.pool, container.app.mapper, live_targets(), batch_size=3)
        for _ in range(2)
    ]
    threads = [threading.Thread(target=r.run_until_caught_up) for r in runners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reference = snapshot(container)
    assert len(reference["payments"]) == 6 and len(reference["refunds"]) == 9
    assert len(reference["payouts"]) == 1
    # Re-running finds nothing to do and changes nothing.
    assert container.runner.run_once() == 0
    container.runner.run_until_caught_up()
    assert snapshot(container) == reference
    # Even rewound (as a crash between the write and the commit cannot, but a botched
    # restore could), the state rows ignore events at or below their own position.
    with container.pool.connection() as conn:
        head = positions(container.pool)[1]
        conn.execute(
            "UPDATE projection_tracking SET position = %s"
            " WHERE name IN ('payments', 'refunds', 'payouts')",
            (head // 2,),
        )
    container.runner.run_until_caught_up()
    assert snapshot(container) == reference


def test_rebuild_from_zero_gives_the_same_rows(container):
    books = Books(container.app)
    other = Books(container.app, "globex", share=books)
    full_story(books)
    captured_payment(other, "70.00")
    books.new_payout("20.00", paid=True, fee=10)
    expired_authorization(books, datetime.now(UTC) + timedelta(days=1))
    project(container)
    before = snapshot(container)
    for name in PAYMENT_TABLES:
        progressed: list[int] = []
        total = rebuild(container.pool, container.app.mapper, name, 7, progressed.append)
        assert total == positions(container.pool)[1] and sum(progressed) == total
    assert snapshot(container) == before
    leftovers = rows(
        container,
        "SELECT name FROM projection_tracking WHERE name LIKE '%%rebuild'",
    )
    assert leftovers == []
    # The rebuilt tables keep their indexes.
    assert len(rows(container, "SELECT 1 FROM pg_indexes WHERE tablename = 'rm_payments'")) == 9

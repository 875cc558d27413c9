"""Scheduled payments end to end on real PostgreSQL: the /v1/scheduled-payments API, the
read model, and the scheduler. Occurrences run exactly once when two schedulers (two
engines on one database, as two processes would be) race; a scheduler back from downtime
follows the catch-up policy; monthly on the 31st is clamped per month."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import RecordConflictError

from commands.model import CommandRequest, OpenWallet
from commands.schedule_commands import CreateSchedule, as_command
from domain.money import Currency, Money
from domain.principal import Principal
from domain.schedule import ScheduledPayment, occurrence_payment_id
from infrastructure.audit import verify
from infrastructure.container import Container, build
from infrastructure.schedule_queries import PgScheduleListing
from infrastructure.scheduler import Scheduler
from tests.conftest import auth, new_key, test_settings, wait_for_projections
from tests.integration.api_support import assert_problem, created, head, open_wallet, post

pytestmark = pytest.mark.integration

ACME = Principal("acme", "merchant")
USD = Currency.of("USD")
PATH = "/v1/scheduled-payments"
VISA = "4242424242424242"


@pytest.fixture
def api(client: Any, container: Container) -> Any:
    """The test client, with the schedules listing wired as the composition root would."""
    client.app.state.scheduled_payments = PgScheduleListing(container.pool)
    return client


def iso(t: datetime) -> str:
    return t.isoformat()


def soon(minutes: int = 10) -> datetime:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).replace(microsecond=0)


def body(wallet: str, **over: Any) -> dict[str, Any]:
    b: dict[str, Any] = {
        "wallet_id": wallet,
        "amount": "12.50",
        "currency": "USD",
        "method": "card",
        "payment_method_token": "tok_visa_4242",
        "frequency": {"type": "interval", "every_seconds": 3600},
        "starts_at": iso(soon()),
        "metadata": {"plan": "gold"},
    }
    b.update(over)
    return b


def create(api: Any, key: str, wallet_id: str, **over: Any) -> dict[str, Any]:
    out: dict[str, Any] = created(post(api, PATH, key, body(wallet_id, **over)))[
        "scheduled_payment"
    ]
    return out


def get(api: Any, key: str, schedule_id: str) -> dict[str, Any]:
    r = api.get(f"{PATH}/{schedule_id}", headers=auth(key))
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()["scheduled_payment"]
    return out


def payment_created_counts(container: Container) -> Counter[str]:
    """How many ``Payment.Created`` events each payment id has in the event store."""
    with container.pool.connection() as conn:
        rows = conn.execute(
            "SELECT originator_id, count(*) FROM ledger_events"
            " WHERE topic LIKE %s GROUP BY originator_id",
            ("%:Payment.Created",),
        ).fetchall()
    return Counter({str(oid): int(n) for oid, n in rows})


def occurrences(container: Container, schedule_id: str) -> list[tuple[str, int]]:
    """The schedule's started and skipped occurrences, in order, as stored."""
    out = []
    for event in container.app.events.get(UUID(schedule_id)):
        if isinstance(event, ScheduledPayment.OccurrenceStarted):
            assert event.payment_id == str(occurrence_payment_id(schedule_id, event.number))
            out.append(("started", event.number))
        elif isinstance(event, ScheduledPayment.OccurrenceSkipped):
            out.append(("skipped", event.number))
    return out


def project(container: Container) -> None:
    container.runner.run_until_caught_up()


# ---- the API ----------------------------------------------------------------------------


def test_create_show_update_cancel_and_list(
    api: Any, container: Container, merchant_key: str, other_merchant_key: str
) -> None:
    wallet = open_wallet(api, merchant_key)
    key = new_key()
    starts = soon(30)
    r = post(api, PATH, merchant_key, body(wallet, starts_at=iso(starts)), idem=key)
    s = created(r)["scheduled_payment"]
    assert s["status"] == "active"
    assert s["amount"] == "12.50" and s["currency"] == "USD" and s["wallet_id"] == wallet
    assert s["merchant_id"] == "acme"
    assert s["next_occurrence"] == 1
    assert s["next_due_at"] == iso(starts)
    assert s["upcoming"][:3] == [iso(starts + timedelta(hours=h)) for h in range(3)]
    assert "payment_method_token" not in s
    # The same request again replays; the same key with another body is refused.
    again = post(api, PATH, merchant_key, body(wallet, starts_at=iso(starts)), idem=key)
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["scheduled_payment"]["id"] == s["id"]
    other = post(api, PATH, merchant_key, body(wallet, amount="1.00"), idem=key)
    assert_problem(other, 422, "idempotency-key-reused")

    assert get(api, merchant_key, s["id"])["id"] == s["id"]
    assert_problem(api.get(f"{PATH}/{s['id']}", headers=auth(other_merchant_key)), 404, "not-found")

    # PUT: only what is sent changes; the same PUT again changes nothing.
    change = {"amount": "20.00", "frequency": {"type": "daily", "at": "09:00"}, "ends_at": None}
    r = api.put(f"{PATH}/{s['id']}", json=change, headers=auth(merchant_key))
    assert r.status_code == 200, r.text
    assert r.json()["changed"] is True
    u = r.json()["scheduled_payment"]
    assert u["amount"] == "20.00" and u["frequency"] == {"type": "daily", "at": "09:00"}
    assert u["metadata"] == {"plan": "gold"} and u["catch_up"] == "latest"
    assert u["next_due_at"].endswith("T09:00:00+00:00")
    r = api.put(f"{PATH}/{s['id']}", json=change, headers=auth(merchant_key))
    assert r.status_code == 200 and r.json()["changed"] is False
    r = api.put(f"{PATH}/{s['id']}", json={"max_occurrences": 3}, headers=auth(merchant_key))
    assert r.json()["scheduled_payment"]["max_occurrences"] == 3
    assert len(r.json()["scheduled_payment"]["upcoming"]) == 3
    r = api.put(f"{PATH}/{s['id']}", json={"max_occurrences": None}, headers=auth(merchant_key))
    assert r.json()["scheduled_payment"]["max_occurrences"] is None
    # With an Idempotency-Key, a PUT's answer is stored and replayed.
    put_key = new_key()
    first = api.put(
        f"{PATH}/{s['id']}", json={"amount": "21.00"}, headers=auth(merchant_key, put_key)
    )
    replay = api.put(
        f"{PATH}/{s['id']}", json={"amount": "21.00"}, headers=auth(merchant_key, put_key)
    )
    assert first.status_code == replay.status_code == 200
    assert replay.headers["idempotent-replayed"] == "true" and replay.json() == first.json()

    second = create(
        api, merchant_key, wallet, frequency={"type": "weekly", "weekday": "friday", "at": "17:30"}
    )
    create(api, other_merchant_key, open_wallet(api, other_merchant_key))

    # DELETE cancels, and is idempotent without a key.
    for _ in range(2):
        r = api.delete(f"{PATH}/{s['id']}", headers=auth(merchant_key))
        assert r.status_code == 200, r.text
        c = r.json()["scheduled_payment"]
        assert c["status"] == "canceled" and c["next_due_at"] is None and c["upcoming"] == []
    assert_problem(
        api.put(f"{PATH}/{s['id']}", json={"amount": "5.00"}, headers=auth(merchant_key)),
        409,
        "schedule-not-active",
    )
    assert_problem(
        api.delete(f"{PATH}/{s['id']}", headers=auth(other_merchant_key)), 404, "not-found"
    )

    # The list reads the read model: the merchant's own schedules, in creation order.
    wait_for_projections(container, head(container))
    r = api.get(PATH, headers=auth(merchant_key))
    assert r.status_code == 200, r.text
    listed = r.json()["scheduled_payments"]
    assert [x["id"] for x in listed] == [s["id"], second["id"]]
    assert listed[0]["status"] == "canceled" and listed[0]["amount"] == "21.00"
    assert listed[1]["status"] == "active" and listed[1]["next_due_at"] == second["next_due_at"]
    assert listed[1]["frequency"] == {"type": "weekly", "weekday": "friday", "at": "17:30"}
    r = api.get(PATH, params={"status": "active"}, headers=auth(merchant_key))
    assert [x["id"] for x in r.json()["scheduled_payments"]] == [second["id"]]
    # Pages: one at a time, then nothing more.
    r = api.get(PATH, params={"limit": 1}, headers=auth(merchant_key))
    page = r.json()
    assert [x["id"] for x in page["scheduled_payments"]] == [s["id"]]
    r = api.get(
        PATH, params={"limit": 1, "cursor": page["next_cursor"]}, headers=auth(merchant_key)
    )
    assert [x["id"] for x in r.json()["scheduled_payments"]] == [second["id"]]
    assert r.json()["next_cursor"] is None
    assert len(api.get(PATH, headers=auth(other_merchant_key)).json()["scheduled_payments"]) == 1


def test_validation_errors_are_problems(
    api: Any, container: Container, merchant_key: str, other_merchant_key: str
) -> None:
    wallet = open_wallet(api, merchant_key)

    def refused(status: int, code: str, **over: Any) -> dict[str, Any]:
        return assert_problem(post(api, PATH, merchant_key, body(wallet, **over)), status, code)

    r = api.post(PATH, json=body(wallet), headers=auth(merchant_key))
    assert_problem(r, 400, "idempotency-key-missing")
    d = refused(422, "invalid-frequency", frequency={"type": "hourly"})
    assert "interval" in d["detail"]
    refused(422, "invalid-frequency", frequency={"type": "interval", "every_seconds": 30})
    refused(422, "invalid-frequency", frequency={"type": "monthly", "day": 32, "at": "09:00"})
    refused(422, "invalid-frequency", frequency={"type": "weekly", "weekday": 0, "at": "09:00"})
    refused(422, "invalid-frequency", frequency={"type": "daily", "at": "25:00"})
    refused(422, "invalid-frequency", frequency={"type": "daily", "at": "09:00", "tz": "CET"})
    refused(422, "validation-error", starts_at="2030-01-01T09:00:00")  # naive
    start = soon(60)
    refused(422, "validation-error", starts_at=iso(start), ends_at=iso(start - timedelta(days=1)))
    refused(422, "validation-error", max_occurrences=0)
    refused(422, "validation-error", catch_up="sometimes")
    refused(422, "validation-error", amount=12.5)
    refused(422, "invalid-amount", amount="0")
    refused(422, "currency-mismatch", currency="EUR")
    refused(422, "validation-error", method="cash")
    # No occurrence between now and the end.
    past = datetime.now(UTC) - timedelta(days=10)
    refused(422, "validation-error", starts_at=iso(past), ends_at=iso(past + timedelta(days=1)))
    # Card numbers, wherever they are, are refused and never echoed.
    d = refused(422, "card-number-rejected", payment_method_token=VISA)
    assert VISA not in d["detail"]
    refused(422, "card-number-rejected", metadata={"note": f"card {VISA}"})
    # Someone else's wallet is absent; an unknown wallet too.
    refused(404, "not-found", wallet_id=open_wallet(api, other_merchant_key))
    refused(404, "not-found", wallet_id=str(uuid.uuid4()))
    # Read-only keys do not write.
    auditor = container.api_keys.create("acme", "auditor")
    assert_problem(post(api, PATH, auditor, body(wallet)), 403, "forbidden")
    s = create(api, merchant_key, wallet)
    assert_problem(api.delete(f"{PATH}/{s['id']}", headers=auth(auditor)), 403, "forbidden")

    unknown = f"{PATH}/{uuid.uuid4()}"
    assert_problem(api.get(unknown, headers=auth(merchant_key)), 404, "not-found")
    assert_problem(api.delete(unknown, headers=auth(merchant_key)), 404, "not-found")
    url = f"{PATH}/{s['id']}"
    h = auth(merchant_key)
    assert_problem(
        api.put(url, json={"currency": "EUR", "amount": "1.00"}, headers=h),
        422,
        "currency-mismatch",
    )
    assert_problem(
        api.put(url, json={"frequency": {"type": "yearly"}}, headers=h), 422, "invalid-frequency"
    )
    assert_problem(api.put(url, json={"nope": 1}, headers=h), 422, "validation-error")
    assert_problem(
        api.put(url, json={"payment_method_token": VISA}, headers=h), 422, "card-number-rejected"
    )
    assert_problem(api.get(PATH, params={"cursor": "bogus"}, headers=h), 422, "validation-error")
    assert_problem(api.get(PATH, params={"merchant_id": "globex"}, headers=h), 403, "forbidden")
    # Nothing refused left a trace: one schedule was made.
    with container.pool.connection() as conn:
        n = conn.execute(
            "SELECT count(*) FROM ledger_events WHERE topic LIKE %s", ("%ScheduledPayment.Created",)
        ).fetchone()[0]
    assert n == 1


# ---- the scheduler -------------------------------------------------------------------------


def _wallet(container: Container) -> UUID:
    out = container.engine.execute(
        CommandRequest(OpenWallet("acme", USD), ACME, str(uuid.uuid4()), str(uuid.uuid4()))
    )
    return UUID(out.body["wallet"]["id"])


def _schedule(container: Container, wallet: UUID, starts_at: datetime, **over: Any) -> str:
    values: dict[str, Any] = {
        "schedule_id": uuid.uuid4(),
        "wallet_id": wallet,
        "amount": Money.parse("9.99", USD),
        "method": "card",
        "payment_method_token": "tok_visa_4242",
        "frequency": {"type": "interval", "every_seconds": 60},
        "starts_at": starts_at,
    }
    values.update(over)
    command = as_command(CreateSchedule(**values))
    out = container.engine.execute(
        CommandRequest(command, ACME, str(uuid.uuid4()), str(uuid.uuid4()))
    )
    assert out.status == 201, out.body
    return str(out.body["scheduled_payment"]["id"])


def test_two_schedulers_racing_run_each_occurrence_exactly_once(container: Container) -> None:
    other = build(test_settings(), db=container.db)
    try:
        wallet = _wallet(container)
        t0 = soon(2).replace(second=0)
        schedules = [
            _schedule(container, wallet, t0, catch_up="all" if i % 2 else "latest")
            for i in range(24)
        ]
        project(container)
        driven: list[tuple[UUID, str]] = []
        lock = threading.Lock()

        def drive(payment_id: UUID, correlation_id: str) -> None:
            with lock:
                driven.append((payment_id, correlation_id))

        schedulers = [
            Scheduler(c.pool, c.engine, interval_s=60, drive=drive) for c in (container, other)
        ]
        answers: list[list[UUID]] = [[], []]

        # First pass, a race forced: B plans occurrence 1 of every schedule and stalls
        # before its save, A runs the same pass and commits, then B's save goes on.
        conflicts: list[BaseException] = []
        stalled, go = threading.Event(), threading.Event()
        recorder = other.app.events.recorder  # where B's writer saves a batch
        real_insert = recorder.insert_events

        def stalled_insert(*args: Any, **kwargs: Any) -> Any:
            if not go.is_set():
                stalled.set()
                go.wait(timeout=30)
            try:
                return real_insert(*args, **kwargs)
            except RecordConflictError as exc:
                conflicts.append(exc)
                raise

        recorder.insert_events = stalled_insert  # type: ignore[method-assign]
        b = threading.Thread(target=lambda: answers[1].extend(schedulers[1].run_once(t0)))
        b.start()
        assert stalled.wait(timeout=30)
        answers[0].extend(schedulers[0].run_once(t0))
        go.set()
        b.join()
        assert conflicts, "B's save did not conflict"
        assert len(answers[0]) == 24 and answers[1] == []  # B re-ran and found nothing due
        project(container)

        # Then free races at growing times: after 3 and 22 missed minutes ("all" runs
        # them in rounds of ten, "latest" only the newest), then one more.
        for now in (
            t0 + timedelta(minutes=3),
            t0 + timedelta(minutes=25, seconds=5),
            t0 + timedelta(minutes=26),
        ):
            barrier = threading.Barrier(2)

            def run(i: int, at: datetime = now) -> None:
                barrier.wait()
                answers[i].extend(schedulers[i].run_once(at))

            threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            project(container)

        counts = payment_created_counts(container)
        assert counts and set(counts.values()) == {1}  # no payment created twice
        expected: set[str] = set()
        for i, sid in enumerate(schedules):
            stored = occurrences(container, sid)
            assert [n for _, n in stored] == list(range(1, 28)), sid  # no gap, no repeat
            started = [n for kind, n in stored if kind == "started"]
            if i % 2:  # all: every occurrence ran
                assert started == list(range(1, 28))
            else:  # latest: the newest at each pass (t0, +3m, +25m, +26m)
                assert started == [1, 4, 26, 27]
            expected |= {str(occurrence_payment_id(sid, n)) for n in started}
        assert set(counts) == expected
        # Each payment was handed to a provider once, by the scheduler that created it.
        ids_a, ids_b = set(answers[0]), set(answers[1])
        assert not ids_a & ids_b
        assert {str(p) for p in ids_a | ids_b} == expected
        assert sorted(str(p) for p, _ in driven) == sorted(expected)
        assert verify(container).ok
    finally:
        other.close()


def test_a_scheduler_back_from_downtime_follows_catch_up_latest(
    api: Any, container: Container, merchant_key: str
) -> None:
    wallet = open_wallet(api, merchant_key)
    t0 = soon(2).replace(second=0)
    s = create(
        api, merchant_key, wallet,
        frequency={"type": "interval", "every_seconds": 600},
        starts_at=iso(t0),
    )  # fmt: skip
    wait_for_projections(container, head(container))
    first = Scheduler(container.pool, container.engine, interval_s=60, drive=None)
    paid = first.run_once(t0 + timedelta(seconds=3))
    assert paid == [occurrence_payment_id(s["id"], 1)]
    # Down for 7 intervals: the restarted scheduler (its own loop, on its clock) runs only
    # the latest overdue occurrence and records the six before it as missed.
    back = t0 + timedelta(minutes=70, seconds=30)
    wait_for_projections(container, head(container))
    restarted = Scheduler(
        container.pool, container.engine, interval_s=0.05, drive=None, clock=lambda: back
    )
    restarted.start()
    try:
        deadline = time.monotonic() + 20
        while get(api, merchant_key, s["id"])["next_occurrence"] != 9:
            assert time.monotonic() < deadline, "the restarted scheduler did not catch up"
            time.sleep(0.05)
    finally:
        restarted.stop()
    assert occurrences(container, s["id"]) == [
        ("started", 1),
        *(("skipped", n) for n in range(2, 8)),
        ("started", 8),
    ]
    view = get(api, merchant_key, s["id"])
    assert view["occurrences"] == {"started": 2, "skipped": 6}
    assert view["next_due_at"] == iso(t0 + timedelta(minutes=80))
    assert view["last_payment_id"] == str(occurrence_payment_id(s["id"], 8))
    counts = payment_created_counts(container)
    assert set(counts) == {str(occurrence_payment_id(s["id"], n)) for n in (1, 8)}
    # Later passes at the same time find nothing to do, however often they run.
    wait_for_projections(container, head(container))
    assert restarted.run_once(back) == []
    wait_for_projections(container, head(container))
    r = api.get(PATH, headers=auth(merchant_key))
    (row,) = r.json()["scheduled_payments"]
    assert row["occurrences"] == {"started": 2, "skipped": 6} and row["next_occurrence"] == 9


def test_monthly_on_the_31st_is_clamped_to_each_months_end(
    api: Any, container: Container, merchant_key: str
) -> None:
    wallet = open_wallet(api, merchant_key)
    s = create(
        api, merchant_key, wallet,
        frequency={"type": "monthly", "day": 31, "at": "09:00"},
        starts_at="2027-01-01T00:00:00Z",
        max_occurrences=14,
    )  # fmt: skip
    months = ["2027-01-31", "2027-02-28", "2027-03-31", "2027-04-30", "2027-05-31"]
    assert s["upcoming"] == [f"{d}T09:00:00+00:00" for d in months]
    scheduler = Scheduler(container.pool, container.engine, interval_s=60, drive=None)
    for day, following in zip(months, months[1:], strict=False):
        wait_for_projections(container, head(container))
        due = datetime.fromisoformat(f"{day}T09:00:30+00:00")
        assert len(scheduler.run_once(due)) == 1
        assert get(api, merchant_key, s["id"])["next_due_at"] == f"{following}T09:00:00+00:00"
    # The clamp never carries over: after April 30 comes May 31; a leap February has 29.
    view = get(api, merchant_key, s["id"])
    assert view["upcoming"][:2] == ["2027-05-31T09:00:00+00:00", "2027-06-30T09:00:00+00:00"]
    leap = create(
        api, merchant_key, wallet,
        frequency={"type": "monthly", "day": 31, "at": "23:59:59"},
        starts_at="2028-02-01T00:00:00+05:30",
    )  # fmt: skip
    assert leap["starts_at"] == "2028-01-31T18:30:00+00:00"
    assert leap["upcoming"][:3] == [
        "2028-01-31T23:59:59+00:00", "2028-02-29T23:59:59+00:00", "2028-03-31T23:59:59+00:00"
    ]  # fmt: skip
    # A new day takes effect from now, numbering goes on.
    r = api.put(
        f"{PATH}/{s['id']}",
        json={"frequency": {"type": "monthly", "day": 15, "at": "09:00"}},
        headers=auth(merchant_key),
    )
    assert r.status_code == 200, r.text
    moved = r.json()["scheduled_payment"]
    assert moved["next_occurrence"] == 5
    assert moved["next_due_at"].endswith("-15T09:00:00+00:00")

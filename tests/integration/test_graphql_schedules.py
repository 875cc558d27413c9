"""The GraphQL scheduled-payment fields on real read models: schedules made through
``POST /v1/scheduled-payments`` and run by the scheduler read back field by field, pages
and the status filter, merchant scoping, ``Ledger-Min-Position`` waiting for the
``scheduled_payments`` projection, the cap on ``first``, and the fields without a port."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from domain.schedule import occurrence_payment_id
from infrastructure.container import Container
from infrastructure.payment_read_queries import PgPaymentReadQueries
from infrastructure.projection_runner import ProjectionRunner, positions
from infrastructure.read_queries import PgReadQueries
from infrastructure.schedule_read_queries import PgScheduleReadQueries
from infrastructure.scheduler import Scheduler
from infrastructure.web import create_app
from read_api.payment_types import PAYMENTS_CURSOR, position_cursor
from read_api.ports import Scope
from read_api.router import create_graphql_router
from read_api.schedule_ports import ScheduleReadQueries, ScheduleRecord
from read_api.schedules import SCHEDULES_CURSOR
from tests.conftest import auth, wait_for_projections
from tests.integration.api_support import created, open_wallet, post

pytestmark = pytest.mark.integration

PATH = "/v1/scheduled-payments"

SCHEDULE_Q = """query($id: ID!) {
  scheduledPayment(id: $id) {
    id merchantId walletId amount { amount currency } currency method frequency status
    catchUp startsAt endsAt maxOccurrences nextOccurrence nextDueAt
    occurrences { started skipped } lastPaymentId lastDueAt cancelReason metadata
    createdAt updatedAt position version
  }
}"""

LIST_Q = """query($s: String, $first: Int, $a: String) {
  scheduledPayments(status: $s, first: $first, after: $a) {
    edges { cursor node { id merchantId status } }
    pageInfo { hasNextPage endCursor hasPreviousPage startCursor }
  }
}"""


# ---- helpers ------------------------------------------------------------------------------


def soon(minutes: int) -> datetime:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).replace(second=0, microsecond=0)


def at(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def create(client: Any, key: str, wallet_id: str, starts_at: datetime, **over: Any) -> str:
    body: dict[str, Any] = {
        "wallet_id": wallet_id,
        "amount": "12.50",
        "currency": "USD",
        "method": "card",
        "payment_method_token": "tok_visa_4242",
        "frequency": {"type": "interval", "every_seconds": 600},
        "starts_at": starts_at.isoformat(),
        "metadata": {"plan": "gold"},
    }
    body.update(over)
    return str(created(post(client, PATH, key, body))["scheduled_payment"]["id"])


def cancel(client: Any, key: str, schedule_id: str) -> None:
    r = client.delete(f"{PATH}/{schedule_id}", headers=auth(key))
    assert r.status_code == 200, r.text


def rest_view(client: Any, key: str, schedule_id: str) -> dict[str, Any]:
    r = client.get(f"{PATH}/{schedule_id}", headers=auth(key))
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()["scheduled_payment"]
    return out


def head(container: Container) -> int:
    return positions(container.pool)[1]


def run_scheduler(container: Container, now: datetime) -> list[str]:
    """One scheduler pass at ``now`` once the read model it polls is current."""
    wait_for_projections(container, head(container))
    scheduler = Scheduler(container.pool, container.engine, interval_s=60, drive=None)
    return [str(p) for p in scheduler.run_once(now)]


def gql(
    client: Any,
    key: str | None,
    query: str,
    variables: dict[str, Any] | None = None,
    min_position: int | None = None,
) -> dict[str, Any]:
    headers = auth(key) if key is not None else {}
    if min_position is not None:
        headers["Ledger-Min-Position"] = str(min_position)
    r = client.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
    )
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def data(body: dict[str, Any]) -> dict[str, Any]:
    assert "errors" not in body, body
    out: dict[str, Any] = body["data"]
    return out


def problem(body: dict[str, Any]) -> str:
    return str(body["errors"][0]["extensions"]["type"])


def schedule(client: Any, key: str, schedule_id: str, pos: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = data(gql(client, key, SCHEDULE_Q, {"id": schedule_id}, pos))[
        "scheduledPayment"
    ]
    return out


def walk(client: Any, key: str, status: str | None, first: int = 2) -> list[str]:
    """Every id of the list, page by page, checking each page's shape."""
    seen: list[str] = []
    after = None
    while True:
        page = data(gql(client, key, LIST_Q, {"s": status, "first": first, "a": after}))[
            "scheduledPayments"
        ]
        edges = page["edges"]
        info = page["pageInfo"]
        assert len(edges) <= first and info["hasPreviousPage"] is False
        if edges:
            assert info["startCursor"] == edges[0]["cursor"]
            assert info["endCursor"] == edges[-1]["cursor"]
        seen += [e["node"]["id"] for e in edges]
        if not info["hasNextPage"]:
            return seen
        after = info["endCursor"]


# ---- through the service as wired ----------------------------------------------------------


def test_a_schedule_reads_back_as_it_runs_and_is_canceled(
    container: Container, client: Any, merchant_key: str
) -> None:
    wallet = open_wallet(client, merchant_key)
    t0 = soon(3)
    ends = t0 + timedelta(days=2)
    sid = create(
        client, merchant_key, wallet, t0,
        ends_at=ends.isoformat(), max_occurrences=5, metadata={"plan": "gold", "seat": "3"},
    )  # fmt: skip

    s = schedule(client, merchant_key, sid, head(container))
    assert s["id"] == sid and s["merchantId"] == "acme" and s["walletId"] == wallet
    assert s["amount"] == {"amount": "12.50", "currency": "USD"} and s["currency"] == "USD"
    assert (s["method"], s["status"], s["catchUp"]) == ("card", "active", "latest")
    assert s["frequency"] == {"type": "interval", "every_seconds": 600}
    assert at(s["startsAt"]) == t0 and at(s["endsAt"]) == ends and s["maxOccurrences"] == 5
    assert s["nextOccurrence"] == 1 and at(s["nextDueAt"]) == t0
    assert s["occurrences"] == {"started": 0, "skipped": 0}
    assert (s["lastPaymentId"], s["lastDueAt"], s["cancelReason"]) == (None, None, None)
    assert s["metadata"] == {"plan": "gold", "seat": "3"}
    assert s["createdAt"] == s["updatedAt"]
    assert s["version"] == 1 and s["position"] > 0
    assert "paymentMethodToken" not in s

    # Occurrence 1 runs: its payment is the schedule's last, and a readable payment.
    first_payment = str(occurrence_payment_id(sid, 1))
    assert run_scheduler(container, t0 + timedelta(seconds=3)) == [first_payment]
    ran = schedule(client, merchant_key, sid, head(container))
    assert ran["occurrences"] == {"started": 1, "skipped": 0}
    assert ran["lastPaymentId"] == first_payment and at(ran["lastDueAt"]) == t0
    assert ran["nextOccurrence"] == 2 and at(ran["nextDueAt"]) == t0 + timedelta(minutes=10)
    assert ran["version"] == 2 and ran["position"] > s["position"]
    assert ran["updatedAt"] != ran["createdAt"] and ran["createdAt"] == s["createdAt"]
    paid = data(
        gql(
            client,
            merchant_key,
            "query($id: ID!) { payment(id: $id) { id amount { amount } } }",
            {"id": first_payment},
        )  # fmt: skip
    )["payment"]
    assert paid == {"id": first_payment, "amount": {"amount": "12.50"}}

    # 25 minutes on: occurrence 2 was missed (skipped), 3 runs (catch-up "latest").
    third_payment = str(occurrence_payment_id(sid, 3))
    assert run_scheduler(container, t0 + timedelta(minutes=25)) == [third_payment]
    caught_up = schedule(client, merchant_key, sid, head(container))
    assert caught_up["occurrences"] == {"started": 2, "skipped": 1}
    assert caught_up["lastPaymentId"] == third_payment
    assert at(caught_up["lastDueAt"]) == t0 + timedelta(minutes=20)
    assert caught_up["nextOccurrence"] == 4
    assert at(caught_up["nextDueAt"]) == t0 + timedelta(minutes=30)
    # The same schedule as the command API shows it now.
    rest = rest_view(client, merchant_key, sid)
    assert rest["amount"] == caught_up["amount"]["amount"]
    assert rest["frequency"] == caught_up["frequency"]
    assert rest["occurrences"] == caught_up["occurrences"]
    assert rest["next_occurrence"] == caught_up["nextOccurrence"]
    assert at(rest["next_due_at"]) == at(caught_up["nextDueAt"])
    assert rest["last_payment_id"] == caught_up["lastPaymentId"]

    # A change and a cancellation show up too.
    r = client.put(f"{PATH}/{sid}", json={"amount": "20.00"}, headers=auth(merchant_key))
    assert r.status_code == 200, r.text
    cancel(client, merchant_key, sid)
    done = schedule(client, merchant_key, sid, head(container))
    assert done["amount"] == {"amount": "20.00", "currency": "USD"}
    assert (done["status"], done["cancelReason"]) == ("canceled", "requested")
    assert done["nextDueAt"] is None and done["nextOccurrence"] is None
    assert done["occurrences"] == {"started": 2, "skipped": 1}
    assert done["lastPaymentId"] == third_payment
    assert done["version"] == caught_up["version"] + 2


def test_pages_in_creation_order_and_filters_by_status(
    container: Container, client: Any, merchant_key: str, other_merchant_key: str
) -> None:
    wallet = open_wallet(client, merchant_key)
    t0 = soon(3)
    made = [create(client, merchant_key, wallet, t0) for _ in range(4)]
    once = create(client, merchant_key, wallet, t0, max_occurrences=1)
    made.append(once)
    create(client, other_merchant_key, open_wallet(client, other_merchant_key), t0)
    cancel(client, merchant_key, made[1])
    cancel(client, merchant_key, made[3])
    # The one-occurrence schedule completes when its occurrence runs.
    assert len(run_scheduler(container, t0 + timedelta(seconds=3))) == 4  # acme 3, globex 1
    wait_for_projections(container, head(container))

    assert walk(client, merchant_key, None) == made  # creation order, each once
    assert walk(client, merchant_key, None, first=500) == made
    assert walk(client, merchant_key, "active") == [made[0], made[2]]
    assert walk(client, merchant_key, "canceled") == [made[1], made[3]]
    assert walk(client, merchant_key, "completed") == [once]
    done = schedule(client, merchant_key, once)
    assert (done["status"], done["nextDueAt"], done["nextOccurrence"]) == ("completed", None, None)
    assert done["occurrences"] == {"started": 1, "skipped": 0}

    # Three pages of two: the cursors carry on where the last page ended.
    page = data(gql(client, merchant_key, LIST_Q, {"first": 2}))["scheduledPayments"]
    assert page["pageInfo"]["hasNextPage"] is True
    assert [e["node"]["id"] for e in page["edges"]] == made[:2]
    last = page["edges"][-1]["cursor"]
    rest = data(gql(client, merchant_key, LIST_Q, {"first": 10, "a": last}))["scheduledPayments"]
    assert [e["node"]["id"] for e in rest["edges"]] == made[2:]
    assert rest["pageInfo"]["hasNextPage"] is False
    end = rest["pageInfo"]["endCursor"]
    tail = data(gql(client, merchant_key, LIST_Q, {"a": end}))["scheduledPayments"]
    assert tail["edges"] == [] and tail["pageInfo"]["endCursor"] is None
    default = data(gql(client, merchant_key, LIST_Q))["scheduledPayments"]
    assert len(default["edges"]) == 5 and default["pageInfo"]["hasNextPage"] is False

    for variables in (
        {"s": "paused"},
        {"first": -1},
        {"a": "bm9wZQ"},
        {"a": "!!"},
        {"a": position_cursor(PAYMENTS_CURSOR, 1)},  # another connection's cursor
    ):
        body = gql(client, merchant_key, LIST_Q, variables)
        assert body["data"]["scheduledPayments"] is None, variables
        assert problem(body) == "/problems/validation-error", variables


def test_merchants_see_only_their_own_and_the_all_seeing_roles_see_all(
    container: Container,
    client: Any,
    merchant_key: str,
    other_merchant_key: str,
    admin_key: str,
) -> None:
    t0 = soon(3)
    mine = create(client, merchant_key, open_wallet(client, merchant_key), t0)
    theirs = create(client, other_merchant_key, open_wallet(client, other_merchant_key), t0)
    pos = head(container)

    hidden = gql(client, merchant_key, SCHEDULE_Q, {"id": theirs}, pos)
    assert hidden["data"]["scheduledPayment"] is None
    assert problem(hidden) == "/problems/not-found"
    missing = gql(client, merchant_key, SCHEDULE_Q, {"id": "00000000-0000-0000-0000-000000000001"})
    assert missing["data"]["scheduledPayment"] is None
    assert problem(missing) == "/problems/not-found"
    # Invisible and missing read the same, message aside.
    assert hidden["errors"][0]["extensions"] == missing["errors"][0]["extensions"]
    assert schedule(client, other_merchant_key, theirs)["merchantId"] == "globex"
    hidden = gql(client, other_merchant_key, SCHEDULE_Q, {"id": mine})
    assert hidden["data"]["scheduledPayment"] is None

    assert walk(client, merchant_key, None) == [mine]
    assert walk(client, other_merchant_key, None) == [theirs]
    assert walk(client, other_merchant_key, "canceled") == []
    auditor = container.api_keys.create("acme", "auditor")
    analyst = container.api_keys.create("acme", "analyst")
    for key in (admin_key, auditor, analyst):
        assert walk(client, key, None) == [mine, theirs], key
        assert schedule(client, key, theirs)["merchantId"] == "globex"
        assert schedule(client, key, mine)["merchantId"] == "acme"

    anonymous = gql(client, None, LIST_Q)
    assert problem(anonymous) == "/problems/unauthorized"
    assert problem(gql(client, None, SCHEDULE_Q, {"id": mine})) == "/problems/unauthorized"
    revoked = gql(client, "not-a-key", SCHEDULE_Q, {"id": mine})
    assert revoked["data"]["scheduledPayment"] is None
    assert problem(revoked) == "/problems/unauthorized"
    bad = gql(client, merchant_key, SCHEDULE_Q, {"id": "nope"})
    assert problem(bad) == "/problems/validation-error"


# ---- the router on its own: no background runner, fake ports ----------------------------


def graphql_app(container: Container, **ports: Any) -> TestClient:
    app = FastAPI()
    app.include_router(
        create_graphql_router(
            PgReadQueries(container.pool),
            container.api_keys.authenticate,
            min_position_timeout_s=0.3,
            **ports,
        ),
        prefix="/graphql",
    )
    return TestClient(app)


def test_min_position_waits_for_the_schedules_projection(
    container: Container, merchant_key: str
) -> None:
    # The command API without its lifespan: no background projections, no scheduler; the
    # projections move only when run here.
    rest = TestClient(create_app(container, manage_lifecycle=False))
    sid = create(rest, merchant_key, open_wallet(rest, merchant_key), soon(3))
    pos = head(container)
    # Every projection but scheduled_payments catches up.
    others = [t for t in container.runner.targets if t.projector.name != "scheduled_payments"]
    assert len(others) == len(container.runner.targets) - 1
    ProjectionRunner(container.pool, container.runner.mapper, others).run_until_caught_up()
    tracked, _ = positions(container.pool)
    assert tracked["scheduled_payments"] < pos <= tracked["transfers"]

    wired = graphql_app(
        container,
        payments=PgPaymentReadQueries(container.pool),
        schedules=PgScheduleReadQueries(container.pool),
    )
    for query, variables in ((LIST_Q, None), (SCHEDULE_Q, {"id": sid})):
        body = gql(wired, merchant_key, query, variables, min_position=pos)
        assert body["data"] is None and problem(body) == "/problems/position-not-reached"
    # Without the schedules port the lagging projection is not waited for.
    unwired = graphql_app(container, payments=PgPaymentReadQueries(container.pool))
    body = gql(unwired, merchant_key, "{ payments { edges { cursor } } }", min_position=pos)
    assert data(body)["payments"]["edges"] == []

    container.runner.run_until_caught_up()
    body = gql(wired, merchant_key, LIST_Q, min_position=pos)
    assert [e["node"]["id"] for e in data(body)["scheduledPayments"]["edges"]] == [sid]
    assert schedule(wired, merchant_key, sid, pos)["status"] == "active"


@dataclass
class RecordingSchedules:
    """``ScheduleReadQueries`` answering nothing, recording what it was asked."""

    asked: list[tuple[Scope, str | None, int | None, int]] = field(default_factory=list)

    def schedule(self, schedule_id: str, scope: Scope) -> ScheduleRecord | None:
        return None

    def schedules(
        self, scope: Scope, *, status: str | None, after: int | None, limit: int
    ) -> list[ScheduleRecord]:
        self.asked.append((scope, status, after, limit))
        return []


@pytest.fixture
def recording() -> Iterator[RecordingSchedules]:
    yield RecordingSchedules()


def test_first_is_capped_and_the_fields_need_their_port(
    container: Container, merchant_key: str, admin_key: str, recording: RecordingSchedules
) -> None:
    port: ScheduleReadQueries = recording
    client = graphql_app(container, schedules=port)
    for first in (None, 0, 7, 500, 501, 100_000):
        variables = {} if first is None else {"first": first}
        data(gql(client, merchant_key, LIST_Q, variables))
    # One more than the page is asked for, to know whether there is a next page.
    assert [limit for *_, limit in recording.asked] == [21, 1, 8, 501, 501, 501]
    assert {scope for scope, *_ in recording.asked} == {Scope("acme")}
    cursor = position_cursor(SCHEDULES_CURSOR, 42)
    data(gql(client, admin_key, LIST_Q, {"s": "active", "a": cursor}))
    assert recording.asked[-1] == (Scope(None), "active", 42, 21)

    # No port: the same internal error as the payment fields without theirs.
    bare = graphql_app(container)
    for query, field_name in (
        (LIST_Q, "scheduledPayments"),
        ("{ payments { edges { cursor } } }", "payments"),
    ):
        body = gql(bare, merchant_key, query)
        assert body["data"][field_name] is None
        assert problem(body) == "/problems/internal-error"
        assert body["errors"][0]["message"] == "unexpected error; it was logged"

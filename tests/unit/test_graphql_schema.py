"""The GraphQL read schema executed in-process against an in-memory ``ReadQueries``."""

from __future__ import annotations

import asyncio
import gc
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from domain.ledger import world_account_id
from domain.principal import Principal
from read_api.context import ReadContext
from read_api.ports import (
    ReadQueries,
    Scope,
    StatementRecord,
    TransferRecord,
    WalletRecord,
)
from read_api.router import create_graphql_router
from read_api.schema import build_schema

T0 = datetime(2024, 1, 1, tzinfo=UTC)
WORLD_USD = str(world_account_id("USD"))

ALICE = Principal("acme", "merchant")
BOB = Principal("globex", "merchant")
AUDITOR = Principal("platform", "auditor")
ADMIN = Principal("platform", "admin")


def wid(n: int) -> str:
    return str(uuid.UUID(int=n))


def wallet_record(n: int, merchant: str, currency: str = "USD", **kw: Any) -> WalletRecord:
    values: dict[str, Any] = {
        "wallet_id": wid(n),
        "merchant_id": merchant,
        "currency": currency,
        "status": "active",
        "credit_limit": 0,
        "posted": 0,
        "pending": 0,
        "metadata": {},
        "is_system": False,
        "version": 1,
        "opened_at": T0,
        "updated_at": T0,
        "position": n,
    }
    values.update(kw)
    return WalletRecord(**values)


def transfer_record(
    n: int, debit: str, credit: str, merchant: str = "acme", **kw: Any
) -> TransferRecord:
    values: dict[str, Any] = {
        "transfer_id": str(uuid.UUID(int=1000 + n)),
        "merchant_id": merchant,
        "kind": "transfer",
        "debit_account_id": debit,
        "credit_account_id": credit,
        "amount": 1234,
        "currency": "USD",
        "status": "posted",
        "posted_amount": 1234,
        "pending": False,
        "expires_at": None,
        "metadata": {},
        "created_at": T0,
        "updated_at": T0,
        "position": 100 + n,
    }
    values.update(kw)
    return TransferRecord(**values)


@dataclass
class FakeReadQueries:
    """``ReadQueries`` over lists, with the same visibility rules as the SQL."""

    wallets_: list[WalletRecord] = field(default_factory=list)
    transfers_: list[TransferRecord] = field(default_factory=list)
    entries: list[StatementRecord] = field(default_factory=list)
    tracking: dict[str, int] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    fail: bool = False

    def _visible_wallet(self, w: WalletRecord, scope: Scope) -> bool:
        return scope.sees_all or (w.merchant_id == scope.merchant_id and not w.is_system)

    def wallet(self, wallet_id: str, scope: Scope) -> WalletRecord | None:
        self.calls.append(("wallet", {"wallet_id": wallet_id}))
        if self.fail:
            raise RuntimeError("connection refused: secret-host:5432")
        return next(
            (
                w
                for w in self.wallets_
                if w.wallet_id == wallet_id and self._visible_wallet(w, scope)
            ),
            None,
        )

    def wallets(
        self,
        scope: Scope,
        *,
        merchant_id: str | None,
        currency: str | None,
        after: str | None,
        limit: int,
    ) -> list[WalletRecord]:
        self.calls.append(("wallets", {"limit": limit, "after": after}))
        rows = sorted(
            (
                w
                for w in self.wallets_
                if self._visible_wallet(w, scope)
                and (merchant_id is None or w.merchant_id == merchant_id)
                and (currency is None or w.currency == currency)
                and (after is None or uuid.UUID(w.wallet_id) > uuid.UUID(after))
            ),
            key=lambda w: uuid.UUID(w.wallet_id),
        )
        return rows[:limit]

    def transfer(self, transfer_id: str, scope: Scope) -> TransferRecord | None:
        return next(
            (
                t
                for t in self.transfers_
                if t.transfer_id == transfer_id
                and (scope.sees_all or t.merchant_id == scope.merchant_id)
            ),
            None,
        )

    def transfers(
        self,
        scope: Scope,
        *,
        wallet_id: str | None,
        status: str | None,
        after: int | None,
        limit: int,
    ) -> list[TransferRecord]:
        rows = sorted(
            (
                t
                for t in self.transfers_
                if (scope.sees_all or t.merchant_id == scope.merchant_id)
                and (wallet_id is None or wallet_id in (t.debit_account_id, t.credit_account_id))
                and (status is None or t.status == status)
                and (after is None or t.position > after)
            ),
            key=lambda t: t.position,
        )
        return rows[:limit]

    def statement(
        self,
        wallet_id: str,
        *,
        start: datetime | None,
        end: datetime | None,
        after: tuple[datetime, int] | None,
        limit: int,
    ) -> list[StatementRecord]:
        rows = sorted(
            (
                e
                for e in self.entries
                if e.wallet_id == wallet_id
                and (start is None or e.at >= start)
                and (end is None or e.at < end)
                and (after is None or (e.at, e.position) > after)
            ),
            key=lambda e: (e.at, e.position),
        )
        return rows[:limit]

    def posted_at(self, wallet_id: str, at: datetime) -> int | None:
        rows = [e for e in self.entries if e.wallet_id == wallet_id and e.at <= at]
        return max(rows, key=lambda e: (e.at, e.position)).posted_after if rows else None

    def positions(self) -> dict[str, int]:
        self.calls.append(("positions", {}))
        return dict(self.tracking)


def test_fake_implements_the_port() -> None:
    queries: ReadQueries = FakeReadQueries()
    assert queries.positions() == {}


@pytest.fixture
def store() -> FakeReadQueries:
    s = FakeReadQueries()
    s.wallets_ = [
        wallet_record(1, "acme", posted=123456, pending=1000, credit_limit=500, metadata={"k": 1}),
        wallet_record(2, "acme", "JPY", posted=5),
        wallet_record(3, "acme", "KWD", posted=1234),
        wallet_record(4, "acme"),
        wallet_record(5, "acme"),
        wallet_record(6, "globex", posted=-1230),
        wallet_record(0, "system", is_system=True, posted=-123456, wallet_id=WORLD_USD, position=7),
    ]
    s.transfers_ = [
        transfer_record(1, WORLD_USD, wid(1), kind="deposit"),
        transfer_record(2, wid(1), wid(4)),
        transfer_record(
            3,
            wid(1),
            wid(5),
            status="pending",
            posted_amount=0,
            pending=True,
            expires_at=T0 + timedelta(days=1),
        ),  # fmt: skip
        transfer_record(4, wid(4), wid(5)),
        transfer_record(5, wid(6), WORLD_USD, merchant="globex", kind="withdrawal"),
        transfer_record(6, wid(5), wid(1), status="voided", posted_amount=0, pending=True),
    ]
    s.entries = [
        StatementRecord(wid(1), 101, str(uuid.UUID(int=1001)), "deposit", 200000, 200000,
                        WORLD_USD, T0 + timedelta(hours=1)),
        StatementRecord(wid(1), 102, str(uuid.UUID(int=1002)), "transfer", -1230, 198770,
                        wid(4), T0 + timedelta(hours=2)),
        StatementRecord(wid(1), 104, str(uuid.UUID(int=1004)), "transfer", -75314, 123456,
                        wid(5), T0 + timedelta(hours=3)),
    ]  # fmt: skip
    s.tracking = {"balances": 10, "statements": 10, "transfers": 10}
    return s


def run(
    store: FakeReadQueries,
    query: str,
    principal: Principal | None = ALICE,
    variables: dict[str, Any] | None = None,
    *,
    max_depth: int = 8,
    min_position: str | None = None,
    timeout_s: float = 1.0,
) -> Any:
    schema = build_schema(max_depth)
    context = ReadContext(
        store, principal, min_position=min_position, min_position_timeout_s=timeout_s
    )
    return asyncio.run(schema.execute(query, variable_values=variables, context_value=context))


def problem_types(result: Any) -> list[str]:
    return [e.extensions.get("type") for e in result.errors or []]


WALLET_FIELDS = """
    id merchantId currency status isSystem version position metadata updatedAt
    creditLimit { amount currency }
    balance { posted { amount currency } pending { amount } available { amount } }
"""


# ---- money ------------------------------------------------------------------------------


def test_wallet_money_is_a_decimal_string_in_major_units(store: FakeReadQueries) -> None:
    result = run(store, f'{{ wallet(id: "{wid(1)}") {{ {WALLET_FIELDS} }} }}')
    assert result.errors is None
    w = result.data["wallet"]
    assert w["id"] == wid(1)
    assert w["merchantId"] == "acme"
    assert w["balance"]["posted"] == {"amount": "1234.56", "currency": "USD"}
    assert w["balance"]["pending"] == {"amount": "10.00"}
    # available = posted - pending + credit limit
    assert w["balance"]["available"] == {"amount": "1229.56"}
    assert w["creditLimit"] == {"amount": "5.00", "currency": "USD"}
    assert w["metadata"] == {"k": 1}
    assert w["isSystem"] is False
    assert w["position"] == 1
    assert w["updatedAt"] == T0.isoformat()


@pytest.mark.parametrize(
    ("n", "amount", "currency"), [(2, "5", "JPY"), (3, "1.234", "KWD"), (4, "0.00", "USD")]
)
def test_money_uses_the_currency_exponent(
    store: FakeReadQueries, n: int, amount: str, currency: str
) -> None:
    result = run(
        store, f'{{ wallet(id: "{wid(n)}") {{ balance {{ posted {{ amount currency }} }} }} }}'
    )
    assert result.errors is None
    assert result.data["wallet"]["balance"]["posted"] == {"amount": amount, "currency": currency}


def test_negative_balance_keeps_its_sign(store: FakeReadQueries) -> None:
    result = run(
        store, f'{{ wallet(id: "{wid(6)}") {{ balance {{ posted {{ amount }} }} }} }}', BOB
    )
    assert result.data["wallet"]["balance"]["posted"]["amount"] == "-12.30"


# ---- authentication and scoping ---------------------------------------------------------


def test_no_principal_is_unauthorized(store: FakeReadQueries) -> None:
    result = run(
        store, f'{{ wallet(id: "{wid(1)}") {{ id }} wallets {{ edges {{ cursor }} }} }}', None
    )
    assert result.data == {"wallet": None, "wallets": None}
    assert problem_types(result) == ["/problems/unauthorized"] * 2
    assert store.calls == []


def test_another_merchants_wallet_is_not_found(store: FakeReadQueries) -> None:
    result = run(store, f'{{ wallet(id: "{wid(6)}") {{ id }} }}', ALICE)
    assert result.data == {"wallet": None}
    assert problem_types(result) == ["/problems/not-found"]
    assert result.errors[0].path == ["wallet"]
    missing = run(store, f'{{ wallet(id: "{wid(99)}") {{ id }} }}', ALICE)
    assert problem_types(missing) == ["/problems/not-found"]
    assert missing.errors[0].message == result.errors[0].message.replace(wid(6), wid(99))


def test_roles_that_see_all_see_every_merchant_and_world(store: FakeReadQueries) -> None:
    for principal in (AUDITOR, ADMIN, Principal("x", "analyst")):
        result = run(
            store,
            f'{{ a: wallet(id: "{wid(6)}") {{ id }} w: wallet(id: "{WORLD_USD}") {{ isSystem merchantId }} }}',
            principal,
        )
        assert result.errors is None
        assert result.data["a"] == {"id": wid(6)}
        assert result.data["w"] == {"isSystem": True, "merchantId": "system"}


def test_world_is_hidden_from_merchants_even_one_named_system(store: FakeReadQueries) -> None:
    for principal in (ALICE, Principal("system", "merchant")):
        result = run(store, f'{{ wallet(id: "{WORLD_USD}") {{ id }} }}', principal)
        assert problem_types(result) == ["/problems/not-found"]


def test_wallet_list_is_scoped_to_the_merchant(store: FakeReadQueries) -> None:
    result = run(store, "{ wallets(first: 100) { edges { node { id merchantId } } } }", ALICE)
    merchants = {e["node"]["merchantId"] for e in result.data["wallets"]["edges"]}
    assert merchants == {"acme"}
    assert len(result.data["wallets"]["edges"]) == 5
    other = run(store, '{ wallets(merchantId: "globex") { edges { node { id } } } }', ALICE)
    assert other.errors is None
    assert other.data["wallets"]["edges"] == []
    auditor = run(store, '{ wallets(merchantId: "globex") { edges { node { id } } } }', AUDITOR)
    assert [e["node"]["id"] for e in auditor.data["wallets"]["edges"]] == [wid(6)]


def test_wallet_list_filters_by_currency(store: FakeReadQueries) -> None:
    result = run(store, '{ wallets(currency: "JPY") { edges { node { id } } } }', ALICE)
    assert [e["node"]["id"] for e in result.data["wallets"]["edges"]] == [wid(2)]
    bad = run(store, '{ wallets(currency: "XXX") { edges { node { id } } } }', ALICE)
    assert problem_types(bad) == ["/problems/unknown-currency"]


def test_malformed_id_is_a_validation_error(store: FakeReadQueries) -> None:
    result = run(store, '{ wallet(id: "not-a-uuid") { id } }')
    assert problem_types(result) == ["/problems/validation-error"]


# ---- pagination -------------------------------------------------------------------------


PAGE = """query($after: String) { wallets(first: 2, after: $after) {
    edges { cursor node { id } } pageInfo { hasNextPage endCursor hasPreviousPage startCursor }
} }"""


def test_wallet_pages_walk_every_wallet_once_in_id_order(store: FakeReadQueries) -> None:
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        result = run(store, PAGE, ALICE, {"after": after})
        assert result.errors is None
        conn = result.data["wallets"]
        seen += [e["node"]["id"] for e in conn["edges"]]
        pages += 1
        assert conn["pageInfo"]["endCursor"] == conn["edges"][-1]["cursor"]
        assert conn["pageInfo"]["startCursor"] == conn["edges"][0]["cursor"]
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = conn["pageInfo"]["endCursor"]
    assert seen == [wid(n) for n in (1, 2, 3, 4, 5)]
    assert pages == 3


def test_cursors_are_opaque(store: FakeReadQueries) -> None:
    result = run(store, PAGE, ALICE, {"after": None})
    cursor = result.data["wallets"]["edges"][0]["cursor"]
    assert wid(1) not in cursor
    assert "=" not in cursor


def test_empty_page_has_no_cursors(store: FakeReadQueries) -> None:
    result = run(
        store,
        '{ wallets(currency: "EUR") { edges { cursor } pageInfo { hasNextPage endCursor } } }',
    )
    assert result.data["wallets"] == {
        "edges": [],
        "pageInfo": {"hasNextPage": False, "endCursor": None},
    }


def test_first_is_capped(store: FakeReadQueries) -> None:
    run(store, "{ wallets(first: 100000) { edges { cursor } } }", AUDITOR)
    assert store.calls[-1] == ("wallets", {"limit": 501, "after": None})


@pytest.mark.parametrize(
    "args",
    [
        "first: -1",
        'after: "garbage!"',
        'after: "dDoxMDE"',
        'after: ""',
        'after: "dzpub3QtYS11dWlk"',
    ],
)
def test_bad_pagination_arguments_are_validation_errors(store: FakeReadQueries, args: str) -> None:
    # "dDoxMDE" is a transfer cursor ("t:101"); "dzpub3QtYS11dWlk" is "w:not-a-uuid".
    result = run(store, f"{{ wallets({args}) {{ edges {{ cursor }} }} }}")
    assert result.data == {"wallets": None}
    assert problem_types(result) == ["/problems/validation-error"]


def test_bad_argument_types_are_validation_errors(store: FakeReadQueries) -> None:
    result = run(store, '{ wallets(first: "ten") { edges { cursor } } }')
    assert result.data is None
    assert problem_types(result) == ["/problems/validation-error"]


# ---- transfers --------------------------------------------------------------------------

TRANSFER_FIELDS = """id kind status debitWalletId creditWalletId amount { amount currency }
    postedAmount { amount } pendingAmount { amount } expiresAt createdAt metadata position"""


def test_transfer_maps_world_to_null_and_pending_amount(store: FakeReadQueries) -> None:
    deposit = run(store, f'{{ transfer(id: "{uuid.UUID(int=1001)}") {{ {TRANSFER_FIELDS} }} }}')
    t = deposit.data["transfer"]
    assert t["kind"] == "deposit"
    assert t["debitWalletId"] is None
    assert t["creditWalletId"] == wid(1)
    assert t["amount"] == {"amount": "12.34", "currency": "USD"}
    assert t["pendingAmount"] == {"amount": "0.00"}
    assert t["postedAmount"] == {"amount": "12.34"}
    assert t["expiresAt"] is None
    pending = run(store, f'{{ transfer(id: "{uuid.UUID(int=1003)}") {{ {TRANSFER_FIELDS} }} }}')
    t = pending.data["transfer"]
    assert t["status"] == "pending"
    assert t["pendingAmount"] == {"amount": "12.34"}
    assert t["postedAmount"] == {"amount": "0.00"}
    assert t["expiresAt"] == (T0 + timedelta(days=1)).isoformat()
    voided = run(
        store, f'{{ transfer(id: "{uuid.UUID(int=1006)}") {{ pendingAmount {{ amount }} }} }}'
    )
    assert voided.data["transfer"]["pendingAmount"] == {"amount": "0.00"}


def test_another_merchants_transfer_is_not_found(store: FakeReadQueries) -> None:
    result = run(store, f'{{ transfer(id: "{uuid.UUID(int=1005)}") {{ id }} }}', ALICE)
    assert result.data == {"transfer": None}
    assert problem_types(result) == ["/problems/not-found"]
    assert run(store, f'{{ transfer(id: "{uuid.UUID(int=1005)}") {{ id }} }}', BOB).errors is None


def test_transfers_of_a_wallet_cover_both_sides_in_position_order(store: FakeReadQueries) -> None:
    q = '{ transfers(walletId: "%s", first: 2, after: %s) { edges { node { position debitWalletId creditWalletId } } pageInfo { hasNextPage endCursor } } }'
    first = run(store, q % (wid(1), "null"))
    conn = first.data["transfers"]
    assert [e["node"]["position"] for e in conn["edges"]] == [101, 102]
    assert conn["pageInfo"]["hasNextPage"] is True
    second = run(store, q % (wid(1), f'"{conn["pageInfo"]["endCursor"]}"'))
    conn = second.data["transfers"]
    assert [e["node"]["position"] for e in conn["edges"]] == [103, 106]
    assert conn["edges"][1]["node"]["creditWalletId"] == wid(1)
    assert conn["pageInfo"]["hasNextPage"] is False


def test_transfers_filter_by_status_and_scope(store: FakeReadQueries) -> None:
    pending = run(store, '{ transfers(status: "pending") { edges { node { position } } } }')
    assert [e["node"]["position"] for e in pending.data["transfers"]["edges"]] == [103]
    mine = run(store, "{ transfers(first: 50) { edges { node { position } } } }", BOB)
    assert [e["node"]["position"] for e in mine.data["transfers"]["edges"]] == [105]
    bad = run(store, '{ transfers(status: "lost") { edges { cursor } } }')
    assert problem_types(bad) == ["/problems/validation-error"]


def test_transfers_of_an_invisible_wallet_are_not_found(store: FakeReadQueries) -> None:
    result = run(store, f'{{ transfers(walletId: "{wid(6)}") {{ edges {{ cursor }} }} }}', ALICE)
    assert result.data == {"transfers": None}
    assert problem_types(result) == ["/problems/not-found"]
    world = run(
        store,
        f'{{ transfers(walletId: "{WORLD_USD}") {{ edges {{ node {{ position }} }} }} }}',
        AUDITOR,
    )
    assert [e["node"]["position"] for e in world.data["transfers"]["edges"]] == [101, 105]


# ---- statement and balanceAt ------------------------------------------------------------

STATEMENT = """query($w: ID!, $from: DateTime, $to: DateTime, $first: Int, $after: String) {
  statement(walletId: $w, from: $from, to: $to, first: $first, after: $after) {
    edges { cursor node { position transferId kind amount { amount currency }
                          balanceAfter { amount } counterpartyId at } }
    pageInfo { hasNextPage endCursor }
  }
}"""


def test_statement_entries_are_signed_with_balance_after(store: FakeReadQueries) -> None:
    result = run(store, STATEMENT, ALICE, {"w": wid(1)})
    assert result.errors is None
    nodes = [e["node"] for e in result.data["statement"]["edges"]]
    assert [n["amount"]["amount"] for n in nodes] == ["2000.00", "-12.30", "-753.14"]
    assert [n["balanceAfter"]["amount"] for n in nodes] == ["2000.00", "1987.70", "1234.56"]
    assert nodes[0]["counterpartyId"] is None  # world
    assert nodes[1]["counterpartyId"] == wid(4)
    assert nodes[0]["at"] == (T0 + timedelta(hours=1)).isoformat()
    assert nodes[0]["amount"]["currency"] == "USD"


def test_statement_time_window_and_pages(store: FakeReadQueries) -> None:
    window = {
        "w": wid(1),
        "from": (T0 + timedelta(hours=2)).isoformat(),
        "to": (T0 + timedelta(hours=3)).isoformat(),
    }
    result = run(store, STATEMENT, ALICE, window)
    assert [e["node"]["position"] for e in result.data["statement"]["edges"]] == [102]
    page1 = run(store, STATEMENT, ALICE, {"w": wid(1), "first": 2})
    cursor = page1.data["statement"]["pageInfo"]["endCursor"]
    assert page1.data["statement"]["pageInfo"]["hasNextPage"] is True
    page2 = run(store, STATEMENT, ALICE, {"w": wid(1), "first": 2, "after": cursor})
    assert [e["node"]["position"] for e in page2.data["statement"]["edges"]] == [104]
    assert page2.data["statement"]["pageInfo"]["hasNextPage"] is False


def test_statement_scoping_and_naive_times(store: FakeReadQueries) -> None:
    other = run(store, STATEMENT, BOB, {"w": wid(1)})
    assert other.data == {"statement": None}
    assert problem_types(other) == ["/problems/not-found"]
    naive = run(store, STATEMENT, ALICE, {"w": wid(1), "from": "2024-01-01T00:00:00"})
    assert problem_types(naive) == ["/problems/validation-error"]


BALANCE_AT = "query($w: ID!, $at: DateTime!) { balanceAt(walletId: $w, at: $at) { walletId at posted { amount currency } } }"


@pytest.mark.parametrize(
    ("offset", "amount"),
    [
        (timedelta(0), "0.00"),
        (timedelta(hours=1), "2000.00"),  # inclusive
        (timedelta(hours=2, minutes=30), "1987.70"),
        (timedelta(days=30), "1234.56"),
    ],
)
def test_balance_at(store: FakeReadQueries, offset: timedelta, amount: str) -> None:
    at = (T0 + offset).isoformat()
    result = run(store, BALANCE_AT, ALICE, {"w": wid(1), "at": at})
    assert result.errors is None
    assert result.data["balanceAt"] == {
        "walletId": wid(1),
        "at": at,
        "posted": {"amount": amount, "currency": "USD"},
    }


def test_balance_at_of_an_invisible_or_missing_wallet_is_not_found(store: FakeReadQueries) -> None:
    for principal, w in ((BOB, wid(1)), (ALICE, wid(77))):
        result = run(store, BALANCE_AT, principal, {"w": w, "at": T0.isoformat()})
        assert result.data == {"balanceAt": None}
        assert problem_types(result) == ["/problems/not-found"]


def test_balance_at_of_a_jpy_wallet_without_postings(store: FakeReadQueries) -> None:
    result = run(store, BALANCE_AT, ALICE, {"w": wid(2), "at": T0.isoformat()})
    assert result.data["balanceAt"]["posted"] == {"amount": "0", "currency": "JPY"}


# ---- limits and failures ----------------------------------------------------------------


def test_depth_limit_rejects_deep_queries_before_execution(store: FakeReadQueries) -> None:
    query = "{ wallets { edges { node { balance { posted { amount } } } } } }"
    assert run(store, query, max_depth=8).errors is None
    store.calls.clear()
    result = run(store, query, max_depth=3)
    assert result.data is None
    assert problem_types(result) == ["/problems/validation-error"]
    assert "exceeds maximum operation depth" in result.errors[0].message
    assert store.calls == []


def test_introspection_is_not_depth_limited(store: FakeReadQueries) -> None:
    from graphql import get_introspection_query

    result = run(store, get_introspection_query(), None, max_depth=3)
    assert result.errors is None
    assert result.data["__schema"]["queryType"]["name"] == "Query"


def test_unexpected_errors_are_masked(
    store: FakeReadQueries, caplog: pytest.LogCaptureFixture
) -> None:
    store.fail = True
    result = run(store, f'{{ wallet(id: "{wid(1)}") {{ id }} }}')
    assert result.data == {"wallet": None}
    assert problem_types(result) == ["/problems/internal-error"]
    assert "secret-host" not in result.errors[0].message
    assert "secret-host" in caplog.text  # logged for the operator


def test_expected_errors_are_not_logged(
    store: FakeReadQueries, caplog: pytest.LogCaptureFixture
) -> None:
    run(store, f'{{ wallet(id: "{wid(6)}") {{ id }} }}', ALICE)
    assert caplog.records == []


# ---- Ledger-Min-Position ----------------------------------------------------------------


def test_min_position_reached_answers(store: FakeReadQueries) -> None:
    result = run(store, f'{{ wallet(id: "{wid(1)}") {{ id }} }}', min_position="10")
    assert result.errors is None
    assert store.calls[0] == ("positions", {})


def test_min_position_waits_until_every_projection_catches_up(store: FakeReadQueries) -> None:
    store.tracking = {"balances": 12, "statements": 11, "transfers": 12}

    original = store.positions
    polls = 0

    def catching_up() -> dict[str, int]:
        nonlocal polls
        polls += 1
        if polls == 3:
            store.tracking["statements"] = 12
        return original()

    store.positions = catching_up  # type: ignore[method-assign]
    result = run(store, f'{{ wallet(id: "{wid(1)}") {{ id }} }}', min_position="12")
    assert result.errors is None
    assert polls == 3


def test_min_position_timeout_is_a_problem(store: FakeReadQueries) -> None:
    result = run(store, f'{{ wallet(id: "{wid(1)}") {{ id }} }}', min_position="11", timeout_s=0.05)
    assert result.data is None
    assert problem_types(result) == ["/problems/position-not-reached"]
    assert "10" in result.errors[0].message
    assert ("wallet", {"wallet_id": wid(1)}) not in store.calls


def test_min_position_counts_a_missing_projection_as_zero(store: FakeReadQueries) -> None:
    del store.tracking["transfers"]
    result = run(store, "{ wallets { edges { cursor } } }", min_position="1", timeout_s=0.03)
    assert problem_types(result) == ["/problems/position-not-reached"]


@pytest.mark.parametrize("header", ["abc", "-1", "1.5", "", "99999999999999999999"])
def test_malformed_min_position_is_a_validation_error(store: FakeReadQueries, header: str) -> None:
    result = run(store, "{ wallets { edges { cursor } } }", min_position=header)
    assert result.data is None
    assert problem_types(result) == ["/problems/validation-error"]


# ---- the router -------------------------------------------------------------------------


@pytest.fixture
def client(store: FakeReadQueries) -> TestClient:
    keys = {"alice-key": ALICE, "auditor-key": AUDITOR}
    app = FastAPI()
    app.include_router(
        create_graphql_router(store, keys.get, max_depth=4, min_position_timeout_s=0.05),
        prefix="/graphql",
    )
    return TestClient(app)


def post(client: TestClient, query: str, key: str | None = None, **headers: str) -> Any:
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    response = client.post("/graphql", json={"query": query}, headers=headers)
    assert response.status_code == 200
    return response.json()


def test_router_authenticates_with_a_bearer_key(client: TestClient) -> None:
    body = post(client, f'{{ wallet(id: "{wid(1)}") {{ id }} }}', "alice-key")
    assert body == {"data": {"wallet": {"id": wid(1)}}}
    body = post(client, f'{{ wallet(id: "{wid(6)}") {{ id }} }}', "alice-key")
    assert body["errors"][0]["extensions"]["type"] == "/problems/not-found"
    assert post(client, f'{{ wallet(id: "{wid(6)}") {{ id }} }}', "auditor-key")["data"]["wallet"]


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_router_without_a_valid_key_is_unauthorized(client: TestClient, key: str | None) -> None:
    body = post(client, "{ wallets { edges { cursor } } }", key)
    assert body["data"] == {"wallets": None}
    assert body["errors"][0]["extensions"] == {
        "type": "/problems/unauthorized",
        "title": "Unauthorized",
    }


def test_router_reads_min_position_and_max_depth(client: TestClient) -> None:
    late = post(
        client, "{ wallets { edges { cursor } } }", "alice-key", **{"Ledger-Min-Position": "50"}
    )
    assert late["data"] is None
    assert late["errors"][0]["extensions"]["type"] == "/problems/position-not-reached"
    ok = post(
        client, "{ wallets { edges { cursor } } }", "alice-key", **{"Ledger-Min-Position": "5"}
    )
    assert "errors" not in ok
    deep = post(
        client, "{ wallets { edges { node { balance { posted { amount } } } } } }", "alice-key"
    )
    assert deep["errors"][0]["extensions"]["type"] == "/problems/validation-error"


def test_router_serves_graphiql(client: TestClient) -> None:
    response = client.get("/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert "graphiql" in response.text.lower()


def test_an_executed_query_leaves_no_cyclic_garbage(store: FakeReadQueries) -> None:
    """Executors are freed by reference counting (``AcyclicExecutionContext``): graphql-core
    3.3's made ~50 objects of cyclic garbage a query, which the collector's pauses paid."""
    schema = build_schema()
    query = "query($id: ID!) { wallet(id: $id) { balance { available { amount } } } }"

    async def queries(n: int) -> None:
        for _ in range(n):
            context = ReadContext(store, ALICE)
            result = await schema.execute(
                query, variable_values={"id": wid(1)}, context_value=context
            )
            assert result.errors is None

    asyncio.run(queries(5))  # warm: caches filled, worker thread started
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        asyncio.run(queries(20))
        gc.collect()
        left = [
            o
            for o in gc.garbage
            if isinstance(o, StrawberryGraphQLCoreExecutionContext | ReadContext)
        ]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert left == []

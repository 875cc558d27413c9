"""A hypothesis state machine driving the real engine on real PostgreSQL.

Random sequences of open / deposit / withdraw / transfer / pending / post / void / freeze /
unfreeze / close (and replays of an idempotency key) go through ``engine.execute``. A
simple model predicts every outcome: a command succeeds exactly when the model says so,
and a refusal names one of the rules the model sees broken. After every step the wallets
and transfers loaded from the event store equal the model, the engine's cached aggregates
equal the event store, every currency sums to zero with ``world`` and no available
balance is negative. Every few steps and at the end, the read models equal the events
and the audit passes.

Each example gets its own fresh database (the ``container`` fixture is per test
function, hypothesis runs many examples per function).
"""

from __future__ import annotations

import sys
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, ClassVar
from uuid import UUID

import psycopg
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from commands.engine import Outcome
from commands.model import (
    CloseWallet,
    Command,
    CommandRequest,
    CreateTransfer,
    Deposit,
    FreezeWallet,
    OpenWallet,
    PostTransfer,
    UnfreezeWallet,
    VoidTransfer,
    Withdraw,
)
from domain.ledger import world_account_id
from domain.money import Currency, Money, format_minor
from domain.principal import Principal
from domain.transfer import PENDING, POSTED, VOIDED
from domain.wallet import ACTIVE, CLOSED, FROZEN
from infrastructure.audit import verify
from infrastructure.container import Container, build
from infrastructure.database import ConnectionParams
from infrastructure.projection_runner import positions
from tests.conftest import test_settings, wait_for_projections

pytestmark = pytest.mark.integration

ACME = Principal("acme", "merchant")
CURRENCIES = [Currency.of("USD"), Currency.of("JPY")]
FAR_TIMEOUT_S = 30 * 24 * 3600  # a timeout that never runs out during the test
READ_MODEL_EVERY = 12  # steps between read-model checks (and one at the end)


def create_database(server: ConnectionParams) -> ConnectionParams:
    name = f"t_sm_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server.conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.with_dbname(name)


def drop_database(server: ConnectionParams, db: ConnectionParams) -> None:
    with psycopg.connect(server.conninfo, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db.dbname}" WITH (FORCE)')


@dataclass
class WalletModel:
    currency: Currency
    credit_limit: int
    posted: int = 0
    pending: int = 0
    status: str = ACTIVE

    @property
    def available(self) -> int:
        return self.posted - self.pending + self.credit_limit


@dataclass
class TransferModel:
    currency: Currency
    debit: UUID | None  # None: world
    credit: UUID | None
    amount: int
    status: str
    posted_amount: int


def _fit(amount: int, available: int) -> int:
    """An amount within ``available`` (when there is any), derived from a drawn one."""
    return 1 + amount % available if available > 0 else amount


def _status_breaks(w: WalletModel) -> list[str]:
    return {FROZEN: ["wallet-frozen"], CLOSED: ["wallet-closed"]}.get(w.status, [])


class LedgerMachine(RuleBasedStateMachine):
    server: ClassVar[ConnectionParams | None] = None

    wallets = Bundle("wallets")
    transfers = Bundle("transfers")

    def __init__(self) -> None:
        super().__init__()
        server = type(self).server
        assert server is not None, "set LedgerMachine.server first"
        self.db = create_database(server)
        try:
            self.container: Container = build(test_settings(), db=self.db)
        except BaseException:
            drop_database(server, self.db)
            raise
        self.container.start_background()
        self.model: dict[UUID, WalletModel] = {}
        self.model_transfers: dict[UUID, TransferModel] = {}
        self.world: dict[str, int] = defaultdict(int)
        self.last: tuple[CommandRequest, Outcome] | None = None
        self.steps = 0

    def teardown(self) -> None:
        try:
            # Only when the example passed so far: never hide the original failure.
            if sys.exc_info()[1] is None:
                self.check_read_models_and_audit()
        finally:
            self.container.close()
            assert type(self).server is not None
            drop_database(type(self).server, self.db)  # type: ignore[arg-type]

    # ---- talking to the engine -----------------------------------------------------------

    def execute(self, command: Command) -> Outcome:
        self.steps += 1
        request = CommandRequest(
            command,
            ACME,
            correlation_id=f"sm-{uuid.uuid4()}",
            idempotency_key=f"sm-key-{uuid.uuid4()}",
        )
        outcome = self.container.engine.execute(request)
        self.last = (request, outcome)
        return outcome

    def expect(self, outcome: Outcome, broken: list[str]) -> bool:
        """``broken``: the rules the model sees this command break (empty: it must succeed)."""
        event(f"{outcome.status}: {outcome.body.get('type', 'ok')}")
        if not broken:
            assert outcome.status < 400, f"model expected success, engine said {outcome.body}"
            assert outcome.position is not None and outcome.position > 0
            assert outcome.body.get("position") == outcome.position
            assert not outcome.replayed
            return True
        assert outcome.status >= 400, f"model expected one of {broken}, engine said {outcome.body}"
        code = outcome.body["type"].removeprefix("/problems/")
        assert code in broken, f"engine refused with {code}, model expected one of {broken}"
        assert outcome.position is None
        return False

    def check_views(self, outcome: Outcome) -> None:
        """The response carries the state the command produced."""
        views = list(outcome.body.get("wallets", []))
        if "wallet" in outcome.body:
            views.append(outcome.body["wallet"])
        for view in views:
            m = self.model[UUID(view["id"])]
            exp = m.currency.exponent
            assert view["status"] == m.status
            assert view["balance"] == {
                "posted": format_minor(m.posted, exp),
                "pending": format_minor(m.pending, exp),
                "available": format_minor(m.available, exp),
            }

    def money(self, minor: int, currency: Currency) -> Money:
        return Money.of(minor, currency)

    # ---- rules -------------------------------------------------------------------------------

    @initialize(target=wallets, currency=st.sampled_from(CURRENCIES), funds=st.integers(0, 20_000))
    def first_wallets(self, currency: Currency, funds: int) -> Any:
        """Two wallets of one currency, the first funded, so that money can move at once."""
        first, second = self.open_wallet(currency, 0), self.open_wallet(currency, 0)
        self.deposit(first, funds)
        return multiple(first, second)

    @rule(
        target=wallets, currency=st.sampled_from(CURRENCIES), limit=st.sampled_from([0, 0, 0, 500])
    )
    def open_wallet(self, currency: Currency, limit: int) -> UUID:
        outcome = self.execute(OpenWallet("acme", currency, credit_limit=limit))
        self.expect(outcome, [])
        assert outcome.status == 201
        wid = UUID(outcome.body["wallet"]["id"])
        assert wid not in self.model
        self.model[wid] = WalletModel(currency, limit)
        self.check_views(outcome)
        return wid

    @rule(target=transfers, w=wallets, amount=st.integers(0, 10_000))
    def deposit(self, w: UUID, amount: int) -> Any:
        m = self.model[w]
        broken = _status_breaks(m) + (["invalid-amount"] if amount <= 0 else [])
        outcome = self.execute(Deposit(w, self.money(amount, m.currency)))
        if not self.expect(outcome, broken):
            return multiple()
        m.posted += amount
        self.world[m.currency.code] -= amount
        self.check_views(outcome)
        return self._new_transfer(
            outcome, TransferModel(m.currency, None, w, amount, POSTED, amount)
        )

    @rule(
        target=transfers,
        w=wallets,
        amount=st.integers(0, 4_000),
        fit=st.booleans(),
        pending=st.booleans(),
        timeout=st.sampled_from([None, None, FAR_TIMEOUT_S]),
    )
    def withdraw(self, w: UUID, amount: int, fit: bool, pending: bool, timeout: int | None) -> Any:
        m = self.model[w]
        amount = _fit(amount, m.available) if fit else amount
        broken = self._debit_breaks(m, amount)
        if timeout is not None and not pending:
            broken.append("validation-error")
        outcome = self.execute(
            Withdraw(w, self.money(amount, m.currency), pending=pending, timeout_seconds=timeout)
        )
        if not self.expect(outcome, broken):
            return multiple()
        if pending:
            m.pending += amount
        else:
            m.posted -= amount
            self.world[m.currency.code] += amount
        self.check_views(outcome)
        t = TransferModel(
            m.currency, w, None, amount, PENDING if pending else POSTED, 0 if pending else amount
        )
        return self._new_transfer(outcome, t)

    @rule(
        target=transfers,
        a=wallets,
        b=wallets,
        amount=st.integers(0, 4_000),
        fit=st.booleans(),
        pending=st.booleans(),
        timeout=st.sampled_from([None, None, FAR_TIMEOUT_S]),
    )
    def transfer(
        self, a: UUID, b: UUID, amount: int, fit: bool, pending: bool, timeout: int | None
    ) -> Any:
        ma, mb = self.model[a], self.model[b]
        amount = _fit(amount, ma.available) if fit else amount
        broken: list[str] = []
        if a == b:
            broken.append("same-account")
        if ma.currency != mb.currency:
            broken.append("currency-mismatch")
        else:
            broken += self._debit_breaks(ma, amount)
        broken += _status_breaks(mb)
        if timeout is not None and not pending:
            broken.append("validation-error")
        outcome = self.execute(
            CreateTransfer(
                a, b, self.money(amount, ma.currency), pending=pending, timeout_seconds=timeout
            )
        )
        if not self.expect(outcome, broken):
            return multiple()
        if pending:
            ma.pending += amount
        else:
            ma.posted -= amount
            mb.posted += amount
        self.check_views(outcome)
        t = TransferModel(
            ma.currency, a, b, amount, PENDING if pending else POSTED, 0 if pending else amount
        )
        return self._new_transfer(outcome, t)

    def _spendable(self) -> list[UUID]:
        # Creation order, not sorted ids: ids derive from random keys, and hypothesis must
        # pick the same wallet for the same choice on every run.
        return [w for w, m in self.model.items() if m.available > 0 and m.status == ACTIVE]

    @precondition(lambda self: bool(self._spendable()))
    @rule(
        target=transfers,
        data=st.data(),
        amount=st.integers(1, 4_000),
        pending=st.booleans(),
        with_timeout=st.booleans(),
        to_world=st.booleans(),
    )
    def spend(
        self, data: st.DataObject, amount: int, pending: bool, with_timeout: bool, to_world: bool
    ) -> Any:
        """A payment the model expects to go through (unless the payee is frozen or closed)."""
        a = data.draw(st.sampled_from(self._spendable()), label="payer")
        currency = self.model[a].currency
        peers = [w for w, m in self.model.items() if w != a and m.currency == currency]
        timeout = FAR_TIMEOUT_S if pending and with_timeout else None
        if to_world or not peers:
            return self.withdraw(a, amount, True, pending, timeout)
        b = data.draw(st.sampled_from(peers), label="payee")
        return self.transfer(a, b, amount, True, pending, timeout)

    def _pending_ids(self) -> list[UUID]:
        return [t for t, m in self.model_transfers.items() if m.status == PENDING]

    @precondition(lambda self: bool(self._pending_ids()))
    @rule(data=st.data(), partial=st.none() | st.integers(0, 4_500), fit=st.booleans())
    def post_pending(self, data: st.DataObject, partial: int | None, fit: bool) -> None:
        t = data.draw(st.sampled_from(self._pending_ids()), label="pending")
        if partial is not None and fit:
            partial = _fit(partial, self.model_transfers[t].amount)
        self.post(t, partial)

    @precondition(lambda self: bool(self._pending_ids()))
    @rule(data=st.data())
    def void_pending(self, data: st.DataObject) -> None:
        self.void(data.draw(st.sampled_from(self._pending_ids()), label="pending"))

    @rule(t=transfers, partial=st.none() | st.integers(0, 4_500))
    def post(self, t: UUID, partial: int | None) -> None:
        mt = self.model_transfers[t]
        broken: list[str] = []
        if partial is not None and partial <= 0:
            broken.append("invalid-amount")
        if mt.status != PENDING:
            broken.append("transfer-not-pending")
        else:
            if partial is not None and partial > mt.amount:
                broken.append("post-exceeds-pending")
            assert mt.debit is not None
            if self.model[mt.debit].status == FROZEN:
                broken.append("wallet-frozen")
            if mt.credit is not None:
                broken += _status_breaks(self.model[mt.credit])
        amount = None if partial is None else format_minor(partial, mt.currency.exponent)
        outcome = self.execute(PostTransfer(t, amount=amount))
        if not self.expect(outcome, broken):
            return
        to_post = mt.amount if partial is None else partial
        assert mt.debit is not None
        debit = self.model[mt.debit]
        debit.pending -= mt.amount
        debit.posted -= to_post
        if mt.credit is None:
            self.world[mt.currency.code] += to_post
        else:
            self.model[mt.credit].posted += to_post
        mt.status, mt.posted_amount = POSTED, to_post
        self.check_views(outcome)
        assert outcome.body["transfer"]["status"] == POSTED
        assert outcome.body["transfer"]["posted_amount"] == format_minor(
            to_post, mt.currency.exponent
        )

    @rule(t=transfers)
    def void(self, t: UUID) -> None:
        mt = self.model_transfers[t]
        broken = [] if mt.status == PENDING else ["transfer-not-pending"]
        outcome = self.execute(VoidTransfer(t))
        if not self.expect(outcome, broken):
            return
        assert mt.debit is not None
        self.model[mt.debit].pending -= mt.amount
        mt.status = VOIDED
        self.check_views(outcome)
        assert outcome.body["transfer"]["status"] == VOIDED

    @rule(w=wallets)
    def freeze(self, w: UUID) -> None:
        m = self.model[w]
        broken = [] if m.status == ACTIVE else ["invalid-wallet-state"]
        if self.expect(self.execute(FreezeWallet(w, reason="state machine")), broken):
            m.status = FROZEN

    @rule(w=wallets)
    def unfreeze(self, w: UUID) -> None:
        m = self.model[w]
        broken = [] if m.status == FROZEN else ["invalid-wallet-state"]
        if self.expect(self.execute(UnfreezeWallet(w)), broken):
            m.status = ACTIVE

    @rule(w=wallets)
    def close(self, w: UUID) -> None:
        m = self.model[w]
        broken: list[str] = []
        if m.status == CLOSED:
            broken.append("wallet-closed")
        elif m.posted != 0 or m.pending != 0:
            broken.append("wallet-not-empty")
        if self.expect(self.execute(CloseWallet(w)), broken):
            m.status = CLOSED

    @precondition(lambda self: self.last is not None)
    @rule()
    def retry_last_key(self) -> None:
        """The same key and request again: the stored answer, and no new effect."""
        assert self.last is not None
        request, first = self.last
        again = self.container.engine.execute(request)
        assert again.replayed
        assert (again.status, again.body, again.position) == (
            first.status,
            first.body,
            first.position,
        )

    # ---- helpers --------------------------------------------------------------------------------

    def _debit_breaks(self, m: WalletModel, amount: int) -> list[str]:
        broken = _status_breaks(m)
        if amount <= 0:
            broken.append("invalid-amount")
        elif amount > m.available:
            broken.append("insufficient-funds")
        return broken

    def _new_transfer(self, outcome: Outcome, t: TransferModel) -> UUID:
        view = outcome.body["transfer"]
        tid = UUID(view["id"])
        assert tid not in self.model_transfers
        self.model_transfers[tid] = t
        assert view["status"] == t.status
        assert view["amount"] == format_minor(t.amount, t.currency.exponent)
        assert view["debit_wallet_id"] == (str(t.debit) if t.debit else None)
        assert view["credit_wallet_id"] == (str(t.credit) if t.credit else None)
        return tid

    # ---- invariants -----------------------------------------------------------------------------

    @invariant()
    def event_store_equals_the_model(self) -> None:
        app = self.container.app
        for wid, m in self.model.items():
            w = app.get_wallet(wid)
            assert (w.currency, w.credit_limit) == (m.currency.code, m.credit_limit)
            assert (w.posted, w.pending, w.status) == (m.posted, m.pending, m.status), wid
            assert w.available >= 0
            assert w.available == m.available
        for tid, mt in self.model_transfers.items():
            t = app.get_transfer(tid)
            assert (t.status, t.amount, t.posted_amount) == (mt.status, mt.amount, mt.posted_amount)

    @invariant()
    def engine_cache_equals_the_event_store(self) -> None:
        """What the engine keeps in memory is exactly what replaying the events gives."""
        for aggregate_id in list(self.model) + list(self.model_transfers):
            cached = self.container.engine.cache.get(aggregate_id)
            if cached is None:
                continue
            stored = self.container.app.repository.get(aggregate_id)
            assert cached.version == stored.version
            assert {k: v for k, v in vars(cached).items() if k != "_pending_events"} == {
                k: v for k, v in vars(stored).items() if k != "_pending_events"
            }

    @invariant()
    def every_currency_sums_to_zero_with_world(self) -> None:
        totals: dict[str, int] = defaultdict(int)
        for wid, m in self.model.items():
            totals[m.currency.code] += self.container.app.get_wallet(wid).posted
        for code in set(totals) | set(self.world):
            assert totals[code] + self.world[code] == 0, code

    @invariant()
    def read_models_every_few_steps(self) -> None:
        if self.steps and self.steps % READ_MODEL_EVERY == 0:
            self.check_read_models_and_audit()

    def check_read_models_and_audit(self) -> None:
        _, head = positions(self.container.pool)
        wait_for_projections(self.container, head)
        with self.container.pool.connection() as conn:
            balances = {
                UUID(str(r[0])): r[1:]
                for r in conn.execute(
                    "SELECT wallet_id, currency, status, credit_limit, posted, pending, is_system"
                    " FROM rm_balances"
                )
            }
            transfers = {
                UUID(str(r[0])): r[1:]
                for r in conn.execute(
                    "SELECT transfer_id, status, amount, posted_amount, currency FROM rm_transfers"
                )
            }
            statement_entries = conn.execute(
                "SELECT wallet_id, count(*), sum(amount) FROM rm_statement_entries GROUP BY wallet_id"
            ).fetchall()
        app = self.container.app
        for wid, m in self.model.items():
            w = app.get_wallet(wid)
            want = (w.currency, w.status, w.credit_limit, w.posted, w.pending, False)
            assert balances.pop(wid, None) == want, wid
        for code, world in self.world.items():
            row = balances.pop(world_account_id(code), None)
            if row is None:
                assert world == 0, code
            else:
                assert row[0] == code and row[5] is True
                assert row[3] == world, (code, row, world)
        assert balances == {}, f"rows without a wallet: {balances}"
        for tid, mt in self.model_transfers.items():
            t = app.get_transfer(tid)
            want_t = (t.status, t.amount, t.posted_amount, t.currency)
            assert (
                transfers.pop(tid, None)
                == want_t
                == (mt.status, mt.amount, mt.posted_amount, mt.currency.code)
            )
        assert transfers == {}, f"rows without a transfer: {transfers}"
        for wid, _count, total in statement_entries:
            assert total == app.get_wallet(UUID(str(wid))).posted, wid
        report = verify(self.container)
        assert report.ok, report.summary()


def test_ledger_state_machine(pg_server: ConnectionParams) -> None:
    LedgerMachine.server = pg_server
    try:
        run_state_machine_as_test(
            LedgerMachine,
            settings=settings(
                max_examples=25,
                stateful_step_count=40,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
    finally:
        LedgerMachine.server = None

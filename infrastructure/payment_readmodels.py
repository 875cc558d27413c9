"""Read-model tables of payments and pay-outs, and the buffered writers of their projectors
(``projections/payments.py``). Registered in ``readmodels.TABLES`` and ``BUFFERS``.

``FoldBuffer`` serves the three state tables: it collects each row's changes during a
batch, and when the runner flushes it loads every row the batch touches in one query,
applies the changes in position order and writes the rows back in one upsert, inside the
runner's transaction. ``TimelineBuffer`` appends with COPY, then adds the posted, voided or
expired events of the transfers whose creation is on a timeline with one INSERT ... SELECT.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from psycopg import Connection, sql

from projections.payment_timeline import PostingChange, TimelineRow
from projections.payments import PaymentRow, PendingOperation, RefundRow
from projections.payouts import PayoutRow

R = TypeVar("R")

# Payments the recovery loop should look at (``payment_queries.payments_needing_work``):
# the partial index below has this predicate, and the query repeats it word for word so
# the planner can use the index.
PAYMENT_NEEDS_WORK = (
    "(status = 'created'"
    " OR (status = 'processing' AND last_attempt_outcome IN ('pending', 'error'))"
    " OR operations <> '{}'::jsonb)"
)
PAYOUT_UNSETTLED = "status NOT IN ('paid', 'failed')"


def _ddl_literal(text: str) -> str:
    """``text`` inside a DDL template that goes through ``str.format``."""
    return text.replace("{", "{{").replace("}", "}}")


PAYMENTS_DDL = f"""
CREATE TABLE {{t}} (
    payment_id uuid PRIMARY KEY,
    merchant_id text NOT NULL,
    wallet_id text NOT NULL,
    amount bigint NOT NULL,
    currency text NOT NULL,
    method text NOT NULL,
    capture_method text NOT NULL,
    status text NOT NULL,
    provider text,
    provider_ref text,
    authorized_amount bigint NOT NULL,
    captured_amount bigint NOT NULL,
    released_amount bigint NOT NULL,
    refunded_amount bigint NOT NULL,
    fees bigint NOT NULL,
    dispute_id text,
    disputed_amount bigint NOT NULL,
    dispute_status text,
    failure_reason text,
    cancel_reason text,
    authorization_expires_at timestamptz,
    attempts integer NOT NULL,
    last_attempt_outcome text,
    operations jsonb NOT NULL,
    metadata jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    created_position bigint NOT NULL,
    position bigint NOT NULL,
    version integer NOT NULL
);
CREATE INDEX ON {{t}} (created_position);
CREATE INDEX ON {{t}} (merchant_id, created_position);
CREATE INDEX ON {{t}} (status, created_position);
CREATE INDEX ON {{t}} (merchant_id, status, created_position);
CREATE INDEX ON {{t}} (created_position) WHERE dispute_id IS NOT NULL;
CREATE INDEX ON {{t}} (merchant_id, created_position) WHERE dispute_id IS NOT NULL;
CREATE INDEX ON {{t}} (updated_at) WHERE {_ddl_literal(PAYMENT_NEEDS_WORK)};
CREATE INDEX ON {{t}} (authorization_expires_at) WHERE status = 'authorized';
"""

REFUNDS_DDL = """
CREATE TABLE {t} (
    payment_id uuid NOT NULL,
    refund_id text NOT NULL,
    amount bigint NOT NULL,
    status text NOT NULL,
    code text,
    reason text,
    requested_at timestamptz,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    created_position bigint NOT NULL,
    position bigint NOT NULL,
    PRIMARY KEY (payment_id, refund_id)
);
"""

PAYOUTS_DDL = f"""
CREATE TABLE {{t}} (
    payout_id uuid PRIMARY KEY,
    merchant_id text NOT NULL,
    wallet_id text NOT NULL,
    transfer_id text NOT NULL,
    amount bigint NOT NULL,
    currency text NOT NULL,
    provider text NOT NULL,
    provider_ref text,
    status text NOT NULL,
    fee bigint NOT NULL,
    calls integer NOT NULL,
    last_call_outcome text,
    failure_reason text,
    destination jsonb NOT NULL,
    metadata jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    created_position bigint NOT NULL,
    position bigint NOT NULL,
    version integer NOT NULL
);
CREATE INDEX ON {{t}} (created_position);
CREATE INDEX ON {{t}} (merchant_id, created_position);
CREATE INDEX ON {{t}} (updated_at) WHERE {PAYOUT_UNSETTLED};
"""

TIMELINE_DDL = """
CREATE TABLE {t} (
    owner_id uuid NOT NULL,
    position bigint NOT NULL,
    owner_kind text NOT NULL,
    at timestamptz NOT NULL,
    event_type text NOT NULL,
    attempt_number integer,
    provider text,
    operation text,
    outcome text,
    latency_ms double precision,
    decision text,
    code text,
    detail text,
    provider_event_id text,
    reference text,
    amount bigint,
    fee bigint,
    transfer_id uuid,
    transfer_kind text,
    debit_account_id uuid,
    credit_account_id uuid,
    correlation_id text NOT NULL,
    causation_id text NOT NULL,
    PRIMARY KEY (owner_id, position)
);
CREATE INDEX ON {t} (transfer_id) WHERE event_type = 'Transfer.Created';
"""


# ---- row <-> column values ----------------------------------------------------------------


@dataclass(frozen=True)
class FoldTable(Generic[R]):
    """How the rows of one state table travel: columns with the SQL type of each, the key
    columns, and the conversions from a row to column values and back."""

    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...]
    to_values: Callable[[R], Sequence[Any]]
    from_values: Callable[[Sequence[Any]], R]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.columns]


def _columns(spec: str) -> tuple[tuple[str, str], ...]:
    """``"name type, name type"`` as pairs."""
    pairs = (part.split() for part in spec.split(","))
    return tuple((name, kind) for name, kind in pairs)


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _payment_values(r: PaymentRow) -> list[Any]:
    ops = {k: {"kind": op.kind, "amount": op.amount} for k, op in r.operations.items()}
    return [
        r.payment_id, r.merchant_id, r.wallet_id, r.amount, r.currency, r.method,
        r.capture_method, r.status, r.provider, r.provider_ref, r.authorized_amount,
        r.captured_amount, r.released_amount, r.refunded_amount, r.fees, r.dispute_id,
        r.disputed_amount, r.dispute_status, r.failure_reason, r.cancel_reason,
        r.authorization_expires_at, r.attempts, r.last_attempt_outcome, json.dumps(ops),
        json.dumps(r.metadata), r.created_at, r.updated_at, r.created_position, r.position,
        r.version,
    ]  # fmt: skip


def payment_from_values(v: Sequence[Any]) -> PaymentRow:
    ops = {k: PendingOperation(op["kind"], int(op["amount"])) for k, op in (v[23] or {}).items()}
    return PaymentRow(
        payment_id=str(v[0]),
        merchant_id=v[1],
        wallet_id=v[2],
        amount=int(v[3]),
        currency=v[4],
        method=v[5],
        capture_method=v[6],
        status=v[7],
        provider=v[8],
        provider_ref=v[9],
        authorized_amount=int(v[10]),
        captured_amount=int(v[11]),
        released_amount=int(v[12]),
        refunded_amount=int(v[13]),
        fees=int(v[14]),
        dispute_id=v[15],
        disputed_amount=int(v[16]),
        dispute_status=v[17],
        failure_reason=v[18],
        cancel_reason=v[19],
        authorization_expires_at=v[20],
        attempts=int(v[21]),
        last_attempt_outcome=v[22],
        operations=ops,
        metadata=dict(v[24] or {}),
        created_at=v[25],
        updated_at=v[26],
        created_position=int(v[27]),
        position=int(v[28]),
        version=int(v[29]),
    )


PAYMENTS_TABLE: FoldTable[PaymentRow] = FoldTable(
    columns=_columns(
        "payment_id uuid, merchant_id text, wallet_id text, amount bigint, "
        "currency text, method text, capture_method text, status text, provider text, "
        "provider_ref text, authorized_amount bigint, captured_amount bigint, "
        "released_amount bigint, refunded_amount bigint, fees bigint, dispute_id text, "
        "disputed_amount bigint, dispute_status text, failure_reason text, "
        "cancel_reason text, authorization_expires_at timestamptz, attempts integer, "
        "last_attempt_outcome text, operations jsonb, metadata jsonb, "
        "created_at timestamptz, updated_at timestamptz, created_position bigint, "
        "position bigint, version integer"
    ),
    key=("payment_id",),
    to_values=_payment_values,
    from_values=payment_from_values,
)


def _refund_values(r: RefundRow) -> list[Any]:
    return [
        r.payment_id, r.refund_id, r.amount, r.status, r.code, r.reason, r.requested_at,
        r.created_at, r.updated_at, r.created_position, r.position,
    ]  # fmt: skip


def refund_from_values(v: Sequence[Any]) -> RefundRow:
    return RefundRow(
        payment_id=str(v[0]),
        refund_id=v[1],
        amount=int(v[2]),
        status=v[3],
        code=v[4],
        reason=v[5],
        requested_at=v[6],
        created_at=v[7],
        updated_at=v[8],
        created_position=int(v[9]),
        position=int(v[10]),
    )


REFUNDS_TABLE: FoldTable[RefundRow] = FoldTable(
    columns=_columns(
        "payment_id uuid, refund_id text, amount bigint, status text, code text, "
        "reason text, requested_at timestamptz, created_at timestamptz, "
        "updated_at timestamptz, created_position bigint, position bigint"
    ),
    key=("payment_id", "refund_id"),
    to_values=_refund_values,
    from_values=refund_from_values,
)


def _payout_values(r: PayoutRow) -> list[Any]:
    return [
        r.payout_id, r.merchant_id, r.wallet_id, r.transfer_id, r.amount, r.currency,
        r.provider, r.provider_ref, r.status, r.fee, r.calls, r.last_call_outcome,
        r.failure_reason, json.dumps(r.destination), json.dumps(r.metadata), r.created_at,
        r.updated_at, r.created_position, r.position, r.version,
    ]  # fmt: skip


def payout_from_values(v: Sequence[Any]) -> PayoutRow:
    return PayoutRow(
        payout_id=str(v[0]),
        merchant_id=v[1],
        wallet_id=v[2],
        transfer_id=v[3],
        amount=int(v[4]),
        currency=v[5],
        provider=v[6],
        provider_ref=v[7],
        status=v[8],
        fee=int(v[9]),
        calls=int(v[10]),
        last_call_outcome=v[11],
        failure_reason=v[12],
        destination=dict(v[13] or {}),
        metadata=dict(v[14] or {}),
        created_at=v[15],
        updated_at=v[16],
        created_position=int(v[17]),
        position=int(v[18]),
        version=int(v[19]),
    )


PAYOUTS_TABLE: FoldTable[PayoutRow] = FoldTable(
    columns=_columns(
        "payout_id uuid, merchant_id text, wallet_id text, transfer_id text, "
        "amount bigint, currency text, provider text, provider_ref text, status text, "
        "fee bigint, calls integer, last_call_outcome text, failure_reason text, "
        "destination jsonb, metadata jsonb, created_at timestamptz, "
        "updated_at timestamptz, created_position bigint, position bigint, "
        "version integer"
    ),
    key=("payout_id",),
    to_values=_payout_values,
    from_values=payout_from_values,
)

TIMELINE_COLUMNS = (
    "owner_id", "position", "owner_kind", "at", "event_type", "attempt_number", "provider",
    "operation", "outcome", "latency_ms", "decision", "code", "detail", "provider_event_id",
    "reference", "amount", "fee", "transfer_id", "transfer_kind", "debit_account_id",
    "credit_account_id", "correlation_id", "causation_id",
)  # fmt: skip


def timeline_from_values(v: Sequence[Any]) -> TimelineRow:
    values = dict(zip(TIMELINE_COLUMNS, v, strict=True))
    for name in ("owner_id", "transfer_id", "debit_account_id", "credit_account_id"):
        values[name] = _str(values[name])
    return TimelineRow(**values)


# ---- buffered writers ---------------------------------------------------------------------


class FoldBuffer(Generic[R]):
    """``projections.payments.RowWriter`` for one state table (see the module doc)."""

    def __init__(self, spec: FoldTable[R], table: str) -> None:
        self.spec = spec
        self.table = table
        self.changes: dict[tuple[str, ...], list[Callable[[R | None], R | None]]] = {}

    def change(self, key: tuple[str, ...], change: Callable[[R | None], R | None]) -> None:
        self.changes.setdefault(key, []).append(change)

    def flush(self, conn: Connection[Any]) -> None:
        if not self.changes:
            return
        current = self._load(conn, list(self.changes))
        rows: list[R] = []
        for key, changes in self.changes.items():
            before = row = current.get(key)
            for change in changes:
                row = change(row)
            if row is not None and row != before:
                rows.append(row)
        if rows:
            self._upsert(conn, rows)

    def _types(self) -> dict[str, str]:
        return dict(self.spec.columns)

    def _load(self, conn: Connection[Any], keys: list[tuple[str, ...]]) -> dict[tuple[str, ...], R]:
        types = self._types()
        key_cols = self.spec.key
        query = sql.SQL(
            "SELECT {cols} FROM {t} AS x JOIN unnest({arrays}) AS k({keys}) USING ({keys})"
        ).format(
            cols=sql.SQL(", ").join(sql.Identifier("x", c) for c in self.spec.names),
            t=sql.Identifier(self.table),
            arrays=sql.SQL(", ").join(
                sql.SQL("%s::{}[]").format(sql.SQL(types[c])) for c in key_cols
            ),
            keys=sql.SQL(", ").join(map(sql.Identifier, key_cols)),
        )
        columns = [[k[i] for k in keys] for i in range(len(key_cols))]
        positions = [self.spec.names.index(c) for c in key_cols]
        found: dict[tuple[str, ...], R] = {}
        for values in conn.execute(query, columns).fetchall():
            found[tuple(str(values[i]) for i in positions)] = self.spec.from_values(values)
        return found

    def _upsert(self, conn: Connection[Any], rows: list[R]) -> None:
        names = self.spec.names
        # jsonb travels as text (one array per column), cast back when selected.
        array_types = ["text" if t == "jsonb" else t for _, t in self.spec.columns]
        selected = [
            sql.SQL("u.{}::jsonb" if t == "jsonb" else "u.{}").format(sql.Identifier(n))
            for n, t in self.spec.columns
        ]
        updates = [
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n))
            for n in names
            if n not in self.spec.key
        ]
        query = sql.SQL(
            "INSERT INTO {t} ({cols}) SELECT {selected} FROM unnest({arrays}) AS u({cols})"
            " ON CONFLICT ({keys}) DO UPDATE SET {updates}"
        ).format(
            t=sql.Identifier(self.table),
            cols=sql.SQL(", ").join(map(sql.Identifier, names)),
            selected=sql.SQL(", ").join(selected),
            arrays=sql.SQL(", ").join(sql.SQL("%s::{}[]").format(sql.SQL(t)) for t in array_types),
            keys=sql.SQL(", ").join(map(sql.Identifier, self.spec.key)),
            updates=sql.SQL(", ").join(updates),
        )
        values = [self.spec.to_values(r) for r in rows]
        conn.execute(query, [[v[i] for v in values] for i in range(len(names))])


class TimelineBuffer:
    """``projections.payments.TimelineWriter`` on ``rm_payment_timeline``."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.rows: list[TimelineRow] = []
        self.posting_changes: list[PostingChange] = []

    def add(self, row: TimelineRow) -> None:
        self.rows.append(row)

    def add_posting_change(self, change: PostingChange) -> None:
        self.posting_changes.append(change)

    def flush(self, conn: Connection[Any]) -> None:
        t = sql.Identifier(self.table)
        with conn.cursor() as cur:
            if self.rows:
                stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(
                    t, sql.SQL(", ").join(map(sql.Identifier, TIMELINE_COLUMNS))
                )
                with cur.copy(stmt) as copy:
                    for row in self.rows:
                        copy.write_row([getattr(row, c) for c in TIMELINE_COLUMNS])
            if self.posting_changes:
                # After the COPY: a transfer created and posted in this batch is found too.
                changes = self.posting_changes
                cur.execute(
                    sql.SQL(
                        "INSERT INTO {t} (owner_id, position, owner_kind, at, event_type,"
                        " outcome, amount, transfer_id, transfer_kind, debit_account_id,"
                        " credit_account_id, correlation_id, causation_id)"
                        " SELECT c.owner_id, u.position, c.owner_kind, u.at, u.event_type,"
                        " u.outcome, COALESCE(u.amount, c.amount), u.transfer_id,"
                        " c.transfer_kind, c.debit_account_id, c.credit_account_id,"
                        " u.correlation_id, u.causation_id"
                        " FROM unnest(%s::uuid[], %s::bigint[], %s::timestamptz[], %s::text[],"
                        " %s::text[], %s::bigint[], %s::text[], %s::text[])"
                        " AS u(transfer_id, position, at, event_type, outcome, amount,"
                        " correlation_id, causation_id)"
                        " JOIN {t} AS c ON c.transfer_id = u.transfer_id"
                        " AND c.event_type = 'Transfer.Created'"
                    ).format(t=t),
                    (
                        [c.transfer_id for c in changes],
                        [c.position for c in changes],
                        [c.at for c in changes],
                        [c.event_type for c in changes],
                        [c.outcome for c in changes],
                        [c.amount for c in changes],
                        [c.correlation_id for c in changes],
                        [c.causation_id for c in changes],
                    ),
                )


def payments_buffer(table: str) -> FoldBuffer[PaymentRow]:
    return FoldBuffer(PAYMENTS_TABLE, table)


def refunds_buffer(table: str) -> FoldBuffer[RefundRow]:
    return FoldBuffer(REFUNDS_TABLE, table)


def payouts_buffer(table: str) -> FoldBuffer[PayoutRow]:
    return FoldBuffer(PAYOUTS_TABLE, table)


TABLES: dict[str, tuple[str, str]] = {
    "payments": ("rm_payments", PAYMENTS_DDL),
    "refunds": ("rm_refunds", REFUNDS_DDL),
    "payouts": ("rm_payouts", PAYOUTS_DDL),
    "payment_timeline": ("rm_payment_timeline", TIMELINE_DDL),
}

BUFFERS: dict[str, Callable[[str], Any]] = {
    "payments": payments_buffer,
    "refunds": refunds_buffer,
    "payouts": payouts_buffer,
    "payment_timeline": TimelineBuffer,
}

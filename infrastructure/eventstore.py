"""The event store: eventsourcing's PostgreSQL recorder with orjson and idempotency records."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from eventsourcing.persistence import IntegrityError, StoredEvent, Transcoder
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier

from commands.idempotency import IdempotencyKeyTaken, IdempotencyRecord
from domain.schedule import DATETIME_FIELDS as SCHEDULE_DATETIME_FIELDS
from infrastructure.database import ConnectionParams
from infrastructure.settings import Settings

# Event attributes holding datetimes; everything else in our events is a JSON primitive.
# Public: the projections' decoder (``event_decoding``) applies the same rule.
DATETIME_KEYS = frozenset({"timestamp", "expires_at"}) | SCHEDULE_DATETIME_FIELDS


class OrjsonTranscoder(Transcoder):
    """Encodes event state with orjson. Datetimes go out as RFC 3339 and come back typed."""

    def encode(self, obj: Any) -> bytes:
        return orjson.dumps(obj)

    def decode(self, data: bytes) -> Any:
        state = orjson.loads(data)
        for key in DATETIME_KEYS & state.keys():
            value = state[key]
            if isinstance(value, str):
                state[key] = datetime.fromisoformat(value)
        return state


INSERT_IDEMPOTENCY = SQL(
    "INSERT INTO idempotency_keys (merchant_id, key, request_hash, status, body, position)"
    " VALUES (%s, %s, %s, %s, %s, %s)"
)
INSERT_IDEMPOTENCY_MANY = SQL(
    "INSERT INTO idempotency_keys (merchant_id, key, request_hash, status, body, position)"
    " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[], %s::bytea[],"
    " %s::bigint[])"
)

# One command's idempotency record, and the index (within the transaction's events) of
# the command's last event, or None when it wrote no event.
RecordAt = tuple[IdempotencyRecord, int | None]


def _records(kwargs: dict[str, Any]) -> list[RecordAt]:
    value = kwargs.get("idempotency")
    if value is None:
        return []
    if isinstance(value, IdempotencyRecord):  # one command: its last event is the last one
        return [(value, -1)]
    return list(value)


def _insert_records(
    curs: Cursor[DictRow], rows: list[tuple[IdempotencyRecord, int | None]]
) -> None:
    if not rows:
        return
    columns: list[list[Any]] = [[], [], [], [], [], []]
    for record, position in rows:
        for column, value in zip(
            columns,
            (
                record.merchant_id,
                record.key,
                record.request_hash,
                record.status,
                orjson.dumps(record.body_at(position)),
                position,
            ),
            strict=True,
        ):
            column.append(value)
    curs.execute(INSERT_IDEMPOTENCY_MANY, columns)


class LedgerRecorder(PostgresApplicationRecorder):
    """Writes the request's idempotency record inside the same transaction as its events.

    The library calls ``_insert_events`` before the events and
    ``_fetch_ids_after_insert_events`` after them, both inside one transaction; the
    record of a success is written after the events so it can carry their last position.
    """

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """The library's statements (table lock, NOTIFY, one unnest INSERT ... RETURNING)
        in one plain transaction, plus the idempotency records.

        The library runs them in a psycopg pipeline; with psycopg 3.3 a pipelined statement
        of about 1 MB (a few hundred transfers) never completes over a Unix socket: both
        sides wait, holding the table lock. Without the pipeline there is no such limit.
        """
        ids: Sequence[int] | None = None
        try:
            with (
                self.datastore.get_connection() as conn,
                conn.transaction(),
                conn.cursor() as curs,
            ):
                self._insert_events(curs, stored_events, **kwargs)
                if stored_events:
                    self._insert_stored_events(curs, stored_events, **kwargs)
                    ids = self._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        except IntegrityError as exc:
            if "idempotency_keys_pkey" in str(exc):
                raise IdempotencyKeyTaken(str(exc)) from exc
            raise
        return ids

    def _insert_stored_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        """Same table lock and NOTIFY as the library, then one INSERT from four plain arrays.

        The library sends an array of a composite type, which psycopg encodes as text
        with a regular expression per field (a third of a large batch's time); arrays of
        uuid, bigint, text and bytea go out in binary.
        """
        self._lock_table(curs)
        self._notify_channel(curs)
        curs.execute(
            self._insert_arrays_statement,
            (
                [e.originator_id for e in stored_events],
                [e.originator_version for e in stored_events],
                [e.topic for e in stored_events],
                [e.state for e in stored_events],
            ),
        )

    @property
    def _insert_arrays_statement(self) -> Composed:
        return SQL(
            "INSERT INTO {table} (originator_id, originator_version, topic, state)"
            " SELECT * FROM unnest(%b::uuid[], %b::bigint[], %b::text[], %b::bytea[])"
            " RETURNING notification_id"
        ).format(table=Identifier(self.datastore.schema, self.events_table_name))

    def _insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        if not stored_events:  # records of requests that wrote no event
            _insert_records(curs, [(r, None) for r, _ in _records(kwargs)])

    def _fetch_ids_after_insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        ids = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        records = _records(kwargs)
        if records and ids:
            _insert_records(
                curs, [(r, ids[index] if index is not None else None) for r, index in records]
            )
        return ids


def eventsourcing_env(
    db: ConnectionParams, settings: Settings, *, create_table: bool
) -> dict[str, str]:
    """Environment for eventsourcing's factory: PostgreSQL, our recorder and transcoder."""
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "APPLICATION_RECORDER_TOPIC": "infrastructure.eventstore:LedgerRecorder",
        "TRANSCODER_TOPIC": "infrastructure.eventstore:OrjsonTranscoder",
        "POSTGRES_DBNAME": db.dbname,
        "POSTGRES_HOST": db.host,
        "POSTGRES_PORT": db.port,
        "POSTGRES_USER": db.user,
        "POSTGRES_PASSWORD": db.password,
        "POSTGRES_POOL_SIZE": str(settings.pool_size),
        "POSTGRES_MAX_OVERFLOW": "4",
        "POSTGRES_LOCK_TIMEOUT": str(settings.lock_timeout_s),
        "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "30",
        # No SELECT 1 before every write: a dropped connection fails the save, and the
        # engine re-runs the batch (replay-safe).
        "POSTGRES_PRE_PING": "n",
        # Never enable: it let a following reader skip events under concurrent writers.
        "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
        "CREATE_TABLE": "y" if create_table else "n",
        # The engine keeps its own bounded cache; the library's stays off.
    }


__all__ = ["LedgerRecorder", "OrjsonTranscoder", "PostgresDatastore", "eventsourcing_env"]

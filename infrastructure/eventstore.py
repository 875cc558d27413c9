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
from psycopg.sql import SQL

from commands.idempotency import IdempotencyKeyTaken, IdempotencyRecord
from infrastructure.database import ConnectionParams
from infrastructure.settings import Settings

# Event attributes holding datetimes; everything else in our events is a JSON primitive.
_DATETIME_KEYS = frozenset({"timestamp", "expires_at"})


class OrjsonTranscoder(Transcoder):
    """Encodes event state with orjson. Datetimes go out as RFC 3339 and come back typed."""

    def encode(self, obj: Any) -> bytes:
        return orjson.dumps(obj)

    def decode(self, data: bytes) -> Any:
        state = orjson.loads(data)
        for key in _DATETIME_KEYS & state.keys():
            value = state[key]
            if isinstance(value, str):
                state[key] = datetime.fromisoformat(value)
        return state


INSERT_IDEMPOTENCY = SQL(
    "INSERT INTO idempotency_keys (merchant_id, key, request_hash, status, body, position)"
    " VALUES (%s, %s, %s, %s, %s, %s)"
)


def _idempotency_row(record: IdempotencyRecord, position: int | None) -> tuple[Any, ...]:
    return (
        record.merchant_id,
        record.key,
        record.request_hash,
        record.status,
        orjson.dumps(record.body_at(position)),
        position,
    )


class LedgerRecorder(PostgresApplicationRecorder):
    """Writes the request's idempotency record inside the same transaction as its events.

    The library calls ``_insert_events`` before the events and
    ``_fetch_ids_after_insert_events`` after them, both inside one transaction; the
    record of a success is written after the events so it can carry their last position.
    """

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        try:
            ids: Sequence[int] | None = super().insert_events(stored_events, **kwargs)
            return ids
        except IntegrityError as exc:
            if "idempotency_keys_pkey" in str(exc):
                raise IdempotencyKeyTaken(str(exc)) from exc
            raise

    def _insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        record: IdempotencyRecord | None = kwargs.get("idempotency")
        if record is not None and not stored_events:
            curs.execute(INSERT_IDEMPOTENCY, _idempotency_row(record, None))

    def _fetch_ids_after_insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        ids = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        record: IdempotencyRecord | None = kwargs.get("idempotency")
        if record is not None and ids:
            curs.execute(INSERT_IDEMPOTENCY, _idempotency_row(record, max(ids)))
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
        "POSTGRES_PRE_PING": "y",
        # Never enable: it let a following reader skip events under concurrent writers.
        "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
        "CREATE_TABLE": "y" if create_table else "n",
        "AGGREGATE_CACHE_MAXSIZE": str(settings.wallet_cache_size),
        "AGGREGATE_CACHE_FASTFORWARD": "y",
        "DEEPCOPY_FROM_AGGREGATE_CACHE": "y",
    }


__all__ = ["LedgerRecorder", "OrjsonTranscoder", "PostgresDatastore", "eventsourcing_env"]

"""The event store: eventsourcing's PostgreSQL recorder with orjson and idempotency records."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, ClassVar, Self, cast
from uuid import UUID

import orjson
import psycopg
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import (
    Cipher,
    Compressor,
    IntegrityError,
    Mapper,
    ProgrammingError,
    StoredEvent,
    Transcoder,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.utils import get_topic
from psycopg import Cursor
from psycopg.adapt import Dumper
from psycopg.pq import Format
from psycopg.rows import DictRow, tuple_row
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


class LedgerMapper(Mapper[UUID]):
    """The library's mapper with a cheaper ``to_stored_event`` for orjson-encoded events.

    Same output byte for byte (``tests/unit/test_writer_fastpath.py`` checks it for every
    event class): the topic and class version are looked up once per class, and the state
    goes to orjson without the transcoder, compressor and cipher indirections. With a
    compressor, a cipher or another transcoder it is the library's mapper.
    """

    def __init__(
        self,
        transcoder: Transcoder,
        compressor: Compressor | None = None,
        cipher: Cipher | None = None,
    ) -> None:
        super().__init__(transcoder, compressor, cipher)
        self._fast = type(transcoder) is OrjsonTranscoder and not compressor and not cipher
        self._classes: dict[type, tuple[str, int]] = {}

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        if not self._fast:
            return super().to_stored_event(domain_event)
        cls = type(domain_event)
        known = self._classes.get(cls)
        if known is None:
            known = self._classes[cls] = (get_topic(cls), getattr(cls, "class_version", 1))
        topic, class_version = known
        state = vars(domain_event).copy()
        originator_id = state.pop("originator_id")
        originator_version = state.pop("originator_version")
        if class_version > 1:
            state["class_version"] = class_version
        # The frozen dataclass's __init__ sets each field through object.__setattr__:
        # half of this method's time. The same object, its __dict__ filled at once.
        stored: StoredEvent = object.__new__(StoredEvent)
        object.__setattr__(
            stored,
            "__dict__",
            {
                "originator_id": originator_id,
                "originator_version": originator_version,
                "topic": topic,
                "state": orjson.dumps(state),
            },
        )
        return stored


_ARRAY_HEAD = struct.Struct("!iiiii").pack  # dimensions, has nulls, element oid, length, lbound
_EMPTY_ARRAY_HEAD = struct.Struct("!iii").pack  # no dimensions
_LENGTH = struct.Struct("!i").pack
_INT8_ITEM = struct.Struct("!iq").pack
_INT4_ITEM = struct.Struct("!ii").pack
_UUID_LENGTH = _LENGTH(16)
_NULL_ITEM = _LENGTH(-1)


class BinaryArray:
    """A one-dimensional array already in PostgreSQL's binary format, sent with ``%b``.

    psycopg dumps a list element by element in Python (a text array of bytea through a
    regular expression as well); these are built with one ``join`` per array.
    """

    __slots__ = ("data",)
    OID: ClassVar[int]
    ELEMENT_OID: ClassVar[int]

    def __init__(self, data: bytes) -> None:
        self.data = data

    @classmethod
    def _build(cls, count: int, items: bytes, has_null: bool = False) -> Self:
        if not count:
            return cls(_EMPTY_ARRAY_HEAD(0, 0, cls.ELEMENT_OID))
        return cls(_ARRAY_HEAD(1, int(has_null), cls.ELEMENT_OID, count, 1) + items)


class UuidArray(BinaryArray):
    __slots__ = ()
    OID, ELEMENT_OID = 2951, 2950

    @classmethod
    def of(cls, values: Sequence[UUID]) -> Self:
        return cls._build(len(values), _UUID_LENGTH + _UUID_LENGTH.join([v.bytes for v in values]))


class Int8Array(BinaryArray):
    """``bigint[]``; None goes out as NULL."""

    __slots__ = ()
    OID, ELEMENT_OID = 1016, 20

    @classmethod
    def of(cls, values: Sequence[int | None]) -> Self:
        items = [_NULL_ITEM if v is None else _INT8_ITEM(8, v) for v in values]
        return cls._build(len(values), b"".join(items), None in values)


class Int4Array(BinaryArray):
    __slots__ = ()
    OID, ELEMENT_OID = 1007, 23

    @classmethod
    def of(cls, values: Sequence[int]) -> Self:
        return cls._build(len(values), b"".join([_INT4_ITEM(4, v) for v in values]))


class ByteaArray(BinaryArray):
    __slots__ = ()
    OID, ELEMENT_OID = 1001, 17

    @classmethod
    def of(cls, values: Sequence[bytes]) -> Self:
        return cls._build(len(values), _length_prefixed(values))


class TextArray(BinaryArray):
    __slots__ = ()
    OID, ELEMENT_OID = 1009, 25

    @classmethod
    def of(cls, values: Sequence[str]) -> Self:
        return cls._build(len(values), _length_prefixed([v.encode() for v in values]))


def _length_prefixed(values: Sequence[bytes]) -> bytes:
    return b"".join([_LENGTH(len(v)) + v for v in values])


class _BinaryArrayDumper(Dumper):
    format = Format.BINARY

    def dump(self, obj: Any) -> bytes:
        data: bytes = obj.data
        return data


def _register(classes: Iterable[type[BinaryArray]]) -> None:
    # On psycopg's global adapters: a connection copies them when it is created, and
    # this module is imported before any connection is opened.
    for array_cls in classes:
        dumper = type(f"{array_cls.__name__}Dumper", (_BinaryArrayDumper,), {"oid": array_cls.OID})
        psycopg.adapters.register_dumper(array_cls, dumper)


_register((UuidArray, Int8Array, Int4Array, ByteaArray, TextArray))


INSERT_IDEMPOTENCY = SQL(
    "INSERT INTO idempotency_keys (merchant_id, key, request_hash, status, body, position)"
    " VALUES (%s, %s, %s, %s, %s, %s)"
)
INSERT_IDEMPOTENCY_MANY = SQL(
    "INSERT INTO idempotency_keys (merchant_id, key, request_hash, status, body, position)"
    " SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::int[], %b::bytea[],"
    " %b::bigint[])"
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
    records = [record for record, _ in rows]
    positions = [position for _, position in rows]
    curs.execute(
        INSERT_IDEMPOTENCY_MANY,
        (
            TextArray.of([r.merchant_id for r in records]),
            TextArray.of([r.key for r in records]),
            TextArray.of([r.request_hash for r in records]),
            Int4Array.of([r.status for r in records]),
            ByteaArray.of([orjson.dumps(r.body_at(p)) for r, p in rows]),
            Int8Array.of(positions),
        ),
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
                UuidArray.of([e.originator_id for e in stored_events]),  # type: ignore[misc]
                Int8Array.of([e.originator_version for e in stored_events]),
                TextArray.of([e.topic for e in stored_events]),
                ByteaArray.of([e.state for e in stored_events]),
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
        # As the library does, but with tuple rows: it builds a dict per returned row.
        assert curs.statusmessage and curs.statusmessage.startswith("INSERT")
        curs.row_factory = tuple_row  # type: ignore[assignment]
        ids = [row[0] for row in cast("list[tuple[int]]", curs.fetchall())]
        if len(ids) != len(stored_events):
            msg = (
                f"Couldn't get all notification IDs (got {len(ids)}, expected {len(stored_events)})"
            )
            raise ProgrammingError(msg)
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
        "MAPPER_TOPIC": "infrastructure.eventstore:LedgerMapper",
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


__all__ = [
    "LedgerMapper",
    "LedgerRecorder",
    "OrjsonTranscoder",
    "PostgresDatastore",
    "eventsourcing_env",
]

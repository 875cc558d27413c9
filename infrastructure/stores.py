"""PostgreSQL implementations of the ports declared by commands/, projections/, read_api/."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Mapping
from datetime import timedelta

import orjson
from psycopg_pool import ConnectionPool

from commands.idempotency import StoredResponse
from commands.model import ROLES, Principal
from infrastructure.eventstore import Int8Array, UuidArray


class PgIdempotencyStore:
    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def get(self, merchant_id: str, key: str) -> StoredResponse | None:
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT request_hash, status, body FROM idempotency_keys"
                " WHERE merchant_id = %s AND key = %s",
                (merchant_id, key),
                prepare=True,
            ).fetchone()
        if row is None:
            return None
        return StoredResponse(row[0], row[1], orjson.loads(row[2]))

    def get_many(self, scopes: list[tuple[str, str]]) -> dict[tuple[str, str], StoredResponse]:
        """Stored answers for many (merchant, key) pairs in one round trip."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT k.merchant_id, k.key, k.request_hash, k.status, k.body"
                " FROM idempotency_keys k"
                " JOIN unnest(%s::text[], %s::text[]) AS q(merchant_id, key)"
                " ON k.merchant_id = q.merchant_id AND k.key = q.key",
                ([m for m, _ in scopes], [k for _, k in scopes]),
                prepare=True,
            ).fetchall()
        return {(r[0], r[1]): StoredResponse(r[2], r[3], orjson.loads(r[4])) for r in rows}

    def purge_older_than(self, age: timedelta) -> int:
        """Drop records past their retention (at least 24 hours, see Settings)."""
        with self.pool.connection() as conn:
            cur = conn.execute("DELETE FROM idempotency_keys WHERE created_at < now() - %s", (age,))
            return cur.rowcount


class PgVersionProbe:
    """Which cached aggregates no longer match the store: one index probe per id."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def moved(self, versions: Mapping[uuid.UUID, int]) -> list[uuid.UUID]:
        """Compared in the database: only the ids that moved come back (usually none),
        not a row per id for Python to turn into a UUID and compare."""
        if not versions:
            return []
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT q.id FROM unnest(%b::uuid[], %b::bigint[]) AS q(id, version)"
                " WHERE q.version IS DISTINCT FROM (SELECT max(e.originator_version)"
                " FROM ledger_events e WHERE e.originator_id = q.id)",
                (UuidArray.of(list(versions)), Int8Array.of(list(versions.values()))),
                prepare=True,
            ).fetchall()
        return [r[0] for r in rows]


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class PgApiKeyStore:
    """API keys, stored as SHA-256 hashes: the raw key is shown once, at creation."""

    PREFIX = "lk_"

    def __init__(self, pool: ConnectionPool, cache_ttl_s: float = 10.0) -> None:
        self.pool = pool
        self.cache_ttl_s = cache_ttl_s
        self._cache: dict[str, tuple[Principal, float]] = {}

    def create(self, merchant_id: str, role: str, label: str = "") -> str:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if not merchant_id or len(merchant_id) > 200:
            raise ValueError("merchant must be 1-200 characters")
        raw = self.PREFIX + secrets.token_urlsafe(32)
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO api_keys (id, key_hash, merchant_id, role, label)"
                " VALUES (%s, %s, %s, %s, %s)",
                (uuid.uuid4(), hash_key(raw), merchant_id, role, label),
            )
        return raw

    def authenticate(self, raw: str) -> Principal | None:
        """The key's principal. Answers are cached for ``cache_ttl_s`` (a revoked key stops
        working within that time); unknown keys are not cached."""
        digest = hash_key(raw)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT merchant_id, role FROM api_keys WHERE key_hash = %s AND revoked_at IS NULL",
                (digest,),
                prepare=True,
            ).fetchone()
        if row is None:
            self._cache.pop(digest, None)
            return None
        principal = Principal(row[0], row[1])
        if len(self._cache) >= 10_000:
            self._cache.clear()
        self._cache[digest] = (principal, now + self.cache_ttl_s)
        return principal

    def count(self) -> int:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT count(*) FROM api_keys").fetchone()
        return int(row[0]) if row else 0

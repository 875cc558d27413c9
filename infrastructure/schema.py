"""Tables the service owns beside the event store, created once at start-up.

The caller (``container.bootstrap_schema``) holds an advisory lock around this: several
processes starting together would otherwise race (``tuple concurrently updated``).
"""

from __future__ import annotations

import psycopg

SCHEMA_LOCK_KEY = 0x1ED6E7  # any constant; shared by every ledger process

DDL = """
CREATE TABLE IF NOT EXISTS api_keys (
    id uuid PRIMARY KEY,
    key_hash text NOT NULL UNIQUE,
    merchant_id text NOT NULL,
    role text NOT NULL CHECK (role IN ('merchant', 'auditor', 'analyst', 'admin')),
    label text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    merchant_id text NOT NULL,
    key text NOT NULL,
    request_hash text NOT NULL,
    status integer NOT NULL,
    body bytea NOT NULL,
    position bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (merchant_id, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_created_at_idx ON idempotency_keys (created_at);
CREATE TABLE IF NOT EXISTS dead_letters (
    id bigserial PRIMARY KEY,
    kind text NOT NULL,
    subject_id uuid NOT NULL,
    reason text NOT NULL,
    detail text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    replayed_at timestamptz
);
CREATE INDEX IF NOT EXISTS dead_letters_open_idx ON dead_letters (created_at)
    WHERE replayed_at IS NULL;
CREATE TABLE IF NOT EXISTS projection_tracking (
    name text PRIMARY KEY,
    position bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
"""


def migrate(conninfo: str) -> None:
    """Create our tables idempotently (call with the schema advisory lock held)."""
    with psycopg.connect(conninfo) as conn, conn.transaction():
        conn.execute(DDL)

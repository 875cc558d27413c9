"""Shared fixtures: real PostgreSQL (embedded by default, and LEDGER_TEST_DATABASE_URL when
set), a fresh database per test, the composed ledger, an HTTP client and a live server."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, settings

from infrastructure.container import Container, build
from infrastructure.database import ConnectionParams, start_embedded
from infrastructure.settings import Settings

settings.register_profile(
    "dev", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

EXTERNAL_URL = os.environ.get("LEDGER_TEST_DATABASE_URL", "").strip()
SERVERS = ["embedded", "external"] if EXTERNAL_URL else ["embedded"]


@pytest.fixture(scope="session", params=SERVERS)
def pg_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> ConnectionParams:
    """Admin connection parameters of a real PostgreSQL server."""
    if request.param == "external":
        return ConnectionParams.from_url(EXTERNAL_URL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return start_embedded(tmp_path_factory.mktemp("ledger-state"))


@pytest.fixture
def fresh_db(pg_server: ConnectionParams) -> Iterator[ConnectionParams]:
    """A brand-new database on the server, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_server.conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield pg_server.with_dbname(name)
    with psycopg.connect(pg_server.conninfo, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "projection_poll_s": 0.05,
        "sweeper_interval_s": 0.1,
        "pool_size": 4,
        "lock_timeout_s": 10,
    }
    values.update(overrides)
    return Settings(**values)


test_settings.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@pytest.fixture
def container(fresh_db: ConnectionParams) -> Iterator[Container]:
    c = build(test_settings(), db=fresh_db)
    yield c
    c.close()


@pytest.fixture
def client(container: Container) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from infrastructure.web import create_app

    with TestClient(create_app(container, manage_lifecycle=False)) as c:
        yield c


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def live_server(container: Container) -> Iterator[str]:
    """The real ASGI app under uvicorn on a loopback port; yields its base URL."""
    import uvicorn

    from infrastructure.web import create_app

    port = _free_port()
    config = uvicorn.Config(
        create_app(container, manage_lifecycle=False),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def merchant_key(container: Container) -> str:
    return container.api_keys.create("acme", "merchant")


@pytest.fixture
def other_merchant_key(container: Container) -> str:
    return container.api_keys.create("globex", "merchant")


@pytest.fixture
def admin_key(container: Container) -> str:
    return container.api_keys.create("platform", "admin")


def auth(key: str, idem: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}"}
    if idem is not None:
        headers["Idempotency-Key"] = idem
    return headers


def new_key() -> str:
    return str(uuid.uuid4())


def wait_for_projections(container: Container, position: int, timeout: float = 10.0) -> None:
    from infrastructure.projection_runner import positions

    deadline = time.monotonic() + timeout
    while True:
        tracked, _ = positions(container.pool)
        if tracked and min(tracked.values()) >= position:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"projections {tracked} did not reach {position}")
        time.sleep(0.02)

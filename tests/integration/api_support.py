"""Helpers shared by the command-API integration tests (not a test module)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from tests.conftest import auth, new_key, wait_for_projections

PROBLEM_JSON = "application/problem+json"


def post(client: Any, path: str, key: str, body: Any = None, idem: str | None = None) -> Any:
    """POST ``body`` as JSON with a fresh idempotency key unless one is given."""
    headers = auth(key, idem or new_key())
    if body is None:
        return client.post(path, headers=headers)
    return client.post(path, json=body, headers=headers)


def created(r: Any, status: int = 201) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert "idempotent-replayed" not in r.headers
    body: dict[str, Any] = r.json()
    return body


def assert_problem(r: Any, status: int, code: str) -> dict[str, Any]:
    """An RFC 9457 problem document with the given status and stable type."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM_JSON, r.headers
    body: dict[str, Any] = r.json()
    assert body["type"] == f"/problems/{code}", body
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str)
    return body


def open_wallet(client: Any, key: str, currency: str = "USD", **extra: Any) -> str:
    r = post(client, "/v1/wallets", key, {"currency": currency, **extra})
    return str(created(r)["wallet"]["id"])


def deposit(client: Any, key: str, wallet_id: str, amount: str, currency: str = "USD") -> Any:
    body = {"wallet_id": wallet_id, "amount": amount, "currency": currency}
    return created(post(client, "/v1/deposits", key, body))


def funded_wallet(client: Any, key: str, amount: str, currency: str = "USD", **extra: Any) -> str:
    wallet_id = open_wallet(client, key, currency, **extra)
    deposit(client, key, wallet_id, amount, currency)
    return wallet_id


def head(container: Any) -> int:
    """The event store's head position (the last notification id)."""
    with container.pool.connection() as conn:
        row = conn.execute("SELECT COALESCE(MAX(notification_id), 0) FROM ledger_events").fetchone()
    return int(row[0])


def idempotency_rows(container: Any) -> int:
    with container.pool.connection() as conn:
        row = conn.execute("SELECT count(*) FROM idempotency_keys").fetchone()
    return int(row[0])


def state(container: Any, wallet_id: str) -> tuple[int, int, str]:
    """(posted, pending, status) of a wallet, rebuilt from its events in the store."""
    wallet = container.app.repository.get(UUID(wallet_id))
    return wallet.posted, wallet.pending, wallet.status


def balance(wallet_view: dict[str, Any]) -> tuple[str, str, str]:
    b = wallet_view["balance"]
    return b["posted"], b["pending"], b["available"]


def by_id(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {w["id"]: w for w in body["wallets"]}


def audit_ok(container: Any) -> Any:
    """Wait for the projections to reach the head, then run the full audit."""
    from infrastructure.audit import verify

    wait_for_projections(container, head(container))
    report = verify(container)
    assert report.ok, report.summary()
    return report

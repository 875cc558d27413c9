"""Card payments through the Stripe adapter over HTTP: the service in front of localstripe
(a stateful Stripe fake) as a real process."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
import stripe
from fastapi.testclient import TestClient

from infrastructure.audit import verify
from infrastructure.container import build
from tests.conftest import test_settings
from tests.integration.test_provider_stripe import (  # noqa: F401 - the localstripe fixture
    API_KEY,
    LOCALSTRIPE_VERSION,
    SECRET,
    client,
    localstripe_url,
    token,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def api(fresh_db: Any, localstripe_url: str) -> Iterator[tuple[TestClient, Any, str]]:  # noqa: F811
    from infrastructure.web import create_app

    settings = test_settings(
        stripe_api_key=API_KEY,
        stripe_api_base=localstripe_url,
        stripe_api_version=LOCALSTRIPE_VERSION,
        stripe_webhook_secret=SECRET,
        payment_call_timeout_s=5,
    )
    container = build(settings, db=fresh_db)
    key = container.api_keys.create("acme", "merchant")
    with TestClient(create_app(container, manage_lifecycle=False)) as http:
        yield http, container, key
    container.close()


def post(http: TestClient, key: str, path: str, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": str(uuid.uuid4())}
    return http.post(path, json=body, headers=headers)


@pytest.fixture
def sdk(client: stripe.StripeClient) -> stripe.StripeClient:  # noqa: F811 - the imported fixture
    return client


def test_card_payments_through_stripe(
    api: tuple[TestClient, Any, str], sdk: stripe.StripeClient
) -> None:
    http, container, key = api
    wallet = post(http, key, "/v1/wallets", {"currency": "USD"}).json()["wallet"]["id"]
    pay = {"wallet_id": wallet, "amount": "50.00", "currency": "USD", "method": "card"}

    r = post(http, key, "/v1/payments", {**pay, "payment_method_token": token(sdk)})
    assert r.status_code == 201, r.text
    p = r.json()["payment"]
    assert (p["status"], p["provider"], p["captured_amount"]) == ("captured", "stripe", "50.00")
    fee = p["fees"]

    r = post(http, key, f"/v1/payments/{p['id']}/refunds", {"amount": "10.00"})
    assert r.status_code == 201, r.text
    assert r.json()["payment"]["status"] == "partially_refunded"

    r = post(http, key, "/v1/payments", {**pay, "payment_method_token": token(sdk),
                                          "capture_method": "manual"})  # fmt: skip
    assert r.status_code == 201, r.text
    m = r.json()["payment"]
    assert m["status"] == "authorized"
    r = post(http, key, f"/v1/payments/{m['id']}/capture", {"amount": "30.00"})
    assert r.status_code == 200, r.text
    assert (r.json()["payment"]["status"], r.json()["payment"]["captured_amount"]) == (
        "captured",
        "30.00",
    )

    wallet_state = container.app.repository.get(UUID(wallet))
    fees = int(fee.replace(".", "")) + int(r.json()["payment"]["fees"].replace(".", ""))
    assert wallet_state.posted == 5_000 - 1_000 + 3_000 - fees
    report = verify(container)
    assert report.ok, report.summary()

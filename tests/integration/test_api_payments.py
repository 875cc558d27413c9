"""Payments end to end over HTTP: the service (uvicorn, real PostgreSQL) in front of the
sandbox PSP as a real process, webhooks delivered to the service. Each failure scenario of
the issue is one test; every test ends with ``ledger audit verify`` passing."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

import httpx
import pytest

from commands.handlers import derived_id
from commands.model import CommandRequest, CreatePayment, StartPaymentAttempt
from commands.payments.ports import CallOutcome, WebhookEvent
from domain.money import Money
from domain.payment import ProviderUpdate
from domain.principal import Principal
from infrastructure.audit import verify
from infrastructure.container import Container, build
from tests.conftest import _free_port, test_settings
from tests.integration.test_psp_sandbox import (
    DECLINING,
    SECRET,
    VISA,
    running_sandbox,
    set_faults,
    tokenize,
)
from tests.integration.test_psp_sandbox import ledger as psp_ledger

pytestmark = pytest.mark.integration

PROVIDERS = ("zenith", "ramp", "monnify")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("psp-sandbox-api") / "server.log"
    with running_sandbox(log) as url:
        yield url


@pytest.fixture
def psp(sandbox: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox, timeout=10) as client:
        assert client.post("/_reset").status_code == 204
        yield client


class Service:
    def __init__(self, container: Container, url: str, psp: httpx.Client) -> None:
        self.container = container
        self.url = url
        self.psp = psp
        self.http = httpx.Client(base_url=url, timeout=30)
        self.key = container.api_keys.create("acme", "merchant")
        self.admin = container.api_keys.create("platform", "admin")

    def post(self, path: str, body: Any = None, *, idem: str | None = None, key: str | None = None,
             raw: bytes | None = None) -> httpx.Response:  # fmt: skip
        headers = {"Authorization": f"Bearer {key or self.key}",
                   "Idempotency-Key": idem or str(uuid.uuid4())}  # fmt: skip
        if raw is not None:
            headers["Content-Type"] = "application/json"
            return self.http.post(path, content=raw, headers=headers)
        return self.http.post(path, json=body, headers=headers)

    def get_payment(self, payment_id: str) -> dict[str, Any]:
        r = self.http.get(
            f"/v1/payments/{payment_id}", headers={"Authorization": f"Bearer {self.key}"}
        )
        assert r.status_code == 200, r.text
        return r.json()["payment"]

    def wallet(self, currency: str = "USD", funds: str | None = None) -> str:
        r = self.post("/v1/wallets", {"currency": currency})
        assert r.status_code == 201, r.text
        wallet_id = r.json()["wallet"]["id"]
        if funds:
            r = self.post(
                "/v1/deposits", {"wallet_id": wallet_id, "amount": funds, "currency": currency}
            )
            assert r.status_code == 201, r.text
        return str(wallet_id)

    def balance(self, wallet_id: str) -> tuple[int, int]:
        w = self.container.app.repository.get(UUID(wallet_id))
        return w.posted, w.pending

    def pay(self, wallet_id: str, amount: str = "100.00", *, provider: str = "zenith",
            card: str = VISA, capture: str = "automatic", currency: str = "USD",
            idem: str | None = None, **extra: Any) -> httpx.Response:  # fmt: skip
        token = tokenize(self.psp, provider, card)
        body = {"wallet_id": wallet_id, "amount": amount, "currency": currency, "method": "card",
                "payment_method_token": token, "capture_method": capture, **extra}  # fmt: skip
        return self.post("/v1/payments", body, idem=idem)

    def wait_payment(self, payment_id: str, predicate: Callable[[dict[str, Any]], bool],
                     timeout: float = 15) -> dict[str, Any]:  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            p = self.get_payment(payment_id)
            if predicate(p):
                return p
            if time.monotonic() > deadline:
                raise AssertionError(f"payment never got there: {p}")
            time.sleep(0.1)

    def charges(self, payment_id: str) -> list[dict[str, Any]]:
        """Every authorization the sandbox made for this payment, at every provider."""
        return psp_ledger(self.psp, kind="authorization", reference=payment_id)

    def audit(self) -> None:
        report = verify(self.container)
        assert report.ok, report.summary()


@pytest.fixture
def svc(fresh_db: Any, sandbox: str, psp: httpx.Client) -> Iterator[Service]:
    import uvicorn

    from infrastructure.web import create_app

    port = _free_port()
    settings = test_settings(
        port=port,
        psp_sandbox_url=sandbox,
        psp_sandbox_secret=SECRET,
        payment_call_timeout_s=1.0,
        payment_budget_s=15,
        payment_worker_interval_s=0.2,
        payment_resume_after_s=0.5,
        payment_routing=json.dumps(
            [{"name": "preferred", "providers": list(PROVIDERS), "strategy": "preference"}]
        ),
    )
    container = build(settings, db=fresh_db)
    server = uvicorn.Server(uvicorn.Config(create_app(container, manage_lifecycle=False),
                                           host="127.0.0.1", port=port, log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    for provider in PROVIDERS:
        r = psp.put(
            f"/_config/{provider}", json={"webhook_url": f"{url}/v1/webhooks/psp/{provider}"}
        )
        assert r.status_code == 200, r.text
    service = Service(container, url, psp)
    yield service
    service.http.close()
    server.should_exit = True
    thread.join(timeout=10)
    container.close()


def minor(text: str) -> int:
    return Money.parse(text, "USD").minor


# ---- the happy paths --------------------------------------------------------------------------


def test_a_card_payment_end_to_end(svc: Service) -> None:
    wallet = svc.wallet()
    r = svc.pay(wallet, "100.00", metadata={"order": "o-1"})
    assert r.status_code == 201, r.text
    p = r.json()["payment"]
    assert (p["status"], p["provider"], p["captured_amount"], p["fees"]) == (
        "captured", "zenith", "100.00", "3.20",
    )  # fmt: skip
    assert svc.balance(wallet) == (minor("96.80"), 0)
    assert len(svc.charges(p["id"])) == 1
    svc.audit()


def test_manual_capture_partial_then_refunds(svc: Service) -> None:
    wallet = svc.wallet(funds="10.00")  # refunds need the fee back from the merchant
    p = svc.pay(wallet, "100.00", capture="manual").json()["payment"]
    assert p["status"] == "authorized" and p["authorization_expires_at"]
    assert svc.balance(wallet) == (1_000, 0)  # an authorization moves no money
    r = svc.post(f"/v1/payments/{p['id']}/capture", {"amount": "60.00"})
    assert r.status_code == 200, r.text
    p = r.json()["payment"]
    assert (p["status"], p["captured_amount"], p["released_amount"]) == (
        "captured",
        "60.00",
        "40.00",
    )
    fee = minor(p["fees"])
    assert svc.balance(wallet) == (7_000 - fee, 0)
    r = svc.post(f"/v1/payments/{p['id']}/refunds", {"amount": "10.00"})
    assert r.status_code == 201, r.text
    assert r.json()["payment"]["status"] == "partially_refunded"
    r = svc.post(f"/v1/payments/{p['id']}/refunds", {"amount": "50.01"})
    assert r.status_code == 422 and r.json()["type"] == "/problems/refund-exceeds-captured"
    r = svc.post(f"/v1/payments/{p['id']}/refunds")
    assert r.status_code == 201, r.text
    assert r.json()["payment"]["status"] == "refunded"
    assert svc.balance(wallet) == (1_000 - fee, 0)  # a refund does not return the fee
    svc.audit()


def test_cancel_an_authorization_voids_it_at_the_provider(svc: Service) -> None:
    wallet = svc.wallet()
    p = svc.pay(wallet, capture="manual").json()["payment"]
    r = svc.post(f"/v1/payments/{p['id']}/cancel")
    assert r.status_code == 200, r.text
    assert (r.json()["payment"]["status"], r.json()["payment"]["cancel_reason"]) == (
        "canceled",
        "requested",
    )
    assert len(psp_ledger(svc.psp, kind="void", reference=p["id"])) == 1
    r = svc.post(f"/v1/payments/{p['id']}/capture")
    assert r.status_code == 409, r.text
    svc.audit()


def test_a_upi_payment_goes_to_the_provider_that_takes_upi(svc: Service) -> None:
    wallet = svc.wallet("INR")
    token = svc.psp.post("/ramp/tokens", json={"method": "upi", "upi": {"vpa": "asha@upi"}}).json()[
        "id"
    ]
    r = svc.post("/v1/payments", {"wallet_id": wallet, "amount": "500.00", "currency": "INR",
                                  "method": "upi", "payment_method_token": token})  # fmt: skip
    assert r.status_code == 201, r.text
    p = r.json()["payment"]
    assert (p["status"], p["provider"]) == ("captured", "ramp")
    svc.audit()


# ---- bad input ----------------------------------------------------------------------------


def test_a_card_number_anywhere_is_refused_and_never_stored(svc: Service) -> None:
    wallet = svc.wallet()
    before = svc.container.app.recorder.max_notification_id()
    for body in (
        {"wallet_id": wallet, "amount": "1.00", "currency": "USD", "method": "card",
         "payment_method_token": "4242424242424242"},
        {"wallet_id": wallet, "amount": "1.00", "currency": "USD", "method": "card",
         "payment_method_token": "tok_x", "metadata": {"note": "card 4242 4242 4242 4242"}},
    ):  # fmt: skip
        r = svc.post("/v1/payments", body)
        assert r.status_code == 422, r.text
        assert r.json()["type"] == "/problems/card-number-rejected"
        assert "4242" not in r.text
    assert svc.container.app.recorder.max_notification_id() == before
    with svc.container.pool.connection() as conn:
        rows = conn.execute(
            "SELECT count(*) FROM idempotency_keys WHERE body::text LIKE '%4242%'"
        ).fetchone()
    assert rows[0] == 0


def test_bad_amounts_and_unknown_wallets_are_problems(svc: Service) -> None:
    wallet = svc.wallet()
    for amount, code in (
        ("0", "invalid-amount"),
        ("-1.00", "invalid-amount"),
        ("1.001", "invalid-amount"),
    ):
        r = svc.pay(wallet, amount)
        assert r.status_code == 422, r.text
        assert r.json()["type"] in (f"/problems/{code}", "/problems/validation-error")
    r = svc.pay(str(uuid.uuid4()))
    assert r.status_code == 404, r.text
    r = svc.post("/v1/payments", {"wallet_id": wallet, "amount": 1.5, "currency": "USD",
                                  "method": "card", "payment_method_token": "tok"})  # fmt: skip
    assert r.status_code == 422


# ---- the failure scenarios -------------------------------------------------------------------


def test_the_customer_clicks_pay_twice_one_charge(svc: Service) -> None:
    wallet = svc.wallet()
    token = tokenize(svc.psp, "zenith")
    body = {"wallet_id": wallet, "amount": "25.00", "currency": "USD", "method": "card",
            "payment_method_token": token}  # fmt: skip
    idem = str(uuid.uuid4())
    results: list[httpx.Response] = []

    def click() -> None:
        results.append(svc.post("/v1/payments", body, idem=idem))

    clicks = [threading.Thread(target=click) for _ in range(2)]
    for t in clicks:
        t.start()
    for t in clicks:
        t.join()
    assert sorted(r.status_code for r in results) in ([201, 409], [201, 201])
    again = svc.post("/v1/payments", body, idem=idem)  # the response to the client was lost
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    pid = again.json()["payment"]["id"]
    assert again.json()["payment"]["status"] == "captured"
    assert len(svc.charges(pid)) == 1
    other = svc.post("/v1/payments", {**body, "amount": "26.00"}, idem=idem)
    assert other.status_code == 422 and other.json()["type"] == "/problems/idempotency-key-reused"
    assert svc.balance(wallet)[0] == minor("25.00") - minor(again.json()["payment"]["fees"])
    svc.audit()


def test_a_decline_fails_the_payment_without_retrying(svc: Service) -> None:
    wallet = svc.wallet()
    r = svc.pay(wallet, card=DECLINING)
    assert r.status_code == 201, r.text
    p = r.json()["payment"]
    assert (p["status"], p["failure_reason"], len(p["attempts"])) == ("failed", "card_declined", 1)
    assert svc.balance(wallet) == (0, 0)
    svc.audit()


def test_the_providers_answer_is_dropped_no_second_charge(svc: Service) -> None:
    wallet = svc.wallet()
    set_faults(svc.psp, "zenith", drop_response_rate=1.0)
    r = svc.pay(wallet, "40.00")
    assert r.status_code == 201, r.text
    p = r.json()["payment"]
    assert p["status"] == "captured", p
    assert [a["provider"] for a in p["attempts"]] == ["zenith"]
    assert len(svc.charges(p["id"])) == 1
    svc.audit()


def test_an_authorized_webhook_before_the_lost_answer_still_ends_captured(svc: Service) -> None:
    """The race CI met: the answer to an automatic-capture charge is lost, and the
    provider's ``authorized`` webhook settles the unknown outcome before its ``captured``
    webhook arrives. The payment must not be answered ``authorized``: a status query says
    the provider captured it. Made deterministic: webhooks go nowhere, and the
    ``authorized`` webhook is handed to the service while the charge call returns."""
    r = svc.psp.put("/_config/zenith", json={"webhook_url": "http://127.0.0.1:9/nowhere"})
    assert r.status_code == 200, r.text
    set_faults(svc.psp, "zenith", drop_response_rate=1.0)
    processor = svc.container.payments.processor
    real = processor.providers["zenith"]
    webhooks: list[str] = []

    class AuthorizedWebhookFirst:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def authorize(self, request: Any) -> Any:
            result = real.authorize(request)
            assert result.outcome is CallOutcome.UNKNOWN, result
            (charge,) = svc.charges(request.reference)
            update = ProviderUpdate("authorized", "zenith:evt_first", "zenith",
                                    amount=request.amount, provider_ref=charge["object_id"])  # fmt: skip
            event = WebhookEvent("evt_first", "payment", request.reference, update)
            webhooks.append(str(processor.handle_webhook([event], "webhook:zenith:evt_first")))
            return result

    processor.providers["zenith"] = AuthorizedWebhookFirst()
    try:
        r = svc.pay(svc.wallet(), "40.00")
    finally:
        processor.providers["zenith"] = real
    assert r.status_code == 201, r.text
    assert webhooks, "the authorized webhook was not handed over"
    p = r.json()["payment"]
    assert (p["status"], p["captured_amount"]) == ("captured", "40.00"), p
    assert len(svc.charges(p["id"])) == 1
    svc.audit()


def test_a_timeout_after_the_charge_is_settled_by_a_status_query(svc: Service) -> None:
    wallet = svc.wallet()
    set_faults(svc.psp, "zenith", timeout_after_charge_rate=1.0, hang_ms=3000)
    r = svc.pay(wallet, "40.00")
    assert r.status_code == 201, r.text
    p = r.json()["payment"]
    assert p["status"] == "captured", p
    assert len(svc.charges(p["id"])) == 1
    svc.audit()


def test_a_failing_provider_fails_over_and_its_breaker_opens(svc: Service) -> None:
    wallet = svc.wallet()
    set_faults(svc.psp, "zenith", error_rate=1.0)
    # The service routes by preference: zenith, ramp, monnify (see the svc fixture).
    tried: list[list[str]] = []
    for _ in range(12):
        tokens = {p: tokenize(svc.psp, p) for p in ("ramp", "monnify")}
        p = svc.pay(wallet, "10.00", payment_method_tokens=tokens).json()["payment"]
        assert p["status"] == "captured", p
        assert p["provider"] != "zenith"
        assert len(svc.charges(p["id"])) == 1
        tried.append([a["provider"] for a in p["attempts"]])
    assert tried[0][0] == "zenith"  # first it tried zenith, then failed over
    # Once zenith's breaker is open, payments no longer try it at all.
    assert tried[-1] == [tried[-1][0]] and tried[-1][0] != "zenith", tried
    body = svc.container.payments.processor.health.snapshots()["zenith"]
    assert body.state == "open"
    # The read API shows the same breakers.
    q = "{ providers { name health breakerState successRate callsInWindow } }"
    r = svc.http.post(
        "/graphql", json={"query": q}, headers={"Authorization": f"Bearer {svc.admin}"}
    )
    assert r.status_code == 200, r.text
    rows = {row["name"]: row for row in r.json()["data"]["providers"]}
    assert set(rows) == set(PROVIDERS)
    assert (rows["zenith"]["health"], rows["zenith"]["breakerState"]) == ("down", "open")
    assert rows["zenith"]["successRate"] < 0.5
    served = [rows[n] for n in ("ramp", "monnify") if rows[n]["callsInWindow"]]
    assert served and all(row["health"] == "healthy" for row in served)
    assert all(row["successRate"] == 1.0 for row in served)
    svc.audit()


def test_the_service_crashed_after_recording_the_request(svc: Service) -> None:
    """The payment was recorded and then the process died: the client's retry with the same
    key resumes it and answers the result, and the customer is charged once."""
    wallet = svc.wallet()
    token = tokenize(svc.psp, "zenith")
    raw = json.dumps({"wallet_id": wallet, "amount": "30.00", "currency": "USD",
                      "method": "card", "payment_method_token": token}).encode()  # fmt: skip
    idem = str(uuid.uuid4())
    from commands.api.deps import request_hash

    pid = derived_id("payment", "acme", idem)
    acme = Principal("acme", "merchant")
    engine = svc.container.engine
    out = engine.execute(CommandRequest(
        CreatePayment(pid, UUID(wallet), Money.parse("30.00", "USD"), "card", token, "automatic",
                      request_hash("POST", "/v1/payments", raw)),
        acme, "crashed-request"))  # fmt: skip
    assert out.status == 201
    r = svc.post("/v1/payments", idem=idem, raw=raw)
    assert r.status_code == 201, r.text
    assert r.json()["payment"]["id"] == str(pid)
    assert r.json()["payment"]["status"] == "captured"
    assert len(svc.charges(str(pid))) == 1
    svc.audit()


def test_the_service_crashed_after_calling_the_provider(svc: Service) -> None:
    """The attempt was recorded and the provider charged, then the process died before the
    answer was recorded: the recovery worker queries the provider and records the capture."""
    wallet = svc.wallet()
    token = tokenize(svc.psp, "zenith")
    pid = uuid.uuid4()
    acme = Principal("acme", "merchant")
    engine = svc.container.engine
    engine.execute(CommandRequest(
        CreatePayment(pid, UUID(wallet), Money.parse("30.00", "USD"), "card", token, "automatic", "fp"),
        acme, "c"))  # fmt: skip
    engine.execute(
        CommandRequest(StartPaymentAttempt(pid, "zenith"), Principal("system", "admin"), "c")
    )
    charged = svc.psp.post("/zenith/authorizations", headers={"Idempotency-Key": f"{pid}:1"}, json={
        "reference": str(pid), "amount": 3_000, "currency": "USD", "method": "card",
        "token": token, "capture": True})  # fmt: skip
    assert charged.status_code == 201, charged.text
    p = svc.wait_payment(str(pid), lambda p: p["status"] == "captured")
    assert p["captured_amount"] == "30.00"
    assert len(svc.charges(str(pid))) == 1
    svc.audit()


def test_a_ledger_write_fails_and_is_retried_with_no_half_state(svc: Service) -> None:
    from eventsourcing.persistence import OperationalError

    wallet = svc.wallet()
    recorder = svc.container.engine.app.events.recorder  # where the writer saves a batch
    real_insert = recorder.insert_events
    failures = {"left": 1}

    def flaky_insert(items: Any, **kw: Any) -> Any:
        if failures["left"] and any(e.topic.endswith(".Captured") for e in items):
            failures["left"] -= 1
            raise OperationalError("connection lost mid-commit (injected)")
        return real_insert(items, **kw)

    recorder.insert_events = flaky_insert  # type: ignore[method-assign]
    try:
        p = svc.pay(wallet, "20.00").json()["payment"]
    finally:
        recorder.insert_events = real_insert  # type: ignore[method-assign]
    assert failures["left"] == 0
    assert p["status"] == "captured", p
    assert svc.balance(wallet)[0] == minor("20.00") - minor(p["fees"])
    assert len(svc.charges(p["id"])) == 1
    svc.audit()


def test_webhooks_twice_and_out_of_order_settle_an_async_payment_once(svc: Service) -> None:
    wallet = svc.wallet()
    svc.psp.put("/_config/zenith", json={"mode": "async", "async_delay_ms": 500})
    set_faults(
        svc.psp,
        "zenith",
        duplicate_webhook_rate=1.0,
        out_of_order_webhooks=True,
        reorder_window_ms=100,
    )
    r = svc.pay(wallet, "15.00")
    assert r.status_code == 201, r.text
    p = r.json()["payment"]
    # The provider answers by webhook only: "processing", unless a slow machine let the
    # webhook in before the answer was written.
    assert p["status"] in ("processing", "captured"), p
    p = svc.wait_payment(p["id"], lambda p: p["status"] == "captured")
    time.sleep(0.5)  # the duplicates arrive too
    assert svc.balance(wallet)[0] == minor("15.00") - minor(p["fees"])
    assert len(svc.charges(p["id"])) == 1
    svc.audit()


def test_a_dispute_is_taken_then_lost_by_accepting_it(svc: Service) -> None:
    wallet = svc.wallet()
    p = svc.pay(wallet, "50.00").json()["payment"]
    net = minor("50.00") - minor(p["fees"])
    provider_id = svc.psp.get("/zenith/payments", params={"reference": p["id"]}).json()["data"][0][
        "id"
    ]
    r = svc.psp.post("/_disputes", json={"provider": "zenith", "payment_id": provider_id})
    assert r.status_code in (200, 201), r.text
    svc.wait_payment(p["id"], lambda p: p["status"] == "disputed")
    assert svc.balance(wallet)[0] == net - minor("50.00")
    r = svc.post(
        f"/v1/disputes/{p['id']}/evidence", {"evidence": {"tracking": "1Z999AA10123456784"}}
    )
    assert r.status_code == 200, r.text
    r = svc.post(f"/v1/disputes/{p['id']}/accept")
    assert r.status_code == 200, r.text
    assert r.json()["payment"]["status"] == "lost"
    assert svc.balance(wallet)[0] == net - minor("50.00")
    svc.audit()


def test_a_dispute_won_returns_the_money(svc: Service) -> None:
    wallet = svc.wallet()
    p = svc.pay(wallet, "50.00").json()["payment"]
    net = minor("50.00") - minor(p["fees"])
    provider_id = svc.psp.get("/zenith/payments", params={"reference": p["id"]}).json()["data"][0][
        "id"
    ]
    dispute = svc.psp.post(
        "/_disputes", json={"provider": "zenith", "payment_id": provider_id}
    ).json()
    svc.wait_payment(p["id"], lambda p: p["status"] == "disputed")
    r = svc.psp.post(f"/_disputes/{dispute['id']}/resolve", json={"outcome": "won"})
    assert r.status_code == 200, r.text
    svc.wait_payment(p["id"], lambda p: p["status"] == "won")
    assert svc.balance(wallet)[0] == net
    svc.audit()


def test_an_authorization_expires_and_cannot_be_captured(svc: Service) -> None:
    wallet = svc.wallet()
    svc.psp.put("/_config/zenith", json={"auth_ttl_s": 1})
    p = svc.pay(wallet, capture="manual").json()["payment"]
    assert p["status"] == "authorized"
    p = svc.wait_payment(p["id"], lambda p: p["status"] == "canceled")
    assert p["cancel_reason"] == "authorization_expired"
    r = svc.post(f"/v1/payments/{p['id']}/capture")
    assert r.status_code == 409 and r.json()["type"] == "/problems/authorization-expired"
    svc.audit()


def test_a_refund_races_a_dispute(svc: Service) -> None:
    wallet = svc.wallet()
    p = svc.pay(wallet, "80.00").json()["payment"]
    provider_id = svc.psp.get("/zenith/payments", params={"reference": p["id"]}).json()["data"][0][
        "id"
    ]
    results: dict[str, httpx.Response] = {}

    def refund() -> None:
        results["refund"] = svc.post(f"/v1/payments/{p['id']}/refunds", {"amount": "30.00"})

    def dispute() -> None:
        results["dispute"] = svc.psp.post(
            "/_disputes", json={"provider": "zenith", "payment_id": provider_id}
        )

    threads = [threading.Thread(target=refund), threading.Thread(target=dispute)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    p = svc.wait_payment(p["id"], lambda p: p["status"] == "disputed")
    refunded = results["refund"].status_code == 201
    # Either the refund reached the provider first (then the dispute covers the rest), or
    # the dispute did (then the refund is refused, by us or by the provider).
    assert results["refund"].status_code in (201, 402, 409), results["refund"].text
    assert p["refunded_amount"] == ("30.00" if refunded else "0.00")
    svc.audit()


def test_pay_outs_paid_and_failed(svc: Service) -> None:
    wallet = svc.wallet(funds="500.00")
    r = svc.post("/v1/payouts", {"wallet_id": wallet, "amount": "100.00", "currency": "USD",
                                 "provider": "zenith",
                                 "destination": {"account_number": "0123456789", "bank_code": "011"}})  # fmt: skip
    assert r.status_code == 201, r.text
    po = r.json()["payout"]
    assert (po["status"], po["destination"]["account_number_last4"]) == ("paid", "6789")
    fee = minor(po["fee"])
    assert svc.balance(wallet) == (minor("400.00") - fee, 0)
    r = svc.post("/v1/payouts", {"wallet_id": wallet, "amount": "50.00", "currency": "USD",
                                 "provider": "zenith",
                                 "destination": {"account_number": "0000000000", "bank_code": "011"}})  # fmt: skip
    assert r.status_code == 201, r.text
    assert r.json()["payout"]["status"] == "failed"
    assert svc.balance(wallet) == (minor("400.00") - fee, 0)
    r = svc.post("/v1/payouts", {"wallet_id": wallet, "amount": "1000.00", "currency": "USD",
                                 "provider": "zenith",
                                 "destination": {"account_number": "0123456789", "bank_code": "011"}})  # fmt: skip
    assert r.status_code == 422 and r.json()["type"] == "/problems/insufficient-funds"
    svc.audit()


def test_webhooks_with_a_bad_signature_or_for_an_unknown_provider_are_refused(svc: Service) -> None:
    from infrastructure.psp_sandbox import sign_webhook

    body = json.dumps({"id": "evt_1", "type": "payment.captured", "provider": "zenith",
                       "data": {"object": "payment"}}).encode()  # fmt: skip
    headers = sign_webhook("whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB", "evt_1", body)
    r = svc.http.post("/v1/webhooks/psp/zenith", content=body, headers=headers)
    assert r.status_code == 400 and r.json()["type"] == "/problems/webhook-rejected"
    r = svc.http.post("/v1/webhooks/psp/nobody", content=body, headers=headers)
    assert r.status_code == 404
    # Correctly signed, for a reference that is not ours: accepted and ignored.
    good = json.dumps({"id": "evt_2", "type": "payment.captured", "provider": "zenith",
                       "timestamp": "2026-01-01T00:00:00.000000Z", "sequence": 1,
                       "data": {"object": "payment", "id": "pay_x", "reference": "not-ours",
                                "status": "captured", "amount": 100, "currency": "USD",
                                "captured_amount": 100, "fee": 0, "version": 2}}).encode()  # fmt: skip
    r = svc.http.post(
        "/v1/webhooks/psp/zenith", content=good, headers=sign_webhook(SECRET, "evt_2", good)
    )
    assert r.status_code == 200, r.text
    assert r.json()["outcomes"] == {"ignored": 1}

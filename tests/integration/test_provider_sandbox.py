"""The sandbox PSP adapter (infrastructure/providers/sandbox.py) against the real sandbox
process: every call's classification, each injected fault, status queries by reference,
idempotency keys, pay-outs and real signed webhook deliveries."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from commands.payments.ports import (
    CallOutcome,
    CallResult,
    ChargeRequest,
    PaymentOperation,
    PaymentProvider,
    PayoutRequest,
    PayoutUpdate,
    WebhookEvent,
    WebhookRejected,
)
from domain.context import CommandContext
from domain.money import Money
from domain.payment import MANUAL, Payment, ProviderUpdate
from infrastructure.providers.sandbox import SandboxProvider
from infrastructure.psp_sandbox import new_secret, sign_webhook
from tests.conftest import _free_port
from tests.integration.test_psp_sandbox import (
    CURRENCY,
    DECLINING,
    SECRET,
    VISA,
    running_sandbox,
    wait_until,
)

pytestmark = pytest.mark.integration

CLOSED_ACCOUNT = "0000000000"


class Receiver:
    """A webhook endpoint: keeps every delivery's raw headers and body."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    receiver.received.append((dict(self.headers.items()), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", _free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def deliveries(self) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return list(self.received)

    def clear(self) -> None:
        with self.lock:
            self.received.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def sandbox_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("provider-sandbox") / "server.log"
    with running_sandbox(log) as url:
        yield url


@pytest.fixture
def admin(sandbox_url: str, receiver: Receiver) -> Iterator[httpx.Client]:
    """The sandbox's admin API, reset before each test."""
    with httpx.Client(base_url=sandbox_url, timeout=10) as client:
        assert client.post("/_reset").status_code == 204
        receiver.clear()
        yield client


@pytest.fixture
def providers(admin: httpx.Client, sandbox_url: str) -> Iterator[dict[str, SandboxProvider]]:
    made = {name: SandboxProvider(name, sandbox_url, SECRET, timeout_s=5) for name in CURRENCY}
    yield made
    for provider in made.values():
        provider.close()


@pytest.fixture
def zenith(providers: dict[str, SandboxProvider]) -> SandboxProvider:
    return providers["zenith"]


# ---- helpers -----------------------------------------------------------------------------


def key() -> str:
    return str(uuid.uuid4())


def ref(prefix: str = "pay") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def tokenize(admin: httpx.Client, provider: str = "zenith", number: str = VISA) -> str:
    r = admin.post(f"/{provider}/tokens", json={
        "method": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2099},
    })  # fmt: skip
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def charge(
    token: str, *, provider: str = "zenith", reference: str | None = None,
    idem: str | None = None, amount: int = 10_000, capture: bool = False,
    currency: str | None = None, method: str = "card",
) -> ChargeRequest:  # fmt: skip
    return ChargeRequest(
        reference=reference or ref(), idempotency_key=idem or key(), amount=amount,
        currency=currency or CURRENCY[provider], method=method, token=token, capture=capture,
    )  # fmt: skip


def operation(
    request: ChargeRequest, provider_ref: str | None, amount: int | None = None,
    reference: str | None = None,
) -> PaymentOperation:  # fmt: skip
    return PaymentOperation(
        payment_reference=request.reference, provider_ref=provider_ref, idempotency_key=key(),
        currency=request.currency, amount=amount, reference=reference,
    )  # fmt: skip


def ledger(admin: httpx.Client, **filters: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = admin.get("/_ledger", params=filters).json()["data"]
    return data


def set_faults(admin: httpx.Client, provider: str, **faults: object) -> None:
    r = admin.put(f"/_faults/{provider}", json=faults)
    assert r.status_code == 200, r.text


def configure(admin: httpx.Client, provider: str, **config: object) -> None:
    r = admin.put(f"/_config/{provider}", json=config)
    assert r.status_code == 200, r.text


def authorized(
    provider: SandboxProvider, admin: httpx.Client, **kw: Any
) -> tuple[ChargeRequest, CallResult]:
    """A fresh authorization: (request, its OK result)."""
    request = charge(tokenize(admin, provider.name), provider=provider.name, **kw)
    result = provider.authorize(request)
    assert result.outcome is CallOutcome.OK, result
    return request, result


def statuses(updates: tuple[ProviderUpdate | PayoutUpdate, ...]) -> list[str]:
    return [u.status for u in updates]


def payment_update(result: CallResult) -> ProviderUpdate:
    assert isinstance(result.update, ProviderUpdate), result
    return result.update


# ---- the port and the catalogue ----------------------------------------------------------


def test_it_is_a_payment_provider(zenith):
    provider: PaymentProvider = zenith
    assert provider.name == "zenith"
    assert SECRET not in repr(zenith)


def test_supports_and_fees_come_from_the_sandbox_config(providers):
    zenith, ramp, monnify = providers["zenith"], providers["ramp"], providers["monnify"]
    assert zenith.supports("card", "USD") and zenith.supports("digital_wallet", "EUR")
    assert not zenith.supports("upi", "USD") and not zenith.supports("card", "INR")
    assert ramp.supports("upi", "INR") and not monnify.supports("upi", "NGN")
    assert monnify.supports("bank_transfer", "NGN") and not ramp.supports("bank_transfer", "INR")
    assert zenith.fee("card", "USD", 10_000) == 290 + 30
    assert zenith.fee("card", "USD", 17) == 17  # never more than the amount
    assert ramp.fee("upi", "INR", 10_001) == 30  # half up: 30.003
    assert monnify.fee("card", "NGN", 100_000_000) == 200_000  # capped
    catalogue = monnify.catalogue()
    assert catalogue is not None and catalogue.payout_fee == 1_000
    with pytest.raises(ValueError):
        zenith.fee("upi", "USD", 10_000)


@pytest.mark.parametrize("name", ["zenith", "ramp", "monnify"])
def test_the_fee_matches_what_the_sandbox_takes_on_capture(providers, admin, name):
    provider = providers[name]
    request, _ = authorized(provider, admin, amount=123_457)
    status = provider.payment_status(request.reference)
    captured = provider.capture(operation(request, status.provider_ref))
    update = payment_update(captured)
    assert update.fee == provider.fee("card", request.currency, 123_457) > 0


# ---- happy paths ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["zenith", "ramp", "monnify"])
def test_authorize_capture_part_refund_and_the_status_query(providers, admin, name):
    provider = providers[name]
    request, result = authorized(provider, admin)
    auth = payment_update(result)
    assert auth.status == "authorized" and auth.amount == 10_000 and auth.provider == name
    assert result.provider_ref and result.provider_ref.startswith("pay_")
    assert auth.provider_ref == result.provider_ref
    assert auth.authorization_expires_at is not None
    assert auth.authorization_expires_at > datetime.now(UTC) + timedelta(days=6)
    assert result.latency_ms > 0

    capture_op = operation(request, result.provider_ref, amount=6_000)
    captured = provider.capture(capture_op)
    cap = payment_update(captured)
    assert captured.outcome is CallOutcome.OK
    assert (cap.status, cap.amount, cap.fee) == (
        "captured", 6_000, provider.fee("card", request.currency, 6_000),
    )  # fmt: skip
    assert cap.provider_ref == result.provider_ref and captured.latency_ms > 0

    r1 = operation(request, result.provider_ref, amount=2_000, reference=ref("refund"))
    refunded = provider.refund(r1)
    upd = payment_update(refunded)
    assert refunded.outcome is CallOutcome.OK
    assert (upd.status, upd.amount, upd.refund_id) == ("refunded", 2_000, r1.reference)
    assert upd.provider_ref == result.provider_ref
    assert refunded.provider_ref and refunded.provider_ref.startswith("re_")
    r2 = operation(request, result.provider_ref, reference=ref("refund"))
    rest = payment_update(provider.refund(r2))
    assert (rest.amount, rest.refund_id) == (4_000, r2.reference)  # the rest

    more = provider.refund(operation(request, result.provider_ref, 1, ref("refund")))
    assert (more.outcome, more.code) == (CallOutcome.REJECTED, "invalid_state")
    assert more.definite

    status = provider.payment_status(request.reference)
    assert status.outcome is CallOutcome.OK and status.found
    assert status.provider_ref == result.provider_ref
    assert statuses(status.updates) == ["authorized", "captured", "refunded", "refunded"]
    _, cap2, *refunds = status.updates
    assert (cap2.amount, cap2.fee) == (6_000, cap.fee)
    assert [(u.refund_id, u.amount) for u in refunds] == [
        (r1.reference, 2_000), (r2.reference, 4_000),
    ]  # fmt: skip
    assert all(u.provider == name and u.provider_event_id is None for u in status.updates)

    # Every mutating call carried our key and our reference.
    entries = ledger(admin, provider=name)
    assert [(e["kind"], e["idempotency_key"]) for e in entries] == [
        ("authorization", request.idempotency_key), ("capture", capture_op.idempotency_key),
        ("refund", r1.idempotency_key), ("refund", r2.idempotency_key),
    ]  # fmt: skip
    assert [e["reference"] for e in entries] == [
        request.reference, request.reference, r1.reference, r2.reference,
    ]  # fmt: skip


def test_automatic_capture_answers_captured_with_its_fee(zenith, admin):
    request, result = authorized(zenith, admin, capture=True, amount=5_000)
    update = payment_update(result)
    assert (update.status, update.amount, update.fee) == ("captured", 5_000, 175)
    status = zenith.payment_status(request.reference)
    assert statuses(status.updates) == ["authorized", "captured"]


def test_void_cancels_and_a_later_capture_is_rejected(zenith, admin):
    request, result = authorized(zenith, admin)
    void_op = operation(request, result.provider_ref)
    voided = zenith.void(void_op)
    update = payment_update(voided)
    assert voided.outcome is CallOutcome.OK
    assert (update.status, update.reason) == ("canceled", "voided")
    status = zenith.payment_status(request.reference)
    assert statuses(status.updates) == ["authorized", "canceled"]
    late = zenith.capture(operation(request, result.provider_ref))
    assert (late.outcome, late.code) == (CallOutcome.REJECTED, "invalid_state")
    [void] = ledger(admin, kind="void")
    assert (void["reference"], void["idempotency_key"]) == (
        request.reference,
        void_op.idempotency_key,
    )


def test_an_operation_without_the_provider_ref_finds_it_by_our_reference(zenith, admin):
    request, result = authorized(zenith, admin)
    captured = zenith.capture(operation(request, None, amount=1_000))
    assert payment_update(captured).provider_ref == result.provider_ref
    missing = zenith.void(
        PaymentOperation(payment_reference=ref(), provider_ref=None, idempotency_key=key(),
                         currency="USD")
    )  # fmt: skip
    assert (missing.outcome, missing.code) == (CallOutcome.REJECTED, "payment_not_found")


def test_an_expired_authorization_shows_as_canceled(zenith, admin):
    configure(admin, "zenith", auth_ttl_s=1)
    request, _ = authorized(zenith, admin)
    time.sleep(1.1)
    status = zenith.payment_status(request.reference)
    assert statuses(status.updates) == ["authorized", "canceled"]
    assert status.updates[1].reason == "expired"


def test_the_status_query_shows_refunds_and_the_dispute_in_order(zenith, admin):
    request, result = authorized(zenith, admin, capture=True)
    refund_op = operation(request, result.provider_ref, 1_000, ref("refund"))
    assert zenith.refund(refund_op).outcome is CallOutcome.OK
    r = admin.post("/_disputes", json={"provider": "zenith", "payment_id": result.provider_ref})
    assert r.status_code == 201, r.text
    dispute = r.json()
    blocked = zenith.refund(operation(request, result.provider_ref, 1_000, ref("refund")))
    assert (blocked.outcome, blocked.code) == (CallOutcome.REJECTED, "payment_disputed")
    admin.post(f"/_disputes/{dispute['id']}/resolve", json={"outcome": "lost"})

    status = zenith.payment_status(request.reference)
    assert statuses(status.updates) == [
        "authorized", "captured", "refunded", "dispute_opened", "dispute_lost",
    ]  # fmt: skip
    opened, lost = status.updates[3:]
    assert opened.dispute_id == lost.dispute_id == dispute["id"]
    assert opened.amount == lost.amount == 9_000


def test_a_dispute_without_refunds_comes_from_the_payment_record(zenith, admin):
    request, result = authorized(zenith, admin, capture=True)
    r = admin.post("/_disputes", json={"provider": "zenith", "payment_id": result.provider_ref})
    admin.post(f"/_disputes/{r.json()['id']}/resolve", json={"outcome": "won"})
    status = zenith.payment_status(request.reference)
    assert statuses(status.updates) == ["authorized", "captured", "dispute_opened", "dispute_won"]
    assert status.updates[2].reason == "fraudulent"


def test_status_updates_replay_through_the_payment_state_machine(zenith, admin):
    """What a status query answers moves our Payment aggregate where the provider is."""
    at = datetime.now(UTC)
    ctx = CommandContext(now=at, correlation_id="c", causation_id="c")
    payment = Payment.create(
        uuid.uuid4(), merchant_id="m", amount=Money.of(10_000, "USD"), method="card",
        payment_method_token="tok", capture_method=MANUAL, metadata={}, ctx=ctx,
    )  # fmt: skip
    payment.start_attempt("zenith", ctx)
    request = charge(tokenize(admin), reference=str(payment.id))
    result = zenith.authorize(request)
    zenith.capture(operation(request, result.provider_ref, amount=7_000))
    zenith.refund(operation(request, result.provider_ref, 2_000, ref("refund")))

    status = zenith.payment_status(str(payment.id))
    for update in status.updates:
        assert payment.apply_provider_update(update, ctx), update
    assert payment.status == "partially_refunded"
    assert (payment.captured_amount, payment.refunded_amount) == (7_000, 2_000)
    assert payment.fees == zenith.fee("card", "USD", 7_000)
    assert payment.provider_ref == result.provider_ref


# ---- declines and rejections ---------------------------------------------------------------


def test_a_declined_card_is_declined_with_its_code(zenith, admin):
    request = charge(tokenize(admin, number=DECLINING))
    result = zenith.authorize(request)
    update = payment_update(result)
    assert (result.outcome, result.code) == (CallOutcome.DECLINED, "payment_declined")
    assert (update.status, update.reason) == ("failed", "card_declined")
    assert update.provider_ref == result.provider_ref and not result.definite
    status = zenith.payment_status(request.reference)
    assert statuses(status.updates) == ["failed"] and status.updates[0].reason == "card_declined"
    assert ledger(admin, kind="authorization") == []


def test_business_errors_are_rejected_with_the_sandbox_code(providers, admin):
    zenith = providers["zenith"]
    token = tokenize(admin)
    cases: list[tuple[str, CallResult]] = [
        ("invalid_token", zenith.authorize(charge("tok_zenith_missing"))),
        ("unsupported_currency", zenith.authorize(charge(token, currency="INR"))),
        ("unsupported_method", zenith.authorize(charge(token, method="upi"))),
        ("token_method_mismatch", zenith.authorize(charge(token, method="digital_wallet"))),
        ("invalid_token", providers["ramp"].authorize(charge(token, provider="ramp"))),
    ]
    request, result = authorized(zenith, admin, amount=1_000)
    cases += [
        ("amount_exceeds_authorized", zenith.capture(operation(request, result.provider_ref, 1_001))),
        ("payment_not_found", zenith.capture(operation(request, "pay_nope", 10))),
        ("invalid_state", zenith.refund(operation(request, result.provider_ref, 10, ref("r")))),
    ]  # fmt: skip
    zenith.capture(operation(request, result.provider_ref, 500))
    cases.append(
        ("amount_exceeds_refundable", zenith.refund(operation(request, result.provider_ref, 501, ref("r"))))
    )  # fmt: skip
    for code, outcome in cases:
        assert (outcome.outcome, outcome.code) == (CallOutcome.REJECTED, code), outcome
        assert outcome.detail and outcome.definite and outcome.update is None
    assert len(ledger(admin, kind="authorization")) == 1


def test_the_same_key_with_another_request_is_rejected(zenith, admin):
    request, _ = authorized(zenith, admin)
    other = charge(request.token, idem=request.idempotency_key, amount=1)
    result = zenith.authorize(other)
    assert (result.outcome, result.code) == (CallOutcome.REJECTED, "idempotency_key_reused")


# ---- injected faults ------------------------------------------------------------------------


def test_a_retryable_processing_error_is_error_and_charges_nothing(zenith, admin):
    set_faults(admin, "zenith", error_rate=1.0)
    request = charge(tokenize(admin))
    result = zenith.authorize(request)
    assert (result.outcome, result.code) == (CallOutcome.ERROR, "processing_error")
    assert result.definite and result.update is None
    assert zenith.payment_status(request.reference).found is False
    admin.delete("/_faults")
    again = zenith.authorize(request)  # the same key runs afresh: nothing was stored
    assert again.outcome is CallOutcome.OK


def test_a_gateway_502_is_unknown(zenith, admin):
    set_faults(admin, "zenith", http_5xx_rate=1.0)
    request = charge(tokenize(admin))
    result = zenith.authorize(request)
    assert (result.outcome, result.code) == (CallOutcome.UNKNOWN, "http_502")
    assert not result.definite
    status = zenith.payment_status(request.reference)  # status queries see no faults
    assert status.outcome is CallOutcome.OK and status.found is False


def test_a_timeout_after_the_charge_is_unknown_and_the_status_query_finds_it(admin, sandbox_url):
    set_faults(admin, "zenith", timeout_after_charge_rate=1.0, hang_ms=1_500)
    with SandboxProvider("zenith", sandbox_url, SECRET, timeout_s=0.3) as impatient:
        request = charge(tokenize(admin))
        result = impatient.authorize(request)
        assert (result.outcome, result.code) == (CallOutcome.UNKNOWN, "timeout")
        assert 300 <= result.latency_ms < 1_500
        status = impatient.payment_status(request.reference)
    assert status.outcome is CallOutcome.OK and status.found
    assert statuses(status.updates) == ["authorized"]
    assert status.provider_ref and status.provider_ref.startswith("pay_")
    assert len(ledger(admin, kind="authorization")) == 1


def test_a_dropped_answer_is_unknown_and_the_status_query_finds_the_payment(zenith, admin):
    set_faults(admin, "zenith", drop_response_rate=1.0)
    request = charge(tokenize(admin))
    result = zenith.authorize(request)
    assert (result.outcome, result.code) == (CallOutcome.UNKNOWN, "connection_lost")
    status = zenith.payment_status(request.reference)
    assert status.found and statuses(status.updates) == ["authorized"]

    # A dropped capture: the retry with the same key replays what was done.
    capture_op = operation(request, status.provider_ref, amount=4_000)
    assert zenith.capture(capture_op).outcome is CallOutcome.UNKNOWN
    again = zenith.capture(capture_op)
    assert again.outcome is CallOutcome.OK and again.detail == "replayed"
    assert payment_update(again).amount == 4_000
    assert len(ledger(admin, kind="capture")) == 1


def test_a_reference_never_charged_is_not_found(zenith, admin):
    status = zenith.payment_status(ref("never"))
    assert status.outcome is CallOutcome.OK and status.found is False and status.updates == ()
    payout = zenith.payout_status(ref("never"))
    assert payout.outcome is CallOutcome.OK and payout.found is False


def test_a_refused_connection_is_error_and_nothing_is_supported():
    with SandboxProvider("zenith", f"http://127.0.0.1:{_free_port()}", SECRET) as gone:
        result = gone.authorize(charge("tok"))
        assert (result.outcome, result.code) == (CallOutcome.ERROR, "connect_failed")
        assert result.definite and result.latency_ms > 0
        status = gone.payment_status("pay-1")
        assert status.outcome is CallOutcome.ERROR and not status.found
        assert gone.supports("card", "USD") is False
        with pytest.raises(ValueError):
            gone.fee("card", "USD", 100)


def test_latency_is_measured_on_every_call(zenith, admin):
    set_faults(admin, "zenith", latency_ms=60)
    request = charge(tokenize(admin))
    result = zenith.authorize(request)
    assert result.outcome is CallOutcome.OK and result.latency_ms >= 60
    assert zenith.payment_status(request.reference).latency_ms >= 60
    declined = zenith.authorize(charge(tokenize(admin, number=DECLINING)))
    assert declined.latency_ms >= 60


def test_a_repeated_authorization_charges_once(zenith, admin):
    request = charge(tokenize(admin))
    first = zenith.authorize(request)
    second = zenith.authorize(request)
    assert first.outcome is second.outcome is CallOutcome.OK
    assert first.provider_ref == second.provider_ref and second.detail == "replayed"
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: zenith.authorize(request), range(8)))
    assert {r.provider_ref for r in results} == {first.provider_ref}
    entries = ledger(admin, kind="authorization", reference=request.reference)
    assert len(entries) == 1 and entries[0]["idempotency_key"] == request.idempotency_key


def test_one_provider_serves_many_threads(zenith, admin):
    token = tokenize(admin)
    requests = [charge(token, amount=100 + i) for i in range(24)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(zenith.authorize, requests))
    assert all(r.outcome is CallOutcome.OK for r in results)
    assert len({r.provider_ref for r in results}) == 24


# ---- pay-outs --------------------------------------------------------------------------------


def payout_request(account: str = "0123456789", currency: str = "USD") -> PayoutRequest:
    return PayoutRequest(
        reference=ref("po"), idempotency_key=key(), amount=50_000, currency=currency,
        destination={"account_number": account, "bank_code": "058", "account_name": "Ada"},
    )  # fmt: skip


def test_payouts_paid_and_failed_and_their_status(zenith, admin):
    paid_req = payout_request()
    paid = zenith.payout(paid_req)
    assert paid.outcome is CallOutcome.OK and isinstance(paid.update, PayoutUpdate)
    assert (paid.update.status, paid.update.fee) == ("paid", 25)
    assert paid.provider_ref == paid.update.provider_payout_id and paid.latency_ms > 0

    failed_req = payout_request(CLOSED_ACCOUNT)
    failed = zenith.payout(failed_req)
    assert (failed.outcome, failed.code) == (CallOutcome.DECLINED, "payout_failed")
    assert isinstance(failed.update, PayoutUpdate)
    assert (failed.update.status, failed.update.reason) == ("failed", "account_closed")

    status = zenith.payout_status(paid_req.reference)
    assert status.found and status.provider_ref == paid.provider_ref
    assert [(u.status, u.fee) for u in status.updates] == [("paid", 25)]
    status = zenith.payout_status(failed_req.reference)
    assert [(u.status, u.reason) for u in status.updates] == [("failed", "account_closed")]

    rejected = zenith.payout(payout_request(currency="NGN"))
    assert (rejected.outcome, rejected.code) == (CallOutcome.REJECTED, "unsupported_currency")
    entries = ledger(admin, kind="payout")
    assert [(e["reference"], e["idempotency_key"]) for e in entries] == [
        (paid_req.reference, paid_req.idempotency_key),
    ]  # fmt: skip


def test_a_dropped_payout_answer_is_unknown_and_its_status_says_paid(zenith, admin):
    set_faults(admin, "zenith", drop_response_rate=1.0)
    request = payout_request()
    assert zenith.payout(request).outcome is CallOutcome.UNKNOWN
    status = zenith.payout_status(request.reference)
    assert [u.status for u in status.updates] == ["paid"]


# ---- webhooks and async answers ------------------------------------------------------------


def parsed(provider: SandboxProvider, receiver: Receiver, count: int) -> list[WebhookEvent]:
    """The first ``count`` deliveries, parsed by ``provider`` (waits for them)."""
    wait_until(lambda: len(receiver.deliveries()) >= count)
    events: list[WebhookEvent] = []
    for headers, body in receiver.deliveries()[:count]:
        events.extend(provider.parse_webhook(headers, body))
    return events


def test_webhooks_of_a_payment_and_payouts_are_normalised(zenith, admin, receiver):
    configure(admin, "zenith", webhook_url=receiver.url)
    request, result = authorized(zenith, admin)
    pid = result.provider_ref
    zenith.capture(operation(request, pid, amount=8_000))
    refund_op = operation(request, pid, 3_000, ref("refund"))
    zenith.refund(refund_op)
    dispute = admin.post("/_disputes", json={"provider": "zenith", "payment_id": pid}).json()
    admin.post(f"/_disputes/{dispute['id']}/resolve", json={"outcome": "won"})
    declined = charge(tokenize(admin, number=DECLINING))
    zenith.authorize(declined)
    voided, voided_result = authorized(zenith, admin)
    zenith.void(operation(voided, voided_result.provider_ref))
    paid, failed = payout_request(), payout_request(CLOSED_ACCOUNT)
    zenith.payout(paid)
    zenith.payout(failed)

    events = parsed(zenith, receiver, 10)
    seen = [(e.kind, e.reference, e.update.status) for e in events]
    assert seen == [
        ("payment", request.reference, "authorized"),
        ("payment", request.reference, "captured"),
        ("payment", request.reference, "refunded"),
        ("payment", request.reference, "dispute_opened"),
        ("payment", request.reference, "dispute_won"),
        ("payment", declined.reference, "failed"),
        ("payment", voided.reference, "authorized"),
        ("payment", voided.reference, "canceled"),
        ("payout", paid.reference, "paid"),
        ("payout", failed.reference, "failed"),
    ]  # fmt: skip
    headers = [{k.lower(): v for k, v in h.items()} for h, _ in receiver.deliveries()[:10]]
    ids = [h["webhook-id"] for h in headers]
    assert [e.event_id for e in events] == ids
    assert all(e.update.provider_event_id == e.event_id for e in events)
    auth, cap, refund, opened, won, fail, _, cancel, po_paid, po_failed = events
    assert auth.provider_ref == pid and isinstance(auth.update, ProviderUpdate)
    assert auth.update.authorization_expires_at is not None and auth.update.amount == 10_000
    assert isinstance(cap.update, ProviderUpdate)
    assert (cap.update.amount, cap.update.fee) == (8_000, zenith.fee("card", "USD", 8_000))
    assert isinstance(refund.update, ProviderUpdate)
    assert (refund.update.refund_id, refund.update.amount) == (refund_op.reference, 3_000)
    assert refund.provider_ref == pid
    assert isinstance(opened.update, ProviderUpdate) and isinstance(won.update, ProviderUpdate)
    assert opened.update.dispute_id == won.update.dispute_id == dispute["id"]
    assert opened.update.amount == 5_000
    assert isinstance(fail.update, ProviderUpdate) and fail.update.reason == "card_declined"
    assert isinstance(cancel.update, ProviderUpdate) and cancel.update.reason == "voided"
    assert isinstance(po_paid.update, PayoutUpdate) and po_paid.update.fee == 25
    assert isinstance(po_failed.update, PayoutUpdate)
    assert po_failed.update.reason == "account_closed"
    assert po_paid.provider_ref == po_paid.update.provider_payout_id


def test_a_webhook_that_fails_verification_is_rejected(providers, admin, receiver):
    zenith = providers["zenith"]
    configure(admin, "zenith", webhook_url=receiver.url)
    authorized(zenith, admin)
    wait_until(lambda: receiver.deliveries())
    headers, body = receiver.deliveries()[0]
    assert len(zenith.parse_webhook(headers, body)) == 1

    with pytest.raises(WebhookRejected):
        zenith.parse_webhook(headers, body.replace(b"authorized", b"captured"))
    with pytest.raises(WebhookRejected):
        zenith.parse_webhook(
            {k: v for k, v in headers.items() if "signature" not in k.lower()}, body
        )
    with pytest.raises(WebhookRejected):
        SandboxProvider("zenith", "http://127.0.0.1:9", new_secret()).parse_webhook(headers, body)
    with pytest.raises(WebhookRejected):  # zenith's event at ramp's endpoint
        providers["ramp"].parse_webhook(headers, body)
    stale = sign_webhook(SECRET, "evt_old", body, timestamp=datetime.now(UTC) - timedelta(hours=1))
    with pytest.raises(WebhookRejected):
        zenith.parse_webhook(stale, body)
    not_json = b"hello"
    with pytest.raises(WebhookRejected):
        zenith.parse_webhook(sign_webhook(SECRET, "evt_x", not_json), not_json)
    broken = b'{"id": "evt_b", "type": "payment.captured", "provider": "zenith", "data": {}}'
    with pytest.raises(WebhookRejected):
        zenith.parse_webhook(sign_webhook(SECRET, "evt_b", broken), broken)


def test_an_unknown_event_type_is_ignored(zenith):
    body = b'{"id": "evt_t", "type": "token.created", "provider": "zenith", "data": {"id": "t"}}'
    assert zenith.parse_webhook(sign_webhook(SECRET, "evt_t", body), body) == []


def test_async_authorization_is_pending_then_settled_by_webhook_and_status(zenith, admin, receiver):
    configure(admin, "zenith", mode="async", async_delay_ms=100, webhook_url=receiver.url)
    request = charge(tokenize(admin))
    result = zenith.authorize(request)
    assert result.outcome is CallOutcome.PENDING and result.update is None
    assert result.provider_ref and result.provider_ref.startswith("pay_")
    status = zenith.payment_status(request.reference)
    assert status.found and status.updates == () and status.provider_ref == result.provider_ref

    [event] = parsed(zenith, receiver, 1)
    assert (event.reference, event.update.status) == (request.reference, "authorized")
    assert event.provider_ref == result.provider_ref
    assert statuses(zenith.payment_status(request.reference).updates) == ["authorized"]

    declined = charge(tokenize(admin, number=DECLINING))
    assert zenith.authorize(declined).outcome is CallOutcome.PENDING
    wait_until(lambda: zenith.payment_status(declined.reference).updates)
    assert statuses(zenith.payment_status(declined.reference).updates) == ["failed"]


def test_async_payout_is_pending_then_paid(zenith, admin, receiver):
    configure(admin, "zenith", mode="async", async_delay_ms=100, webhook_url=receiver.url)
    request = payout_request()
    result = zenith.payout(request)
    assert result.outcome is CallOutcome.PENDING
    assert isinstance(result.update, PayoutUpdate) and result.update.status == "pending"
    assert [u.status for u in zenith.payout_status(request.reference).updates] == ["pending"]
    [event] = parsed(zenith, receiver, 1)
    assert (event.kind, event.reference, event.update.status) == (
        "payout",
        request.reference,
        "paid",
    )
    assert [u.status for u in zenith.payout_status(request.reference).updates] == ["paid"]


# ---- answers the sandbox never gives, through a stub transport ---------------------------


def stub(handler: Callable[[httpx.Request], httpx.Response]) -> SandboxProvider:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return SandboxProvider("zenith", "http://psp.invalid", SECRET, client=client)


def problem(status: int, code: str, retryable: bool = False) -> httpx.Response:
    return httpx.Response(
        status,
        json={"code": code, "detail": code, "retryable": retryable},
        headers={"content-type": "application/problem+json"},
    )


def raising(exc: type[httpx.HTTPError]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc("injected", request=request)  # type: ignore[call-arg]

    return handler


@pytest.mark.parametrize(
    ("handler", "outcome", "code"),
    [
        (lambda r: problem(500, "internal", retryable=False), CallOutcome.UNKNOWN, "internal"),
        (lambda r: problem(503, "busy", retryable=True), CallOutcome.ERROR, "busy"),
        (lambda r: problem(402, "card_blocked"), CallOutcome.REJECTED, "card_blocked"),
        (lambda r: httpx.Response(429, text="slow down"), CallOutcome.ERROR, "http_429"),
        (lambda r: httpx.Response(404, text="nope"), CallOutcome.REJECTED, "http_404"),
        (lambda r: httpx.Response(504, text="<html/>"), CallOutcome.UNKNOWN, "http_504"),
        (lambda r: httpx.Response(201, text="<html/>"), CallOutcome.UNKNOWN, "http_201"),
        (lambda r: httpx.Response(201, json={"status": "authorized"}), CallOutcome.UNKNOWN, "unreadable_answer"),
        (raising(httpx.ConnectTimeout), CallOutcome.ERROR, "connect_failed"),
        (raising(httpx.PoolTimeout), CallOutcome.ERROR, "connect_failed"),
        (raising(httpx.ReadTimeout), CallOutcome.UNKNOWN, "timeout"),
        (raising(httpx.WriteTimeout), CallOutcome.UNKNOWN, "timeout"),
        (raising(httpx.RemoteProtocolError), CallOutcome.UNKNOWN, "connection_lost"),
        (raising(httpx.ReadError), CallOutcome.UNKNOWN, "connection_lost"),
    ],
)  # fmt: skip
def test_answers_the_sandbox_cannot_give_are_classified(handler, outcome, code):
    with stub(handler) as provider:
        result = provider.authorize(charge("tok"))
    assert (result.outcome, result.code) == (outcome, code)
    assert result.update is None and result.latency_ms >= 0


def test_the_catalogue_is_read_once_and_the_key_is_sent():
    seen: list[httpx.Request] = []
    config = {
        "zenith": {
            "currencies": ["USD"],
            "fees": {"card": {"basis_points": 100, "fixed": 0, "cap": None}},
            "payout_fee": 5,
        }
    }

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/_config":
            return httpx.Response(200, json=config)
        return problem(422, "invalid_token")

    with stub(handler) as provider:
        assert provider.supports("card", "USD") and not provider.supports("card", "EUR")
        assert provider.fee("card", "USD", 1_000) == 10
        request = charge("tok")
        provider.authorize(request)
    assert [r.url.path for r in seen] == ["/_config", "/zenith/authorizations"]
    assert seen[1].headers["Idempotency-Key"] == request.idempotency_key

"""Random payment, capture, refund, cancel, dispute and pay-out sequences under injected
provider faults, against the sandbox PSP process and the service over HTTP.

After each sequence (faults cleared, anything left in flight resumed): money is conserved
(the ledger sums to zero per currency), no payment was charged twice at a provider, every
captured payment is in the ledger exactly once, the ledger agrees with the provider, and
``ledger audit verify`` passes. No request ever answers a 5xx.
"""

from __future__ import annotations

import os
import time
from typing import Any
from uuid import UUID

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.integration.test_api_payments import Service, psp, sandbox, svc  # noqa: F401 - fixtures
from tests.integration.test_psp_sandbox import set_faults, tokenize

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROVIDERS = ("zenith", "ramp", "monnify")
FAULTS: dict[str, dict[str, Any]] = {
    "none": {},
    "errors": {"error_rate": 0.5},
    "gateway": {"http_5xx_rate": 0.5},
    "dropped": {"drop_response_rate": 0.5},
    "timeouts": {"timeout_after_charge_rate": 0.3, "hang_ms": 1500},
    "webhooks": {
        "duplicate_webhook_rate": 1.0,
        "out_of_order_webhooks": True,
        "reorder_window_ms": 50,
    },
    "declines": {"decline_rate": 0.3},
}


def test_random_payment_sequences_under_faults(svc: Service) -> None:  # noqa: F811
    class Payments(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            svc.psp.delete("/_faults")
            self.wallet = svc.wallet(funds="200.00")
            self.payments: list[str] = []
            self.seed = 0

        def _ok(self, r: httpx.Response) -> httpx.Response:
            assert r.status_code < 500, r.text
            return r

        @rule(provider=st.sampled_from(PROVIDERS), fault=st.sampled_from(sorted(FAULTS)))
        def inject(self, provider: str, fault: str) -> None:
            self.seed += 1
            set_faults(svc.psp, provider, seed=self.seed, **FAULTS[fault])

        @initialize(cents=st.integers(100, 20_000), manual=st.booleans())
        def first_payment(self, cents: int, manual: bool) -> None:
            self.pay(cents, manual)

        @rule(cents=st.integers(100, 20_000), manual=st.booleans())
        def pay(self, cents: int, manual: bool) -> None:
            tokens = {p: tokenize(svc.psp, p) for p in ("zenith", "ramp", "monnify")}
            body = {"wallet_id": self.wallet, "amount": f"{cents / 100:.2f}", "currency": "USD",
                    "method": "card", "payment_method_token": tokens["zenith"],
                    "payment_method_tokens": tokens,
                    "capture_method": "manual" if manual else "automatic"}  # fmt: skip
            r = self._ok(svc.post("/v1/payments", body))
            assert r.status_code == 201, r.text
            self.payments.append(r.json()["payment"]["id"])

        @precondition(lambda self: self.payments)
        @rule(
            data=st.data(),
            op=st.sampled_from(["capture", "cancel", "refund"]),
            part=st.integers(1, 100),
        )
        def operate(self, data: st.DataObject, op: str, part: int) -> None:
            pid = data.draw(st.sampled_from(self.payments))
            p = svc.get_payment(pid)
            body: dict[str, Any] | None = None
            if op == "refund":
                cents = int(p["captured_amount"].replace(".", "")) * part // 100
                body = {"amount": f"{max(cents, 1) / 100:.2f}"}
            elif op == "capture" and part < 50:
                cents = int(p["authorized_amount"].replace(".", "")) * part // 100
                body = {"amount": f"{max(cents, 1) / 100:.2f}"}
            suffix = "refunds" if op == "refund" else op
            self._ok(svc.post(f"/v1/payments/{pid}/{suffix}", body))

        @precondition(lambda self: self.payments)
        @rule(data=st.data(), outcome=st.sampled_from(["open", "won", "lost"]))
        def dispute(self, data: st.DataObject, outcome: str) -> None:
            pid = data.draw(st.sampled_from(self.payments))
            p = svc.get_payment(pid)
            if p["provider"] is None:
                return
            found = svc.psp.get(f"/{p['provider']}/payments", params={"reference": pid}).json()[
                "data"
            ]
            captured = [x for x in found if x["status"] in ("captured", "partially_refunded")]
            if not captured:
                return
            r = svc.psp.post(
                "/_disputes", json={"provider": p["provider"], "payment_id": captured[0]["id"]}
            )
            if r.status_code in (200, 201) and outcome != "open":
                svc.psp.post(f"/_disputes/{r.json()['id']}/resolve", json={"outcome": outcome})

        @rule(cents=st.integers(100, 10_000), bad=st.booleans())
        def pay_out(self, cents: int, bad: bool) -> None:
            account = "0000000000" if bad else "0123456789"
            self._ok(svc.post("/v1/payouts", {
                "wallet_id": self.wallet, "amount": f"{cents / 100:.2f}", "currency": "USD",
                "provider": "zenith", "destination": {"account_number": account, "bank_code": "011"},
            }))  # fmt: skip

        def teardown(self) -> None:
            svc.psp.delete("/_faults")
            processor = svc.container.payments.processor
            deadline = time.monotonic() + 20
            while True:  # let webhooks land, then resume anything still in flight
                time.sleep(0.3)
                for pid in self.payments:
                    processor.resume(UUID(pid), "test-teardown")
                    processor.reconcile(UUID(pid), "test-teardown")
                left = [
                    pid
                    for pid in self.payments
                    if svc.get_payment(pid)["status"] in ("created", "processing")
                ]
                if not left or time.monotonic() > deadline:
                    break
            for pid in self.payments:
                ours = svc.get_payment(pid)
                charges = svc.charges(pid)
                assert len(charges) <= 1, (pid, charges)  # never charged twice
                if ours["status"] in (
                    "captured",
                    "partially_refunded",
                    "refunded",
                    "disputed",
                    "won",
                    "lost",
                ):
                    assert len(charges) == 1, ours
                    at_psp = svc.psp.get(
                        f"/{ours['provider']}/payments", params={"reference": pid}
                    ).json()["data"]
                    live = [x for x in at_psp if x.get("captured_amount")]
                    assert (
                        live
                        and ours["captured_amount"] == f"{live[0]['captured_amount'] / 100:.2f}"
                    ), (ours, at_psp)
            svc.audit()

    run_state_machine_as_test(
        Payments,
        settings=settings(
            max_examples=12 if os.environ.get("CI") else 6, stateful_step_count=25, deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )  # fmt: skip

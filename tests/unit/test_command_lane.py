"""The fast lane answers exactly as the FastAPI routes do.

Differential: every request goes to two apps built the same way, one with the lane and one
without, each in front of a recording engine. The answers (status, media type, replay
header, body) and the commands the engine received must be the same, and the lane must
have served the well-formed requests itself (not passed everything on)."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import Future
from typing import Any

import orjson
import pytest
from eventsourcing.persistence import OperationalError
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from commands.api.app import install_command_api, lane_routes
from commands.api.deps import ApiContext
from commands.api.lane import CommandLane
from commands.engine import Outcome
from commands.model import CommandRequest
from commands.problems import conflict, key_in_use, key_reused
from domain.principal import Principal

KEYS = {
    "writer-key": Principal("acme", "merchant"),
    "admin-key": Principal("platform", "admin"),
    "reader-key": Principal("acme", "auditor"),
}
PATHS = sorted(lane_routes())
WALLET_A, WALLET_B = str(uuid.uuid4()), str(uuid.uuid4())


class Keys:
    def authenticate(self, raw: str) -> Principal | None:
        return KEYS.get(raw)


class RecordingEngine:
    """Records what it is asked and answers as told: an outcome, or an error raised at
    submit or delivered through the future (as the real engine does)."""

    def __init__(self) -> None:
        self.received: list[CommandRequest] = []
        self.mode = "ok"

    def submit(self, request: CommandRequest) -> Future[Outcome]:
        if self.mode == "in-use":
            raise key_in_use()
        self.received.append(request)
        future: Future[Outcome] = Future()
        errors: dict[str, BaseException] = {
            "reused": key_reused(),
            "conflict": conflict(),
            "store-down": OperationalError("connection refused"),
            "bug": RuntimeError("a bug"),
        }
        if self.mode in errors:
            future.set_exception(errors[self.mode])
        else:
            body = {"command": type(request.command).__name__, "n": len(self.received)}
            future.set_result(Outcome(201, body, 7, replayed=self.mode == "replayed"))
        return future


def make_app(*, fast_lane: bool) -> tuple[TestClient, RecordingEngine]:
    engine = RecordingEngine()
    app = FastAPI()
    context = ApiContext(engine=engine, authenticator=Keys())  # type: ignore[arg-type]
    install_command_api(app, context, lambda: {"status": "ok"}, 64 * 1024, fast_lane=fast_lane)
    return TestClient(app, raise_server_exceptions=False), engine


def lane_of(client: TestClient) -> CommandLane:
    layer: Any = client.app.middleware_stack  # type: ignore[attr-defined]
    while not isinstance(layer, CommandLane):
        layer = layer.app
    return layer


def valid_body(path: str) -> dict[str, Any]:
    if path == "/v1/transfers":
        return {"debit_wallet_id": WALLET_A, "credit_wallet_id": WALLET_B, "amount": "12.34",
                "currency": "USD"}  # fmt: skip
    if path == "/v1/transfers/batch":
        return {"atomic": True, "transfers": [valid_body("/v1/transfers")] * 2}
    return {"wallet_id": WALLET_A, "amount": "5.00", "currency": "EUR"}


def send(
    client: TestClient, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, str | None, str | None, Any]:
    r = client.post(path, content=body, headers=headers)
    try:
        parsed: Any = orjson.loads(r.content)
    except orjson.JSONDecodeError:
        parsed = r.content
    return (
        r.status_code,
        r.headers.get("content-type"),
        r.headers.get("idempotent-replayed"),
        parsed,
    )


def same_answers(path: str, body: bytes, headers: dict[str, str], mode: str = "ok") -> int:
    """Send one request to both apps; return how many requests the lane served."""
    lane_client, lane_engine = make_app(fast_lane=True)
    plain_client, plain_engine = make_app(fast_lane=False)
    lane_engine.mode = plain_engine.mode = mode
    assert send(lane_client, path, body, headers) == send(plain_client, path, body, headers)
    fixed = [
        (r.command, r.principal, r.idempotency_key, r.request_hash) for r in lane_engine.received
    ]
    assert fixed == [
        (r.command, r.principal, r.idempotency_key, r.request_hash) for r in plain_engine.received
    ]
    if "X-Request-Id" in headers and headers["X-Request-Id"]:
        for request in lane_engine.received:
            assert request.correlation_id == headers["X-Request-Id"]
    return lane_of(lane_client).served


def good_headers(**changes: str | None) -> dict[str, str]:
    headers: dict[str, str | None] = {
        "Authorization": "Bearer writer-key",
        "Idempotency-Key": "k-1",
        "Content-Type": "application/json",
        "X-Request-Id": "req-1",
    }
    headers.update(changes)
    return {k: v for k, v in headers.items() if v is not None}


@pytest.mark.parametrize("path", PATHS)
def test_a_well_formed_write_is_served_by_the_lane_with_the_routes_command(path: str) -> None:
    body = orjson.dumps(valid_body(path))
    assert same_answers(path, body, good_headers()) == 1
    assert same_answers(path, body, good_headers(**{"X-Request-Id": None})) == 1
    assert same_answers(path, body, good_headers(Authorization="Bearer admin-key")) == 1
    assert same_answers(path, body, good_headers(), mode="replayed") == 1


@pytest.mark.parametrize("mode", ["in-use", "reused", "conflict", "store-down", "bug"])
def test_engine_errors_get_the_routes_problem_answers(mode: str) -> None:
    body = orjson.dumps(valid_body("/v1/transfers"))
    assert same_answers("/v1/transfers", body, good_headers(), mode=mode) == 1


REFUSED_HEADERS = [
    {"Authorization": None},
    {"Authorization": "Bearer unknown"},
    {"Authorization": "Basic writer-key"},
    {"Authorization": "Bearer reader-key"},
    {"Idempotency-Key": None},
    {"Idempotency-Key": "   "},
    {"Idempotency-Key": "k" * 256},
    {"Content-Type": None},
    {"Content-Type": "text/plain"},
]


def test_a_card_number_anywhere_is_left_to_the_route() -> None:
    body = {**valid_body("/v1/transfers"), "metadata": {"note": "card 4242 4242 4242 4242"}}
    assert same_answers("/v1/transfers", orjson.dumps(body), good_headers()) == 0


@pytest.mark.parametrize("changes", REFUSED_HEADERS, ids=str)
def test_requests_the_lane_passes_on_get_the_routes_answers(changes: dict[str, Any]) -> None:
    body = orjson.dumps(valid_body("/v1/transfers"))
    assert same_answers("/v1/transfers", body, good_headers(**changes)) == 0


# A field replaced by something the route may refuse (or, for a few, accept).
ODD_VALUES = st.one_of(
    st.sampled_from(
        [
            "12.345",
            "-1",
            "0",
            "0.00",
            "1e3",
            " 1.00",
            "1,00",
            "99999999999999999999999999",
            "",
            "USD",
            "usd",
            "XXX",
            "JPY",
            "not-a-uuid",
            "4242424242424242",
        ]
    ),  # fmt: skip
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=5), st.text(max_size=20), max_size=3),
    st.text(max_size=30),
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    path = draw(st.sampled_from(PATHS))
    body: Any = valid_body(path)
    target = body["transfers"][0] if path == "/v1/transfers/batch" else body
    if path == "/v1/transfers/batch":
        body["transfers"] = [dict(t) for t in body["transfers"]]
        target = body["transfers"][0]
    for _ in range(draw(st.integers(0, 3))):
        field = draw(st.sampled_from(sorted(target) + ["pending", "timeout_seconds", "metadata",
                                                       "extra"]))  # fmt: skip
        if draw(st.booleans()) and field in target:
            del target[field]
        else:
            target[field] = draw(ODD_VALUES)
    raw = json.dumps(body).encode()  # not orjson: integers past 64 bits must get through
    shape = draw(st.sampled_from(["json", "json", "json", "truncated", "array", "null", "nan"]))
    if shape == "truncated":
        raw = raw[: len(raw) // 2]
    elif shape == "array":
        raw = b"[" + raw + b"]"
    elif shape == "null":
        raw = b"null"
    elif shape == "nan":
        raw = raw.replace(b'"0.01"', b"NaN").replace(b'"12.34"', b"NaN")
    changes = draw(st.sampled_from([{}, {}, {}, *REFUSED_HEADERS]))
    return path, raw, good_headers(**changes)


@given(requests())
def test_any_request_gets_the_same_answer_with_or_without_the_lane(
    request: tuple[str, bytes, dict[str, str]],
) -> None:
    path, raw, headers = request
    same_answers(path, raw, headers)

"""The GraphQL lane answers exactly as Strawberry's view does.

Differential: every request goes to two apps built the same way over the same in-memory
read port, one with the lane and one without. Status, headers and body must be the same
byte for byte, and the lane must have served the plain JSON POSTs itself."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from domain.principal import Principal
from read_api.asgi import LedgerGraphQL, create_graphql_app
from read_api.context import MIN_POSITION_HEADER
from tests.unit.test_graphql_schema import (
    FakeReadQueries,
    transfer_record,
    wallet_record,
    wid,
)

KEYS = {"acme-key": Principal("acme", "merchant"), "admin-key": Principal("platform", "admin")}
QUERIES = FakeReadQueries(
    wallets_=[wallet_record(1, "acme", posted=1250), wallet_record(2, "globex")],
    transfers_=[transfer_record(1, wid(1), wid(2))],
    tracking={"balances": 50, "transfers": 50, "statements": 50, "payments": 50},
)


def app(lane: bool) -> LedgerGraphQL:
    graphql = create_graphql_app(QUERIES, KEYS.get, min_position_timeout_s=0.05)
    graphql.lane = lane
    return graphql


WITH, WITHOUT = app(True), app(False)
CLIENTS = TestClient(WITH), TestClient(WITHOUT)

BALANCE = "query($id: ID!) { wallet(id: $id) { balance { available { amount } } } }"
DOCUMENTS = [
    BALANCE,
    "query Named($id: ID!) { wallet(id: $id) { currency } }",
    "query A { wallets { edges { cursor } } } query B { transfers { edges { cursor } } }",
    "{ transfers(first: 1) { edges { node { amount { amount currency } } } } }",
    "{ wallets { edges { node { balance { posted { amount } } } } } }",
    "{ " + " ".join(f"a{i}: wallets {{ edges {{ cursor }} }}" for i in range(16)) + " }",
    "{ nope }",
    "{ wallets { ",
    "mutation { nope }",
    "subscription { nope }",
    "",
    "   ",
]
IDS = [wid(1), wid(2), wid(3), "not-a-uuid", 7, None, ["x"]]
JSON_VALUES = st.one_of(st.none(), st.integers(-3, 3), st.text(max_size=4), st.just([]))


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["operation"] * 6 + ["batch", "scalar", "malformed"]))
    if kind == "malformed":
        return draw(st.sampled_from([b"{not json", b"", b"[", b'{"query": "{ nope }"']))
    if kind == "scalar":
        return json.dumps(draw(JSON_VALUES)).encode()
    body: dict[str, Any] = {}
    if draw(st.integers(0, 5)):  # sometimes no query at all
        body["query"] = draw(st.one_of(st.sampled_from(DOCUMENTS), JSON_VALUES))
    if draw(st.booleans()):
        body["variables"] = draw(
            st.one_of(st.fixed_dictionaries({"id": st.sampled_from(IDS)}), JSON_VALUES)
        )
    if draw(st.booleans()):
        body["operationName"] = draw(st.sampled_from(["A", "B", "Named", "C", None, 1]))
    if draw(st.booleans()):
        body["extensions"] = draw(st.one_of(st.just({"x": 1}), JSON_VALUES))
    return json.dumps([body] if kind == "batch" else body).encode()


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, dict[str, str], bytes]:
    method = draw(st.sampled_from(["POST"] * 8 + ["GET", "PUT"]))
    headers: dict[str, str] = {}
    media = draw(
        st.sampled_from(
            ["application/json"] * 5
            + ["application/json; charset=utf-8", "text/plain", "application/graphql", None]
        )
    )
    if media is not None:
        headers["content-type"] = media
    accept = draw(st.sampled_from([None, None, "application/json", "text/html", "multipart/mixed"]))
    if accept is not None:
        headers["accept"] = accept
    key = draw(st.sampled_from(["acme-key", "admin-key", "acme-key", "wrong", None]))
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    position = draw(st.sampled_from([None, None, "10", "9999", "x"]))
    if position is not None:
        headers[MIN_POSITION_HEADER] = position
    return method, headers, draw(bodies())


def send(client: TestClient, method: str, headers: dict[str, str], body: bytes) -> Any:
    if method == "GET":
        return client.get("/", params={"query": BALANCE}, headers=headers)
    return client.request(method, "/", content=body, headers=headers)


@settings(deadline=None)
@given(requests())
def test_the_lane_answers_as_the_view_does(request: tuple[str, dict[str, str], bytes]) -> None:
    method, headers, body = request
    served = WITH.served
    lane, view = (send(client, method, headers, body) for client in CLIENTS)
    assert (lane.status_code, lane.content) == (view.status_code, view.content)
    assert lane.headers == view.headers
    assert WITHOUT.served == 0
    plain = (
        method == "POST"
        and headers.get("content-type") == "application/json"
        and "multipart/" not in headers.get("accept", "")
    )
    if not plain:
        assert WITH.served == served  # everything else is the view's


def test_the_lane_serves_plain_json_posts() -> None:
    served = WITH.served
    body = json.dumps({"query": BALANCE, "variables": {"id": wid(1)}}).encode()
    headers = {"content-type": "application/json", "authorization": "Bearer acme-key"}
    lane, view = (send(client, "POST", headers, body) for client in CLIENTS)
    assert lane.json() == {"data": {"wallet": {"balance": {"available": {"amount": "12.50"}}}}}
    assert (lane.status_code, lane.content, lane.headers) == (
        view.status_code,
        view.content,
        view.headers,
    )
    assert WITH.served == served + 1
    refused = json.dumps({"query": "{ nope }"}).encode()
    assert send(CLIENTS[0], "POST", headers, refused).status_code == 200  # an answer, served
    assert WITH.served == served + 2
    batch = json.dumps([{"query": BALANCE}]).encode()
    assert send(CLIENTS[0], "POST", headers, batch).status_code == 400  # the view's refusal
    assert WITH.served == served + 2

"""/graphql served by Strawberry's plain ASGI app in front of FastAPI's routes: the same
answers, limits and errors as the FastAPI router it replaced."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
from fastapi.testclient import TestClient

from domain.ledger import world_account_id
from domain.principal import Principal
from infrastructure.read_queries import BatchedReads, PgReadQueries
from read_api import asgi
from read_api import schema as read_schema
from read_api.asgi import ContextFactory, LedgerGraphQL
from read_api.context import ReadContext
from read_api.ports import Scope, WalletRecord
from tests.conftest import auth, new_key, wait_for_projections

pytestmark = pytest.mark.integration

BALANCE_Q = "query($id: ID!) { wallet(id: $id) { balance { available { amount } } } }"


def gql(client, key, query, variables=None, **headers):
    if key is not None:
        headers.update(auth(key))
    r = client.post("/graphql", json={"query": query, "variables": variables}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    return r.json()


def problem(body):
    return body["errors"][0]["extensions"]["type"]


def funded_wallet(client, container, key):
    r = client.post("/v1/wallets", json={"currency": "USD"}, headers=auth(key, new_key()))
    wid = r.json()["wallet"]["id"]
    body = {"wallet_id": wid, "amount": "7.50", "currency": "USD"}
    r = client.post("/v1/deposits", json=body, headers=auth(key, new_key()))
    wait_for_projections(container, r.json()["position"])
    return wid, r.json()["position"]


def test_graphql_is_the_first_route_and_answers(client, container, merchant_key):
    first = client.app.router.routes[0]
    assert first.path == "/graphql" and isinstance(first.app, LedgerGraphQL)
    wid, pos = funded_wallet(client, container, merchant_key)
    body = gql(client, merchant_key, BALANCE_Q, {"id": wid})
    assert body == {"data": {"wallet": {"balance": {"available": {"amount": "7.50"}}}}}
    waited = gql(client, merchant_key, BALANCE_Q, {"id": wid}, **{"Ledger-Min-Position": str(pos)})
    assert waited == body
    late = gql(client, merchant_key, BALANCE_Q, {"id": wid}, **{"Ledger-Min-Position": "x"})
    assert late["data"] is None and problem(late) == "/problems/validation-error"


def test_graphql_by_get_and_graphiql(client, container, merchant_key):
    wid, _ = funded_wallet(client, container, merchant_key)
    r = client.get(
        "/graphql",
        params={"query": f'{{ wallet(id: "{wid}") {{ currency }} }}'},
        headers=auth(merchant_key),
    )
    assert r.json() == {"data": {"wallet": {"currency": "USD"}}}
    page = client.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text.lower()
    paths = client.get("/openapi.json").json()["paths"]
    assert {"get", "post"} <= set(paths["/graphql"])


def test_graphql_errors_and_limits(client, merchant_key):
    anonymous = gql(client, None, "{ wallets { edges { cursor } } }")
    assert anonymous["data"] == {"wallets": None}
    assert problem(anonymous) == "/problems/unauthorized"
    wrong = gql(client, "lk_wrong", "{ wallets { edges { cursor } } }")
    assert problem(wrong) == "/problems/unauthorized"
    assert "unknown or revoked" in wrong["errors"][0]["message"]
    aliases = " ".join(f"a{i}: wallets {{ edges {{ cursor }} }}" for i in range(16))
    too_many = gql(client, merchant_key, f"{{ {aliases} }}")
    assert too_many["data"] is None and problem(too_many) == "/problems/validation-error"
    deep = "{ wallets { edges { node { balance { posted { amount } } } } } }"
    nested = "{ transfers { edges { node { amount { amount } } } } }"
    assert "errors" not in gql(client, merchant_key, deep)
    assert "errors" not in gql(client, merchant_key, nested)
    syntax = gql(client, merchant_key, "{ wallets { ")
    assert syntax["data"] is None and "Syntax Error" in syntax["errors"][0]["message"]
    assert problem(syntax) == "/problems/validation-error"
    unknown = gql(client, merchant_key, "{ nope }")
    assert problem(unknown) == "/problems/validation-error"
    assert client.put("/graphql", json={"query": "{ nope }"}).status_code == 405


def test_graphql_bodies_strawberry_refuses_are_still_refused(client, merchant_key):
    headers = {**auth(merchant_key), "Content-Type": "application/json"}
    for body, reason in (
        (b"{not json", "Unable to parse request body as JSON"),
        (b'{"query": 1}', "`query` must be a string or null"),
        (b'{"query": "{ wallets { edges { cursor } } }", "variables": []}', "`variables`"),
    ):
        r = client.post("/graphql", content=body, headers=headers)
        assert r.status_code == 400 and reason in r.text, r.text
    batch = [{"query": "{ wallets { edges { cursor } } }"}]
    r = client.post("/graphql", content=orjson.dumps(batch), headers=headers)
    assert r.status_code == 400  # batches are not enabled, as before
    text = client.post("/graphql", content=b"{}", headers={**auth(merchant_key)})
    assert text.status_code == 400  # no JSON content type


def test_graphql_body_limit_still_applies(client, container, merchant_key):
    big = "#" + "x" * (container.settings.max_body_bytes + 10)
    r = client.post("/graphql", json={"query": big}, headers=auth(merchant_key))
    assert r.status_code == 413


def test_an_accepted_key_is_trusted_briefly_then_asked_again(monkeypatch) -> None:
    calls: list[str] = []
    keys = {"good": Principal("acme", "merchant")}

    def authenticate(key: str) -> Principal | None:
        calls.append(key)
        return keys.get(key)

    now = [100.0]
    monkeypatch.setattr(asgi.time, "monotonic", lambda: now[0])
    contexts = ContextFactory(None, authenticate)  # type: ignore[arg-type]
    headers = {"authorization": "Bearer good"}

    async def principals() -> list[Principal | None]:
        return [(await contexts(headers)).principal for _ in range(3)]

    assert asyncio.run(principals()) == [keys["good"]] * 3
    assert calls == ["good"]
    now[0] += asgi.KEY_TRUST_S + 0.01

    async def together() -> list[Principal | None]:
        return [c.principal for c in await asyncio.gather(*(contexts(headers) for _ in range(9)))]

    assert asyncio.run(together()) == [keys["good"]] * 9
    assert calls == ["good"] * 2  # one asked again, the others kept the answer meanwhile
    del keys["good"]  # revoked
    now[0] += asgi.KEY_TRUST_S + 0.01
    assert asyncio.run(principals()) == [None] * 3
    assert calls == ["good"] * 5  # unknown keys are never trusted


def test_batched_wallet_lookups_answer_each_with_its_own_scope(
    client, container, merchant_key, other_merchant_key
):
    mine, _ = funded_wallet(client, container, merchant_key)
    theirs, _ = funded_wallet(client, container, other_merchant_key)
    world = str(world_account_id("USD"))
    missing = str(uuid.uuid4())
    queries = PgReadQueries(container.pool)
    batches: list[tuple[int, Scope]] = []
    by_id = queries.wallets_by_id

    def counted(ids: list[str], scope: Scope) -> dict[str, WalletRecord]:
        batches.append((len(ids), scope))
        return by_id(ids, scope)

    queries.wallets_by_id = counted  # type: ignore[method-assign]
    acme, everyone = Scope("acme"), Scope(None)
    asks = [(w, s) for w in (mine, theirs, world, missing) for s in (acme, everyone)] * 3

    async def lookups() -> list[WalletRecord | None]:
        reads = BatchedReads(queries)
        return await asyncio.gather(*(reads.wallet(w, s) for w, s in asks))

    answers = asyncio.run(lookups())
    assert answers == [queries.wallet(w, s) for w, s in asks]
    assert [a is not None for a in answers[:8]] == [True, True, False, True, False, True] + [
        False,
        False,
    ]
    assert sorted(batches, key=lambda b: b[1].sees_all) == [(4, acme), (4, everyone)]


def test_a_failed_batch_fails_each_of_its_lookups(container) -> None:
    queries = PgReadQueries(container.pool)

    def broken(ids: list[str], scope: Scope) -> dict[str, WalletRecord]:
        raise RuntimeError("connection lost")

    queries.wallets_by_id = broken  # type: ignore[method-assign]

    async def lookups() -> list[object]:
        reads = BatchedReads(queries)
        asks = (reads.wallet(str(uuid.uuid4()), Scope(None)) for _ in range(3))
        return await asyncio.gather(*asks, return_exceptions=True)

    assert [str(e) for e in asyncio.run(lookups())] == ["connection lost"] * 3


def test_each_query_text_is_parsed_and_validated_once(monkeypatch) -> None:
    parsed: list[str] = []
    real_parse = read_schema.parse

    def parse(query: str, **options: object) -> object:
        parsed.append(query)
        return real_parse(query, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(read_schema, "parse", parse)
    schema = read_schema.build_schema(max_depth=3)

    def types(query: str) -> list[str]:
        context = ReadContext(None, None)  # type: ignore[arg-type]
        result = asyncio.run(schema.execute(query, context_value=context))
        return [e.extensions["type"] for e in result.errors or [] if e.extensions]

    shallow = "{ wallets { edges { cursor } } }"
    deep = "{ wallets { edges { node { balance { posted { amount } } } } } }"
    aliases = "{ " + " ".join(f"a{i}: wallets {{ edges {{ cursor }} }}" for i in range(16)) + " }"
    for _ in range(2):
        assert types(shallow) == ["/problems/unauthorized"]
        assert types(deep) == ["/problems/validation-error"]
        assert types(aliases) == ["/problems/validation-error"]
        # A syntax error: validation-error, as docs/api.md says (it had no type before).
        assert types("{ wallets {") == ["/problems/validation-error"]
    assert parsed == [shallow, deep, aliases, "{ wallets {", "{ wallets {"]


def test_graphql_is_answered_in_front_of_fastapi_with_its_500(client, merchant_key) -> None:
    """/graphql bypasses FastAPI's middleware; an unexpected failure still gets the
    service's problem+json 500, never a bare error."""
    graphql = client.app.router.routes[0].app
    assert client.app.graphql_front is not None
    served = graphql.served
    gql(client, merchant_key, "{ wallets { edges { cursor } } }")
    assert graphql.served == served + 1  # the lane, reached through the front

    def broken(key: str) -> Principal | None:
        raise RuntimeError("key store unreachable")

    real, graphql.contexts.authenticate = graphql.contexts.authenticate, broken
    try:
        r = TestClient(client.app, raise_server_exceptions=False).post(
            "/graphql",
            json={"query": "{ wallets { edges { cursor } } }"},
            headers=auth("lk_never_seen_before"),
        )
    finally:
        graphql.contexts.authenticate = real
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "/problems/internal-error"

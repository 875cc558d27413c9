"""Small pieces of the command API's request handling."""

from __future__ import annotations

import uuid

from commands.api.deps import new_correlation_id, request_hash


def test_correlation_ids_are_distinct_version_4_uuids() -> None:
    ids = [new_correlation_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for value in ids[:100]:
        parsed = uuid.UUID(value)
        assert (str(parsed), parsed.version, parsed.variant) == (value, 4, uuid.RFC_4122)


def test_the_request_hash_ignores_key_order_and_whitespace_but_not_values() -> None:
    a = request_hash("POST", "/v1/transfers", b'{"a": 1, "b": "x"}')
    assert a == request_hash("POST", "/v1/transfers", b'{"b":"x","a":1}')
    assert a != request_hash("POST", "/v1/transfers", b'{"a": 2, "b": "x"}')
    assert a != request_hash("POST", "/v1/deposits", b'{"a": 1, "b": "x"}')

"""Small pieces of the command API's request handling."""

from __future__ import annotations

from commands.api.deps import request_hash


def test_the_request_hash_ignores_key_order_and_whitespace_but_not_values() -> None:
    a = request_hash("POST", "/v1/transfers", b'{"a": 1, "b": "x"}')
    assert a == request_hash("POST", "/v1/transfers", b'{"b":"x","a":1}')
    assert a != request_hash("POST", "/v1/transfers", b'{"a": 2, "b": "x"}')
    assert a != request_hash("POST", "/v1/deposits", b'{"a": 1, "b": "x"}')

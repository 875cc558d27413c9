"""RFC 9457 problem details with stable ``type`` URIs."""

from __future__ import annotations

from typing import Any

from domain.errors import LedgerError

PROBLEM_BASE = "/problems/"


def problem(code: str, title: str, status: int, detail: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
    }
    body.update(extra)
    return body


def problem_from_error(error: LedgerError) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    index = getattr(error, "index", None)
    if index is not None:
        extra["index"] = index
    return problem(error.code, error.title, error.status, error.detail, **extra)


class RequestProblem(Exception):
    """An error that is not a business rule (bad key, key reuse, key in use...)."""

    def __init__(self, code: str, title: str, status: int, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.title = title
        self.status = status
        self.detail = detail

    def body(self) -> dict[str, Any]:
        return problem(self.code, self.title, self.status, self.detail)


def key_reused() -> RequestProblem:
    return RequestProblem(
        "idempotency-key-reused",
        "Idempotency key reused",
        422,
        "this Idempotency-Key was used with a different request; use a new key",
    )


def key_in_use() -> RequestProblem:
    return RequestProblem(
        "idempotency-key-in-use",
        "Idempotency key in use",
        409,
        "a request with this Idempotency-Key is still being processed; retry later",
    )


def conflict() -> RequestProblem:
    return RequestProblem(
        "concurrency-conflict",
        "Concurrent modification",
        409,
        "the wallets changed concurrently too often; retry the request with the same key",
    )

"""Every error leaves the API as RFC 9457 problem+json with a stable ``type``."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from eventsourcing.persistence import PersistenceError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from commands.api.deps import problem_response
from commands.problems import RequestProblem, problem, problem_from_error
from domain.errors import LedgerError

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: ("bad-request", "Bad request"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
}


def _clean(errors: list[Any]) -> list[dict[str, Any]]:
    out = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ())]
        out.append({"loc": loc, "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))})
    return out[:50]


def store_unavailable_response(exc: PersistenceError) -> Response:
    log.error("event store unavailable: %s", exc)
    return problem_response(
        503,
        problem(
            "service-unavailable",
            "Service unavailable",
            503,
            "the ledger's database is unavailable; retry with the same Idempotency-Key",
        ),
    )


def known_error_response(exc: BaseException) -> Response | None:
    """The problem answer of an error a command can end with, or None for a bug."""
    if isinstance(exc, LedgerError):
        return problem_response(exc.status, problem_from_error(exc))
    if isinstance(exc, RequestProblem):
        return problem_response(exc.status, exc.body())
    if isinstance(exc, PersistenceError):
        return store_unavailable_response(exc)
    return None


def install(app: FastAPI) -> None:
    async def known(_: Request, exc: Exception) -> Response:
        answer = known_error_response(exc)
        assert answer is not None
        return answer

    for kind in (LedgerError, RequestProblem, PersistenceError):
        app.add_exception_handler(kind, known)

    @app.exception_handler(RequestValidationError)
    async def validation(_: Request, exc: RequestValidationError) -> Response:
        errors = _clean(list(exc.errors()))
        detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:5])
        return problem_response(
            422, problem("validation-error", "Invalid request", 422, detail, errors=errors)
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        code, title = _HTTP_CODES.get(exc.status_code, ("http-error", "HTTP error"))
        return problem_response(
            exc.status_code, problem(code, title, exc.status_code, str(exc.detail))
        )

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> Response:  # pragma: no cover
        log.exception("unexpected error", exc_info=exc)
        return problem_response(
            500, problem("internal-error", "Internal error", 500, "unexpected error; it was logged")
        )


class BodySizeLimit:
    """Refuse request bodies over ``limit`` bytes with 413, before anything is parsed.

    ``per_path`` raises the limit for given paths (a batch of 8,190 transfers is larger
    than any other request)."""

    def __init__(self, app: Any, limit: int, per_path: dict[str, int] | None = None) -> None:
        self.app = app
        self.default = limit
        self.per_path = per_path or {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope.get("path", ""), self.default)
        declared = None
        for name, value in scope.get("headers") or ():
            if name == b"content-length":
                declared = value
                break
        if declared is not None and declared.isdigit():
            if int(declared) > limit:
                await self._reject(send, limit)
                return
            # The server delivers no more body than the declared length (a longer one
            # is the next request on the connection), so there is nothing to count.
            await self.app(scope, receive, send)
            return
        received = 0
        too_large = False
        started = False

        async def limited_receive() -> Any:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Any) -> None:
            nonlocal started
            if too_large and not started:
                return  # FastAPI turns _TooLarge into a 400; the answer is a 413
            started = True
            await send(message)

        with contextlib.suppress(_TooLarge):
            await self.app(scope, limited_receive, guarded_send)
        if too_large and not started:
            await self._reject(send, limit)

    async def _reject(self, send: Any, limit: int) -> None:
        import orjson

        body = orjson.dumps(
            problem(
                "payload-too-large",
                "Payload too large",
                413,
                f"request bodies are limited to {limit} bytes",
            )
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass

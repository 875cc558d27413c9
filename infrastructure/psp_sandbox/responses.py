"""Turning results, problems and injected failures into HTTP answers."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from infrastructure.psp_sandbox.problems import GatewayFailure, Problem
from infrastructure.psp_sandbox.sandbox import Outcome

PROBLEM_JSON = "application/problem+json"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def problem_response(problem: Problem) -> Response:
    return Response(orjson.dumps(problem.body()), problem.status, media_type=PROBLEM_JSON)


class DroppedResponse(Response):
    """Starts an answer and never finishes it: the server closes the connection."""

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )


async def outcome_response(outcome: Outcome) -> Response:
    if outcome.after == "drop":
        return DroppedResponse()
    if outcome.after == "hang":
        # The charge is done; the client gives up long before this answer comes.
        await asyncio.sleep(outcome.hang_s)
    result = outcome.result
    media_type = PROBLEM_JSON if result.status >= 400 else "application/json"
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return Response(orjson.dumps(result.body), result.status, headers, media_type=media_type)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def problem(_: Request, exc: Problem) -> Response:
        return problem_response(exc)

    @app.exception_handler(GatewayFailure)
    async def gateway_failure(_: Request, __: GatewayFailure) -> Response:
        return Response(
            b"<html><body><h1>502 Bad Gateway</h1></body></html>", 502, media_type="text/html"
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> Response:
        # Only where and what: FastAPI's default echoes the input, card numbers included.
        errors = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        return problem_response(
            Problem(422, "invalid_request", "The request body is not valid.", errors=errors)
        )

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return problem_response(Problem(exc.status_code, code, str(exc.detail)))

"""Expected GraphQL errors, carrying the problem ``type`` URIs of the REST API.

A resolver raises a ``domain.errors.LedgerError`` (``NotFound``, ``ValidationError`` or
one of the two below); ``shape_errors`` (run by the schema's extension) turns it into a
GraphQL error with ``extensions: {"type": "/problems/<code>", "title": ...}``. Anything
else raised while executing is unexpected: it is logged and reaches the client only as
``internal-error``, its message masked. Errors found before execution (syntax, unknown
fields, bad argument values, the depth limit) are ``validation-error``.
"""

from __future__ import annotations

import logging
from typing import Any

from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import GraphQLError
from strawberry.types import ExecutionContext as StrawberryExecutionContext
from strawberry.types.execution import ExecutionResult

from domain.errors import LedgerError

log = logging.getLogger(__name__)

PROBLEM_BASE = "/problems/"


class Unauthorized(LedgerError):
    code = "unauthorized"
    title = "Unauthorized"
    status = 401


class PositionNotReached(LedgerError):
    code = "position-not-reached"
    title = "Read models have not reached the requested position"
    status = 504


def problem_extensions(error: LedgerError) -> dict[str, Any]:
    return {"type": PROBLEM_BASE + error.code, "title": error.title}


def is_expected(error: GraphQLError) -> bool:
    """True unless the error is an unexpected exception raised while executing."""
    return error.path is None or isinstance(error.original_error, LedgerError | GraphQLError)


def shape(error: GraphQLError) -> GraphQLError:
    original = error.original_error
    if isinstance(original, LedgerError):
        error.extensions = {**(error.extensions or {}), **problem_extensions(original)}
        return error
    if error.path is None:
        if "type" not in (error.extensions or {}):
            error.extensions = {
                **(error.extensions or {}),
                "type": PROBLEM_BASE + "validation-error",
                "title": "Invalid request",
            }
        return error
    if isinstance(original, GraphQLError):
        return error
    return GraphQLError(
        "unexpected error; it was logged",
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions={"type": PROBLEM_BASE + "internal-error", "title": "Internal error"},
    )


def shape_errors(execution_context: StrawberryExecutionContext) -> None:
    """Give every error of the operation's result a problem ``type``."""
    result = execution_context.result
    if isinstance(result, GraphQLExecutionResult | ExecutionResult) and result.errors:
        result.errors = [shape(e) for e in result.errors]

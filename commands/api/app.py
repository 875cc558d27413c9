"""The command API's routes, handlers and middleware, added to a FastAPI app."""

from __future__ import annotations

from fastapi import FastAPI

from commands.api import deposits, errors, health, problems_doc, transfers, wallets
from commands.api.deps import ApiContext
from commands.api.health import HealthProbe


def install_command_api(
    app: FastAPI, context: ApiContext, health_probe: HealthProbe, max_body_bytes: int
) -> None:
    app.state.ledger = context
    app.state.health_probe = health_probe
    for module in (wallets, deposits, transfers, health, problems_doc):
        app.include_router(module.router)
    errors.install(app)
    app.add_middleware(errors.BodySizeLimit, limit=max_body_bytes)

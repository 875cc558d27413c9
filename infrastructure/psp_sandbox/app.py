"""The sandbox PSP's ASGI app factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager

from fastapi import FastAPI

from infrastructure.psp_sandbox.admin_api import admin_router
from infrastructure.psp_sandbox.provider_api import provider_router
from infrastructure.psp_sandbox.responses import install_error_handlers
from infrastructure.psp_sandbox.sandbox import Sandbox
from infrastructure.psp_sandbox.signing import new_secret


def create_app(
    *,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    async_providers: Collection[str] = (),
) -> FastAPI:
    """A fresh sandbox playing zenith, ramp and monnify.

    ``webhook_url`` is where every provider POSTs its webhooks until ``PUT /_config/{p}``
    says otherwise; ``webhook_secret`` (``whsec_...``) signs them, random if not given
    (``GET /_config`` shows it). ``async_providers`` start in async mode."""
    sandbox = Sandbox(
        webhook_url=webhook_url,
        webhook_secret=webhook_secret or new_secret(),
        async_providers=async_providers,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sandbox.webhooks.start()
        try:
            yield
        finally:
            await sandbox.close()

    app = FastAPI(
        title="PSP sandbox",
        version="0.1.0",
        summary="Three fake payment service providers with fault injection, for tests.",
        lifespan=lifespan,
    )
    app.state.sandbox = sandbox
    install_error_handlers(app)
    app.include_router(admin_router(sandbox))
    app.include_router(provider_router(sandbox))
    return app

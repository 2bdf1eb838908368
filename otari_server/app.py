"""create_app(settings): the one place routers, state and error handling are wired."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import APIRouter, FastAPI

from otari_server import __version__, errors
from otari_server.routes import budgets, health, keys, models, pricing, usage, users
from otari_server.runtime import close_runtime, open_runtime, start_background
from otari_server.settings import Settings

# Routers served under /v1 and, for the otari client SDK, again under /api/v1.
API_ROUTERS: list[APIRouter] = [
    keys.router, users.router, budgets.router, pricing.router, usage.router, models.router,
]


def create_app(settings: Settings) -> FastAPI:
    """A fresh app; its lifespan opens the database and background work."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await to_thread.run_sync(open_runtime, settings)
        app.state.runtime = runtime
        start_background(runtime)
        try:
            yield
        finally:
            await close_runtime(runtime)

    app = FastAPI(title="otari-gateway", version=__version__, lifespan=lifespan,
                  description="Self-hosted, OpenAI-compatible LLM gateway")
    errors.install(app)
    app.include_router(health.router)
    for router in API_ROUTERS:
        app.include_router(router)
        app.include_router(router, prefix="/api", include_in_schema=False)
    return app

"""create_app(settings): the one place routers, state and error handling are wired."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, FastAPI
from starlette.middleware.cors import CORSMiddleware

from otari_server import __version__, errors
from otari_server.api import (
    alerts,
    budgets,
    health,
    keys,
    models,
    pricing,
    providers,
    routing,
    usage,
    users,
)
from otari_server.edge.access_log import AccessLog
from otari_server.edge.front import Fronted
from otari_server.edge.hotpath import HotPath
from otari_server.edge.middleware import RequestContext
from otari_server.generation import batch_routes, count_tokens, wire
from otari_server.generation import routes as generation_routes
from otari_server.runtime import close_runtime, open_runtime, providers_of, start_background
from otari_server.settings import Settings
from otari_server.tools.config import tools_config

# Response headers a browser client may read: the request id and the retry/pacing advice.
_EXPOSED = [
    "x-request-id",
    "request-id",
    "retry-after",
    "retry-after-ms",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
]

# Routers served under /v1 and, for the otari client SDK, again under /api/v1.
API_ROUTERS: list[APIRouter] = [
    generation_routes.router,
    count_tokens.router,
    batch_routes.router,
    models.router,
    keys.router,
    users.router,
    budgets.router,
    pricing.router,
    usage.router,
    providers.router,
    alerts.router,
    routing.router,
]


def check_config(settings: Settings) -> None:
    """Raise ConfigError (one line naming the key) for a [providers] or [tools] table that
    cannot be used, so start-up stops before serving rather than at the first request."""
    providers_of(settings)
    tools_config(settings)


def create_app(settings: Settings) -> FastAPI:
    """A fresh app; its lifespan opens the database and background work.

    With a platform token the gateway runs connected to an otari platform instead: no
    database, no local keys or providers (see otari_server.connected).
    """
    if settings.connected:
        from otari_server.connected.app import create_connected_app

        return create_connected_app(settings)
    check_config(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await to_thread.run_sync(open_runtime, settings)
        app.state.runtime = runtime
        try:
            # Inside the try: a start that fails half-way still closes what it opened (the
            # database pool, whose connections would otherwise be left to the collector).
            await start_background(runtime)
            yield
        finally:
            await close_runtime(runtime)

    app = Fronted(
        title="otari-gateway",
        version=__version__,
        lifespan=lifespan,
        description="Self-hosted, OpenAI-compatible LLM gateway",
    )
    errors.install(app)
    app.include_router(health.router)
    app.include_router(health.metrics_router)
    for router in API_ROUTERS:
        app.include_router(router)
        app.include_router(router, prefix="/api", include_in_schema=False)
    # In front of FastAPI, innermost first (see edge/front.py): every request gets its id
    # and size check, then the hot path; the rest goes on to FastAPI.
    app.front(HotPath)
    app.front(
        partial(
            RequestContext,
            max_body_bytes=settings.max_body_bytes,
            max_header_bytes=settings.max_header_bytes,
        )
    )
    # Outside RequestContext: its refusals (413, 431) are logged too, with their request id.
    app.front(AccessLog)
    if settings.cors_allow_origins:
        # Outermost: a preflight is answered before any credential or body check.
        app.front(
            partial(
                CORSMiddleware,
                allow_origins=list(settings.cors_allow_origins),
                allow_methods=["*"],
                allow_headers=["*"],
                expose_headers=_EXPOSED,
                max_age=600,
            )
        )
    _document_wire_schemas(app)
    return app


def _document_wire_schemas(app: FastAPI) -> None:
    """Add the generation endpoints' request schemas to the generated OpenAPI document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for model in wire.SCHEMAS:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[model.__name__] = schema
            schemas[wire.TRANSCRIPTION_FORM["title"]] = wire.TRANSCRIPTION_FORM
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

"""create_connected_app(settings): the gateway as a platform's data plane, wired in one place."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI

from otari_server import __version__, errors
from otari_server.connected import health, routes
from otari_server.connected.config import platform_config
from otari_server.connected.queue import UsageQueue
from otari_server.connected.runtime import ConnectedRuntime
from otari_server.edge.front import Fronted
from otari_server.edge.middleware import RequestContext
from otari_server.generation.wire import ChatCompletionRequest, McpServerConfig
from otari_server.settings import Settings


def create_connected_app(settings: Settings) -> FastAPI:
    """A fresh app serving health and chat completions; no database, no local keys.

    Raises ConfigError when the `[platform]` table, or the usage queue file, is not usable.
    """
    config = platform_config(settings)
    UsageQueue(config.queue_path, config.usage_queue_max_bytes).check()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = ConnectedRuntime.build(settings, config)
        await runtime.open()
        app.state.connected = runtime
        try:
            yield
        finally:
            await runtime.close()

    app = Fronted(
        title="otari-gateway",
        version=__version__,
        lifespan=lifespan,
        description="Self-hosted, OpenAI-compatible LLM gateway, connected to an otari platform",
    )
    errors.install(app)
    app.include_router(health.router)
    app.include_router(health.metrics_router)
    app.include_router(routes.router)
    # In front of FastAPI, innermost first (see edge/front.py): every request gets its id
    # and size check, then the chat fast path.
    app.front(routes.ChatPath)
    app.front(
        partial(
            RequestContext,
            max_body_bytes=settings.max_body_bytes,
            max_header_bytes=settings.max_header_bytes,
        )
    )
    _document_chat_schema(app)
    return app


def _document_chat_schema(app: FastAPI) -> None:
    """Add the chat request schema the chat route's OpenAPI entry refers to."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for model in (ChatCompletionRequest, McpServerConfig):
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[model.__name__] = schema
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

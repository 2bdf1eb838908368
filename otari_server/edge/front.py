"""The app with otari's edge in front of FastAPI's own request handling.

Starlette runs its middleware stack on every request before any of ours: its error page,
FastAPI's telemetry check (three environment lookups per request) and its body-limit wrapper,
each an extra coroutine frame. The generation endpoints use none of it, and together it cost
about 5% of a proxied request's CPU. So HTTP requests enter our edge (CORS, access log,
request id and body limit, the fast path) first; whatever the fast path does not serve goes
on to FastAPI's stack exactly as before. Lifespan and other scopes go to FastAPI directly.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send


class Fronted(FastAPI):
    """A FastAPI app whose HTTP requests pass through `edge` first.

    `front(layer)` wraps the edge in one more layer (the last one added is outermost); the
    innermost is FastAPI's own handling of the request.
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.edge: ASGIApp = self._fastapi

    def front(self, layer: Callable[[ASGIApp], ASGIApp]) -> None:
        """Put `layer` (an ASGI middleware taking the app it wraps) in front of the edge."""
        self.edge = layer(self.edge)

    async def _fastapi(self, scope: Scope, receive: Receive, send: Send) -> None:
        await FastAPI.__call__(self, scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await FastAPI.__call__(self, scope, receive, send)
            return
        scope["app"] = self  # what Starlette would set: request.app, app.state
        await self.edge(scope, receive, send)

"""Generation endpoints served straight from ASGI, ahead of FastAPI's routing.

FastAPI's per-request machinery (route matching over every management route, dependency
solving, exit stacks) costs about as much as the whole proxy. The generation endpoints need
none of it: they read raw JSON and answer raw bytes. They are still declared as FastAPI routes
(so /openapi.json describes them); this layer just reaches them in fewer hops.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from otari_server import audio, chat, errors, messages, moderations, proxy, responses
from otari_server.auth import Caller
from otari_server.deps import authenticate
from otari_server.endpoints import (
    CHAT,
    EMBEDDINGS,
    IMAGES_GENERATIONS,
    MESSAGES,
    MODERATIONS,
    RERANK,
    RESPONSES,
    SPEECH,
    TRANSCRIPTIONS,
    Endpoint,
)

Handler = Callable[[Request, Caller, Endpoint], Awaitable[Response]]

# POST endpoints served here; each is also a FastAPI route (routes/generation.py) for docs.
_HANDLERS: list[tuple[Handler, Endpoint]] = [
    (chat.forward_chat, CHAT),
    (messages.forward, MESSAGES),
    (responses.forward, RESPONSES),
    (proxy.forward_json, EMBEDDINGS),
    (moderations.forward, MODERATIONS),
    (proxy.forward_json, RERANK),
    (proxy.forward_json, IMAGES_GENERATIONS),
    (audio.forward, TRANSCRIPTIONS),
    (audio.forward, SPEECH),
]
ROUTES: dict[str, tuple[Handler, Endpoint]] = {
    prefix + endpoint.path: (handler, endpoint)
    for handler, endpoint in _HANDLERS for prefix in ("", "/api")
}


class HotPath:
    """POSTs to a generation endpoint go straight to their handler; the rest to the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        handler, endpoint = route
        try:
            caller = await authenticate(request)
            response = await handler(request, caller, endpoint)
        except Exception as exc:
            response = await errors.respond(request, exc)
        await response(scope, receive, send)

"""The /v1 surface in connected mode: chat completions, and a clear 404 for everything else."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from otari_server import errors
from otari_server.connected.forward import forward_chat
from otari_server.errors import NotFound
from otari_server.generation.endpoints import CHAT, CONNECTED, served_paths
from otari_server.generation.wire import ChatCompletionRequest, body_of

# Bare and /api-prefixed, as in standalone mode (edge.endpoints lists what connected mode serves).
CHAT_PATHS = served_paths(CONNECTED)
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]

router = APIRouter(tags=["chat"])


@router.post(CHAT.path, openapi_extra=body_of(ChatCompletionRequest))
async def chat_completions(request: Request) -> Response:
    """OpenAI-compatible chat completions, authorized by the platform (Bearer user token)."""
    return await forward_chat(request)


# The bare prefixes too: without them /v1 would be redirected (307) to /v1/.
@router.api_route("/v1", methods=METHODS, include_in_schema=False)
@router.api_route("/api/v1", methods=METHODS, include_in_schema=False)
@router.api_route("/v1/{rest:path}", methods=METHODS, include_in_schema=False)
@router.api_route("/api/v1/{rest:path}", methods=METHODS, include_in_schema=False)
async def not_available(request: Request) -> Response:
    """Every other /v1 endpoint belongs to standalone mode (OpenAI-shaped, whatever the path)."""
    path = request.url.path
    if path in CHAT_PATHS:
        raise HTTPException(405, "Method Not Allowed", headers={"Allow": "POST"})
    message = (
        f"{request.method} {path} is not available in connected mode: this gateway "
        "serves POST /v1/chat/completions and /health only"
    )
    body = errors.error_body(
        "openai",
        404,
        message,
        NotFound.type,
        NotFound.anthropic_type,
        "not_available_in_connected_mode",
    )
    return JSONResponse(body, status_code=404)


class ChatPath:
    """POST /v1/chat/completions straight to its handler, ahead of FastAPI's routing.

    Routing and dependency solving would cost about as much as the proxy itself.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in CHAT_PATHS:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await forward_chat(request)
        except Exception as exc:
            response = await errors.respond(request, exc)
        await response(scope, receive, send)

"""POST /v1/chat/completions."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from otari_server import proxy
from otari_server.deps import CallerDep
from otari_server.endpoints import CHAT
from otari_server.wire import ChatCompletionRequest, body_of

router = APIRouter(prefix="/v1", tags=["chat"])


@router.post("/chat/completions", openapi_extra=body_of(ChatCompletionRequest))
async def chat_completions(request: Request, caller: CallerDep) -> Response:
    """OpenAI-compatible chat completions, streaming or not, to any configured provider."""
    return await proxy.forward_chat(request, caller, CHAT)

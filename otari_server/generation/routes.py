"""Generation endpoints as FastAPI routes: what /openapi.json documents.

Requests normally reach the same handlers through otari_server.edge.hotpath, ahead of FastAPI's
routing; these routes describe them (and serve them if the hot path is bypassed).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response

from otari_server.deps import CallerDep, RuntimeDep
from otari_server.generation import (
    audio,
    chat,
    messages,
    moderations,
    proxy,
    responses,
    stored_responses,
)
from otari_server.generation.endpoints import (
    CHAT,
    EMBEDDINGS,
    IMAGES_GENERATIONS,
    MESSAGES,
    MODERATIONS,
    RERANK,
    RESPONSES,
    SPEECH,
    TRANSCRIPTIONS,
)
from otari_server.generation.wire import (
    AudioSpeechRequest,
    ChatCompletionRequest,
    EmbeddingRequest,
    ImageGenerationRequest,
    MessagesRequest,
    ModerationRequest,
    ModerationResponse,
    RerankRequest,
    ResponsesRequest,
    body_of,
)

router = APIRouter()


@router.post(CHAT.path, tags=["chat"], openapi_extra=body_of(ChatCompletionRequest))
async def chat_completions(request: Request, caller: CallerDep) -> Response:
    """OpenAI-compatible chat completions, streaming or not, to any configured provider."""
    return await chat.forward_chat(request, caller, CHAT)


@router.post(MESSAGES.path, tags=["messages"], openapi_extra=body_of(MessagesRequest))
async def create_message(request: Request, caller: CallerDep) -> Response:
    """Anthropic Messages API-compatible endpoint (streaming, tools, extended thinking)."""
    return await messages.forward(request, caller, MESSAGES)


@router.post(RESPONSES.path, tags=["responses"], openapi_extra=body_of(ResponsesRequest))
async def create_response(request: Request, caller: CallerDep) -> Response:
    """OpenAI Responses API-compatible endpoint."""
    return await responses.forward(request, caller, RESPONSES)


_STORED: dict[int | str, dict[str, Any]] = {
    404: {
        "description": ("Not created through this gateway, another user's, or made by translation")
    }
}


@router.get("/v1/responses/{response_id}", tags=["responses"], responses=_STORED)
async def retrieve_response(
    response_id: str, request: Request, caller: CallerDep, runtime: RuntimeDep
) -> Response:
    """A stored response, from the provider that created it."""
    return await stored_responses.retrieve(
        runtime, caller, response_id, list(request.query_params.multi_items())
    )


@router.delete("/v1/responses/{response_id}", tags=["responses"], responses=_STORED)
async def delete_response(response_id: str, caller: CallerDep, runtime: RuntimeDep) -> Response:
    """Delete a stored response at the provider that created it."""
    return await stored_responses.remove(runtime, caller, response_id)


@router.get("/v1/responses/{response_id}/input_items", tags=["responses"], responses=_STORED)
async def list_response_input_items(
    response_id: str, request: Request, caller: CallerDep, runtime: RuntimeDep
) -> Response:
    """The input items of a stored response (after, before, limit, order, include)."""
    return await stored_responses.input_items(
        runtime, caller, response_id, list(request.query_params.multi_items())
    )


@router.post("/v1/responses/{response_id}/cancel", tags=["responses"], responses=_STORED)
async def cancel_response(response_id: str, caller: CallerDep, runtime: RuntimeDep) -> Response:
    """Cancel a background response at the provider that created it."""
    return await stored_responses.cancel(runtime, caller, response_id)


@router.post(EMBEDDINGS.path, tags=["embeddings"], openapi_extra=body_of(EmbeddingRequest))
async def create_embedding(request: Request, caller: CallerDep) -> Response:
    """Embeddings for text input."""
    return await proxy.forward_json(request, caller, EMBEDDINGS)


@router.post(
    MODERATIONS.path,
    tags=["moderations"],
    response_model=ModerationResponse,
    openapi_extra=body_of(ModerationRequest),
)
async def create_moderation(
    request: Request, caller: CallerDep, include_raw: bool = Query(False)
) -> Response:
    """OpenAI-compatible moderation; include_raw adds each provider result verbatim."""
    return await moderations.forward(request, caller, MODERATIONS)


@router.post(RERANK.path, tags=["rerank"], openapi_extra=body_of(RerankRequest))
async def create_rerank(request: Request, caller: CallerDep) -> Response:
    """Reorder documents by relevance to a query."""
    return await proxy.forward_json(request, caller, RERANK)


@router.post(
    IMAGES_GENERATIONS.path, tags=["images"], openapi_extra=body_of(ImageGenerationRequest)
)
async def create_image(request: Request, caller: CallerDep) -> Response:
    """Images from a text prompt."""
    return await proxy.forward_json(request, caller, IMAGES_GENERATIONS)


@router.post(
    TRANSCRIPTIONS.path,
    tags=["audio"],
    openapi_extra=body_of(
        "Body_create_transcription_v1_audio_transcriptions_post", "multipart/form-data"
    ),
)
async def create_transcription(request: Request, caller: CallerDep) -> Response:
    """Transcribe an audio upload."""
    return await audio.forward(request, caller, TRANSCRIPTIONS)


@router.post(SPEECH.path, tags=["audio"], openapi_extra=body_of(AudioSpeechRequest))
async def create_speech(request: Request, caller: CallerDep) -> Response:
    """Speech from text, streamed back with the provider's content type."""
    return await audio.forward(request, caller, SPEECH)

"""Request schemas of the generation endpoints, for the OpenAPI document only.

The hot path does not validate through these (it forwards the client's JSON untouched and
checks only what it needs); they exist so /openapi.json describes the contract.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class McpServerConfig(BaseModel):
    """An MCP server the gateway may call tools on."""

    name: str = Field(..., min_length=1, max_length=128)
    url: str = Field(..., min_length=1)
    authorization_token: str | None = None
    allowed_tools: list[str] | None = None
    purpose_hint: str | None = Field(None, max_length=2000)


class ChatCompletionRequest(BaseModel):
    """OpenAI chat completion request; unknown fields are forwarded unchanged."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[dict[str, Any]] = Field(..., min_length=1)
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = None
    mcp_servers: list[McpServerConfig] | None = None
    mcp_server_ids: list[str] | None = None
    max_tool_iterations: int | None = Field(None, ge=1, le=25)
    tools_header: str | None = Field(None, max_length=4000)


class _Open(BaseModel):
    """Request bodies the gateway forwards: fields beyond the schema pass through."""

    model_config = ConfigDict(extra="allow")


class MessagesRequest(_Open):
    """Anthropic Messages API request."""

    model: str
    messages: list[dict[str, Any]] = Field(..., min_length=1)
    max_tokens: int
    system: str | list[dict[str, Any]] | None = None
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    cache_control: dict[str, Any] | None = None


class ResponsesRequest(_Open):
    """OpenAI Responses API request."""

    model: str
    input: Any
    stream: bool = False
    user: str | None = None


class EmbeddingRequest(_Open):
    """OpenAI embeddings request."""

    model: str
    input: str | list[str]
    encoding_format: str | None = None
    dimensions: int | None = None
    user: str | None = None


class ModerationRequest(_Open):
    """OpenAI moderations request."""

    model: str
    input: str | list[str] | list[dict[str, Any]]
    user: str | None = None


class ModerationResult(BaseModel):
    """A single moderation decision, typically one per input item."""

    flagged: bool
    categories: dict[str, bool] = Field(default_factory=dict)
    category_scores: dict[str, float] = Field(default_factory=dict)
    category_applied_input_types: dict[str, list[str]] | None = None
    provider_raw: dict[str, Any] | None = None


class ModerationResponse(BaseModel):
    """Moderation response (OpenAI's shape)."""

    id: str
    model: str
    results: list[ModerationResult]


class RerankRequest(_Open):
    """Cohere/Jina-style rerank request."""

    model: str
    query: str
    documents: list[str] = Field(..., min_length=1)
    top_n: int | None = Field(None, gt=0)
    max_tokens_per_doc: int | None = Field(None, gt=0)
    user: str | None = None


class ImageGenerationRequest(_Open):
    """OpenAI image generation request."""

    model: str
    prompt: str
    n: int | None = None
    size: str | None = None
    quality: str | None = None
    style: str | None = None
    response_format: str | None = None
    user: str | None = None


class AudioSpeechRequest(_Open):
    """OpenAI text-to-speech request."""

    model: str
    input: str
    voice: str
    instructions: str | None = None
    response_format: str | None = None
    speed: float | None = None
    user: str | None = None


class BatchRequestItem(BaseModel):
    """One request of a batch: its id and the chat completion body."""

    custom_id: str
    body: dict[str, Any]


class CreateBatchRequest(BaseModel):
    """A batch of chat completion requests for one model."""

    model: str
    requests: list[BatchRequestItem] = Field(..., min_length=1, max_length=10000)
    completion_window: str = "24h"
    metadata: dict[str, str] | None = None


TRANSCRIPTION_FORM = {
    "title": "Body_create_transcription_v1_audio_transcriptions_post",
    "type": "object",
    "required": ["file", "model"],
    "properties": {
        "file": {"type": "string", "contentMediaType": "application/octet-stream"},
        "model": {"type": "string"},
        "language": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "prompt": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "response_format": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "temperature": {"anyOf": [{"type": "number"}, {"type": "null"}]},
        "user": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    },
}

SCHEMAS: list[type[BaseModel]] = [
    ChatCompletionRequest,
    McpServerConfig,
    MessagesRequest,
    ResponsesRequest,
    EmbeddingRequest,
    ModerationRequest,
    ModerationResult,
    ModerationResponse,
    RerankRequest,
    ImageGenerationRequest,
    AudioSpeechRequest,
    BatchRequestItem,
    CreateBatchRequest,
]


def body_of(model: type[BaseModel] | str, media_type: str = "application/json") -> dict[str, Any]:
    """`openapi_extra` documenting a request body with the named schema."""
    name = model if isinstance(model, str) else model.__name__
    return {
        "requestBody": {
            "required": True,
            "content": {media_type: {"schema": {"$ref": f"#/components/schemas/{name}"}}},
        }
    }

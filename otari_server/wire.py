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


SCHEMAS: list[type[BaseModel]] = [ChatCompletionRequest, McpServerConfig]


def body_of(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` documenting a JSON request body with the given schema."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}

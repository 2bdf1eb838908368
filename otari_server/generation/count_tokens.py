"""POST /v1/messages/count_tokens: the Anthropic token-count estimate.

POST /v1/messages itself is a generation endpoint (generation/routes.py, served by the hot path).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from otari_server.deps import CallerDep
from otari_server.generation import messages

router = APIRouter(prefix="/v1", tags=["messages"])


class MessageTokensCount(BaseModel):
    """The estimated input tokens of a Messages request."""

    input_tokens: int


_COUNT_TOKENS_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "title": "MessageCountTokensRequest",
                    "type": "object",
                    "required": ["model", "messages"],
                    "additionalProperties": True,
                    "properties": {
                        "model": {"type": "string"},
                        "messages": {"type": "array", "items": {"type": "object"}, "minItems": 1},
                        "system": {
                            "anyOf": [
                                {"type": "string"},
                                {"type": "array", "items": {"type": "object"}},
                            ]
                        },
                        "tools": {"type": "array", "items": {"type": "object"}},
                        "tool_choice": {"type": "object"},
                        "thinking": {"type": "object"},
                    },
                }
            }
        },
    }
}


@router.post(
    "/messages/count_tokens", response_model=MessageTokensCount, openapi_extra=_COUNT_TOKENS_BODY
)
async def count_message_tokens(request: Request, caller: CallerDep) -> Response:
    """Estimate the input tokens of a Messages request: no provider call, no charge."""
    return await messages.count_tokens(request, caller)

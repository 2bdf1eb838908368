"""Gateway-run tools on chat completions (MCP servers, web search, code execution).

Placeholder until issue 8 lands: no request asks for gateway tools yet.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.responses import Response

from otari_server.auth import Caller
from otari_server.endpoints import Endpoint
from otari_server.errors import InvalidRequest


def wanted(body: dict[str, Any]) -> bool:
    """Whether the request asks the gateway to run tools itself."""
    return bool(body.get("mcp_servers") or body.get("mcp_server_ids"))


async def forward(request: Request, caller: Caller, endpoint: Endpoint, raw: bytes,
                  body: dict[str, Any]) -> Response:
    """Not available yet."""
    raise InvalidRequest("gateway-run tools are not available yet", param="mcp_servers")

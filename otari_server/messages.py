"""Placeholder: built by the issue-5 work on /v1/messages."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from otari_server.auth import Caller
from otari_server.endpoints import Endpoint
from otari_server.errors import NotFound


async def forward(request: Request, caller: Caller, endpoint: Endpoint) -> Response:
    """Not served yet."""
    raise NotFound(f"{endpoint.path} is not available yet")

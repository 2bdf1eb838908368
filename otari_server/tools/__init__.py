"""Gateway-run tools on chat completions: MCP servers, web search and code execution.

The gateway offers the model its own functions beside the client's, runs the calls the
model makes to them, feeds the results back and repeats until the model answers (or calls
one of the client's tools). Every model call is metered into one usage row; the budget
hold grows before each call to cover its worst case (see loop.cover).

May import: `generation/`, `translate/`, `providers/`, `accounting/`, `access/`, `errors`,
`settings`, `runtime`, `jsonio`.
Imported by: `generation.chat` (a request that asks for gateway-run tools), `app`.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.responses import Response

from otari_server.access.auth import Caller
from otari_server.errors import OtariError
from otari_server.generation.endpoints import Endpoint
from otari_server.generation.proxy import admit, runtime_of
from otari_server.tools import plan
from otari_server.tools.config import tools_config

__all__ = ["forward", "wanted"]


def wanted(body: dict[str, Any]) -> bool:
    """Whether the request asks the gateway to run tools itself."""
    return plan.wanted(body)


async def forward(
    request: Request, caller: Caller, endpoint: Endpoint, raw: bytes, body: dict[str, Any]
) -> Response:
    """POST /v1/chat/completions when the gateway runs tools: the whole story."""
    # The tool loop is loaded by the first request that asks for it: a gateway whose
    # clients never do keeps its memory.
    from otari_server.tools import answer, loop
    from otari_server.tools.toolbox import open_toolbox

    runtime = runtime_of(request)
    config = tools_config(runtime.settings)
    checked = plan.parse(body, config)
    call, upstream_model = await admit(
        runtime, caller, endpoint, raw, body, request.scope.get("otari.request_id")
    )
    meter = loop.Meter()
    status: str = "error"
    error: str | None = "interrupted"
    try:
        async with open_toolbox(checked, config) as toolbox:
            completion = await loop.run(call, upstream_model, checked, toolbox, meter)
        status, error = "success", None
    except OtariError as exc:
        error = exc.message
        raise
    finally:
        # Exactly once, whatever happened: every model call made so far is billed.
        call.settle(status, meter.consumption(), error)
    return answer.respond(completion, checked, meter)

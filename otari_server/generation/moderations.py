"""POST /v1/moderations: pass-through, with each provider result attached on request."""

from __future__ import annotations

import orjson
from fastapi import Request
from starlette.responses import Response

from otari_server.access.auth import Caller
from otari_server.accounting.prices import Consumption
from otari_server.generation.endpoints import Endpoint
from otari_server.generation.proxy import JSON_HEADERS, exchange_json


async def forward(request: Request, caller: Caller, endpoint: Endpoint) -> Response:
    """Moderate input; `?include_raw=true` copies each result into `provider_raw`."""
    call, content, answer = await exchange_json(request, caller, endpoint)
    call.settle("success", Consumption())
    if request.query_params.get("include_raw", "").lower() not in ("1", "true", "yes"):
        return Response(content, headers=JSON_HEADERS)
    for result in answer.get("results") or []:
        if isinstance(result, dict):
            result["provider_raw"] = dict(result)
    return Response(orjson.dumps(answer), headers=JSON_HEADERS)

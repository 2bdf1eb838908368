"""POST /v1/moderations: pass-through, with each provider result attached on request."""

from __future__ import annotations

import orjson
from fastapi import Request
from starlette.responses import Response

from otari_server.auth import Caller
from otari_server.endpoints import Endpoint
from otari_server.errors import OtariError
from otari_server.pricing import Consumption
from otari_server.proxy import (
    JSON_HEADERS,
    admit,
    check_fields,
    openai_only,
    parse_upstream,
    read_body,
    read_upstream,
    runtime_of,
)


async def forward(request: Request, caller: Caller, endpoint: Endpoint) -> Response:
    """Moderate input; `?include_raw=true` copies each result into `provider_raw`."""
    runtime = runtime_of(request)
    raw, body = await read_body(request, runtime.settings.max_body_bytes)
    check_fields(body, endpoint)
    call, upstream_model = await admit(runtime, caller, endpoint, raw, body,
                                       request.scope.get("otari.request_id"))
    try:
        openai_only(call)
        response = await runtime.upstream.post(call.provider, endpoint.upstream_path,
                                               dict(body, model=upstream_model))
        answer = parse_upstream(call, await read_upstream(call, response))
    except OtariError as exc:
        call.settle("error", error=exc.message)
        raise
    call.settle("success", Consumption())
    if request.query_params.get("include_raw", "").lower() in ("1", "true", "yes"):
        for result in answer.get("results") or []:
            if isinstance(result, dict):
                result["provider_raw"] = dict(result)
    return Response(orjson.dumps(answer), headers=JSON_HEADERS)

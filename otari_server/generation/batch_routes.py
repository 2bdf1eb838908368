"""Batches: /v1/batches, each call naming the provider that runs the batch."""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Query, Request, Response

from otari_server.deps import CallerDep, RuntimeDep
from otari_server.errors import BudgetExceeded
from otari_server.generation import batches
from otari_server.generation.endpoints import BATCHES
from otari_server.generation.proxy import JSON_HEADERS, read_body, refusal_row
from otari_server.generation.wire import CreateBatchRequest, body_of

router = APIRouter(prefix="/v1/batches", tags=["batches"])

Provider = Query(..., description="The configured provider that runs the batch")


def _json(content: dict[str, Any]) -> Response:
    return Response(orjson.dumps(content), headers=JSON_HEADERS)


@router.post("", openapi_extra=body_of(CreateBatchRequest))
async def create_batch(request: Request, caller: CallerDep, runtime: RuntimeDep) -> Response:
    """Create a batch of chat completion requests for asynchronous processing."""
    started = time.perf_counter()
    _, body = await read_body(request, runtime.settings.max_body_bytes)
    try:
        return _json(await batches.create(runtime, caller, body))
    except BudgetExceeded as exc:
        # Refused for the budget, like a chat request: a usage row says so (nothing spent).
        request_id = request.scope.get("otari.request_id")
        runtime.ledger.record(refusal_row(runtime, caller, BATCHES, body, request_id, exc, started))
        raise


@router.get("")
async def list_batches(
    caller: CallerDep,
    runtime: RuntimeDep,
    provider: str = Provider,
    after: str | None = Query(None, description="Batch id to list after"),
    limit: int | None = Query(None, ge=1, le=100),
) -> Response:
    """List batches for a provider."""
    return _json(await batches.list_batches(runtime, caller, provider, after, limit))


@router.get("/{batch_id}")
async def retrieve_batch(
    batch_id: str, caller: CallerDep, runtime: RuntimeDep, provider: str = Provider
) -> Response:
    """Retrieve the status of a batch."""
    return _json(await batches.retrieve(runtime, caller, provider, batch_id))


@router.post("/{batch_id}/cancel")
async def cancel_batch(
    batch_id: str, caller: CallerDep, runtime: RuntimeDep, provider: str = Provider
) -> Response:
    """Cancel a batch."""
    return _json(await batches.cancel(runtime, caller, provider, batch_id))


@router.get(
    "/{batch_id}/results",
    responses={
        409: {"description": "Batch is not yet complete"},
        502: {"description": "LLM provider error"},
    },
)
async def retrieve_batch_results(
    batch_id: str, caller: CallerDep, runtime: RuntimeDep, provider: str = Provider
) -> Response:
    """Retrieve the results of a completed batch; they are metered on the first retrieval."""
    return _json(await batches.results(runtime, caller, provider, batch_id))

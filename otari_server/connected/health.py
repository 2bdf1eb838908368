"""Health probes in connected mode: readiness means the platform answers."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from otari_server import __version__
from otari_server.api.health import process_facts
from otari_server.connected.config import redacted
from otari_server.connected.runtime import runtime_of
from otari_server.errors import NotFound

router = APIRouter(prefix="/health", tags=["health"])
metrics_router = APIRouter(tags=["metrics"])


@router.get("", response_model=dict[str, str])
async def health(request: Request) -> dict[str, str]:
    """Process facts for operators (`otari status`), and whether the platform answers."""
    runtime = runtime_of(request)
    reachable = await runtime.platform.reachable()
    return {
        "status": "healthy" if reachable else "degraded",
        "mode": "connected",
        "database": "none",
        "platform": "reachable" if reachable else "unreachable",
        "platform_url": redacted(runtime.config.base_url),
        **process_facts(runtime.started_at),
    }


@router.get("/liveness", response_model=str)
def liveness() -> str:
    """The process answers."""
    return "alive"


@router.get("/readiness", response_model=dict[str, object])
async def readiness(request: Request) -> JSONResponse:
    """Ready when the platform answers (checked at most every `health_cache` seconds)."""
    if not await runtime_of(request).platform.reachable():
        return JSONResponse({"status": "not ready", "platform": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ready", "platform": "reachable", "version": __version__})


@metrics_router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus metrics of the usage report queue, when switched on; 404 otherwise."""
    runtime = runtime_of(request)
    if not runtime.settings.metrics:
        raise NotFound("Metrics are off: set metrics = true (OTARI_METRICS=true)")
    # prometheus_client is loaded with the metrics, not before.
    from otari_server.connected import metrics as connected_metrics
    from otari_server.metrics import CONTENT_TYPE

    return Response(connected_metrics.render(runtime.reporter), media_type=CONTENT_TYPE)

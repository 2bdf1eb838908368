"""Health probes in connected mode: readiness means the platform answers."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from otari_server import __version__
from otari_server.connected.runtime import runtime_of
from otari_server.routes.health import process_facts

router = APIRouter(prefix="/health", tags=["health"])


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
        "platform_url": runtime.config.base_url,
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

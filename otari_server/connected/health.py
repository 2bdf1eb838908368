"""Health probes in connected mode: readiness means the platform answers."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from otari_server import __version__
from otari_server.connected.runtime import runtime_of

router = APIRouter(prefix="/health", tags=["health"])


@router.get("", response_model=dict[str, str])
async def health(request: Request) -> dict[str, str]:
    """Process facts for operators (`otari status`), and whether the platform answers."""
    runtime = runtime_of(request)
    reachable = await runtime.platform.reachable()
    uptime = (datetime.now(UTC) - runtime.started_at).total_seconds()
    return {
        "status": "healthy" if reachable else "degraded",
        "version": __version__,
        "mode": "connected",
        "database": "none",
        "platform": "reachable" if reachable else "unreachable",
        "platform_url": runtime.config.base_url,
        "pid": str(os.getpid()),
        "started_at": runtime.started_at.isoformat(),
        "uptime_seconds": f"{uptime:.1f}",
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

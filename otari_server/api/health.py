"""Health probes: general, liveness, readiness (503 when the database is unreachable)."""

from __future__ import annotations

import os
from datetime import datetime

from anyio import to_thread
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from otari_server import __version__
from otari_server.deps import RuntimeDep
from otari_server.errors import NotFound
from otari_server.storage import db
from otari_server.storage.tables import utcnow

router = APIRouter(prefix="/health", tags=["health"])


def process_facts(started_at: datetime) -> dict[str, str]:
    """Version, pid and uptime, as strings (both deployment modes report them)."""
    uptime = (utcnow() - started_at).total_seconds()
    return {
        "version": __version__,
        "pid": str(os.getpid()),
        "started_at": started_at.isoformat(),
        "uptime_seconds": f"{uptime:.1f}",
    }


@router.get("", response_model=dict[str, str])
def health(runtime: RuntimeDep) -> dict[str, str]:
    """Process facts for operators (`otari status`); all values are strings."""
    return {
        "status": "healthy",
        "mode": "standalone",
        "database": runtime.settings.database_kind,
        **process_facts(runtime.started_at),
    }


@router.get("/liveness", response_model=str)
def liveness() -> str:
    """The process answers."""
    return "alive"


@router.get("/readiness", response_model=dict[str, object])
async def readiness(runtime: RuntimeDep) -> JSONResponse:
    """Ready when the database answers a query; 503 otherwise."""
    try:
        revision = await to_thread.run_sync(db.ping, runtime.engine)
    except Exception as exc:  # any failure to reach the database means not ready
        return JSONResponse(
            {"status": "not ready", "database": "unreachable", "error": type(exc).__name__},
            status_code=503,
        )
    if revision != runtime.schema:
        # Serving an old or missing schema would fail request by request: say so here.
        return JSONResponse(
            {
                "status": "not ready",
                "database": "not migrated",
                "schema": revision or "none",
                "expected": runtime.schema,
            },
            status_code=503,
        )
    lag = runtime.ledger.lag()
    if lag > runtime.settings.usage_max_lag:
        # Usage that cannot be written is spend nobody sees: take this instance out.
        return JSONResponse(
            {
                "status": "not ready",
                "database": "ok",
                "usage": f"usage not written for {lag:.1f}s (usage_max_lag is "
                f"{runtime.settings.usage_max_lag:g}s)",
                "error": runtime.ledger.last_error or "writer behind",
            },
            status_code=503,
        )
    return JSONResponse({"status": "ready", "database": "ok", "version": __version__})


metrics_router = APIRouter(tags=["metrics"])


@metrics_router.get("/metrics", include_in_schema=False)
def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus metrics, when switched on (metrics = true); 404 otherwise."""
    if runtime.metrics is None:
        raise NotFound("Metrics are off: set metrics = true (OTARI_METRICS=true)")
    from otari_server.metrics import CONTENT_TYPE  # loaded with the metrics, not before

    return Response(runtime.metrics.render(), media_type=CONTENT_TYPE)

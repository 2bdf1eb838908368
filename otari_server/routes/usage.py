"""Usage logs, filtered by time and user, newest first, in bounded pages."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Query, Response

from otari_server import usage
from otari_server.deps import ReadSessionDep, require_master
from otari_server.jsonio import ExactJSONResponse, ExactRoute
from otari_server.routes.paging import Limit, Skip
from otari_server.schemas import UsageEntry

router = APIRouter(prefix="/v1/usage", tags=["usage"], route_class=ExactRoute,
                   dependencies=[Depends(require_master)])


@router.get("", response_model=list[UsageEntry])
def list_usage(
    session: ReadSessionDep,
    start_date: datetime | None = Query(None, description="Rows with timestamp >= start_date"),
    end_date: datetime | None = Query(None, description="Rows with timestamp < end_date"),
    user_id: list[str] | None = Query(None, max_length=50,
                                      description="Filter to users (repeatable)"),
    skip: Skip = 0,
    limit: Limit = 100,
) -> Response:
    """Usage rows, newest first."""
    rows = session.scalars(usage.query(start_date, end_date, user_id).offset(skip).limit(limit))
    return ExactJSONResponse([UsageEntry(**usage.usage_log(row)) for row in rows])

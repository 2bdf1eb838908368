"""Usage logs newest first (skip or cursor pages), summaries, and pruning into roll-ups."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Depends, Query, Request, Response

from otari_server.accounting import retention, summaries, usage_rows
from otari_server.api.paging import Limit, Skip
from otari_server.api.schemas import (
    PruneUsageRequest,
    PruneUsageResponse,
    UsageEntry,
    UsageSummaryResponse,
)
from otari_server.deps import ReadSessionDep, RuntimeDep, require_master
from otari_server.errors import InvalidRequest
from otari_server.jsonio import ExactJSONResponse, ExactRoute, dump_bytes

router = APIRouter(
    prefix="/v1/usage",
    tags=["usage"],
    route_class=ExactRoute,
    dependencies=[Depends(require_master)],
)

StartDate = Annotated[datetime | None, Query(description="Rows with timestamp >= start_date")]
EndDate = Annotated[datetime | None, Query(description="Rows with timestamp < end_date")]
UserIds = Annotated[
    list[str] | None, Query(max_length=50, description="Filter to users (repeatable)")
]
KeyIds = Annotated[
    list[str] | None, Query(max_length=50, description="Filter to API key ids (repeatable)")
]
Models = Annotated[
    list[str] | None, Query(max_length=50, description="Filter to models (repeatable)")
]
Statuses = Annotated[
    list[str] | None,
    Query(max_length=10, description="Filter to statuses: success, error, ... (repeatable)"),
]
After = Annotated[
    str | None,
    Query(
        description='Cursor: the rows after this position. Take it from the Link rel="next" '
        "header of the previous page; faster than skip for deep pages"
    ),
]


# The media type of a page as JSON Lines, given when the client's Accept names it.
NDJSON = "application/x-ndjson"

# Fields GET /v1/usage adds to every row (UsageEntry's defaults).
ENTRY_EXTRAS = {"source": "gateway", "bulk_editable": False, "cache_write_1h_tokens": None}


def page(
    request: Request, rows: list[dict[str, Any]], limit: int, extras: dict[str, Any] | None = None
) -> Response:
    """The rows as JSON, with `Link: <...>; rel="next"` (RFC 8288) when the page is full.

    With `Accept: application/x-ndjson` the same rows come one JSON object per line.

    Rows are serialized straight from the database values (the response_model documents
    the shape; validating 1,000 trusted rows per page through pydantic doubled its cost).
    """
    added = ENTRY_EXTRAS if extras is None else extras
    if added:
        rows = [{**row, **added} for row in rows]
    response: Response
    if NDJSON in request.headers.get("accept", ""):
        # One row per line: an exporter writes lines through without parsing them.
        response = Response(b"".join(dump_bytes(row) + b"\n" for row in rows), media_type=NDJSON)
    else:
        response = ExactJSONResponse(rows)
    if rows and len(rows) == limit:
        url = request.url.remove_query_params(["skip", "after"]).include_query_params(
            after=usage_rows.cursor_after(rows[-1]).encode()
        )
        # A relative reference (RFC 8288 allows it): right behind any proxy or TLS front.
        response.headers["Link"] = f'<{url.path}?{url.query}>; rel="next"'
    return response


def parse_after(after: str | None, skip: int) -> usage_rows.Cursor | None:
    """The cursor of `after=`; giving both a cursor and skip is a 400."""
    if after is None:
        return None
    if skip:
        raise InvalidRequest("Give either 'after' or 'skip', not both", param="after")
    return usage_rows.Cursor.decode(after)


@router.get(
    "",
    response_model=list[UsageEntry],
    responses={
        200: {
            "headers": {
                "Link": {
                    "description": 'Next page: <url>; rel="next" (RFC 8288), on every full page',
                    "schema": {"type": "string"},
                },
                "X-Total-Count": {
                    "description": "Rows matching the filters, when include_total=true",
                    "schema": {"type": "integer"},
                },
            },
            "content": {
                NDJSON: {
                    "schema": {"type": "string", "description": "One usage row (JSON) per line"}
                }
            },
        }
    },
)
def list_usage(
    request: Request,
    session: ReadSessionDep,
    start_date: StartDate = None,
    end_date: EndDate = None,
    user_id: UserIds = None,
    api_key_id: KeyIds = None,
    model: Models = None,
    status: Statuses = None,
    after: After = None,
    skip: Skip = 0,
    limit: Limit = 100,
    include_total: Annotated[
        bool,
        Query(
            description="Also count every row the filters match (cursor and skip aside) into "
            "an X-Total-Count header; costs a count over the matching rows"
        ),
    ] = False,
) -> Response:
    """Usage rows, newest first, by `skip` or by the `after` cursor."""
    cursor = parse_after(after, skip)
    filters = usage_rows.Filters(
        usage_rows.utc_instant(start_date, "start_date"),
        usage_rows.utc_instant(end_date, "end_date"),
        user_id,
        api_key_id,
        model,
        status,
    )
    rows = usage_rows.fetch(session, usage_rows.query(filters, cursor).offset(skip).limit(limit))
    response = page(request, rows, limit)
    if include_total:
        response.headers["X-Total-Count"] = str(usage_rows.count(session, filters))
    return response


@router.get("/summary", response_model=UsageSummaryResponse)
def summary(
    session: ReadSessionDep,
    group_by: Annotated[
        list[str], Query(description="One or two of: user, model, provider, key, day, hour")
    ],
    start_date: StartDate = None,
    end_date: EndDate = None,
    user_id: UserIds = None,
    api_key_id: KeyIds = None,
    model: Models = None,
    status: Statuses = None,
) -> Response:
    """Requests, errors, tokens and exact cost per group, over live and rolled-up usage."""
    dimensions = summaries.parse_group_by(group_by)
    filters = usage_rows.Filters(
        usage_rows.utc_instant(start_date, "start_date"),
        usage_rows.utc_instant(end_date, "end_date"),
        user_id,
        api_key_id,
        model,
        status,
    )
    return ExactJSONResponse(summaries.summarize(session, dimensions, filters))


@router.post("/prune", response_model=PruneUsageResponse)
async def prune(body: PruneUsageRequest, runtime: RuntimeDep) -> Response:
    """Roll up usage rows before `before` (midnight UTC) per day, then delete them.

    Works in small transactions, so requests keep being served and metered meanwhile.
    """
    before = usage_rows.utc(body.before, "before")
    if body.dry_run:
        result = await to_thread.run_sync(retention.measure, runtime.reads, before)
    else:
        result = await to_thread.run_sync(retention.prune, runtime.sessions, before)
    return ExactJSONResponse(
        PruneUsageResponse(
            before=result.before, rows=result.rows, cost=result.cost, dry_run=result.dry_run
        )
    )

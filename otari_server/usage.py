"""Usage rows: their wire form and the filters behind /v1/usage."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, select

from otari_server.tables import UsageLog


def usage_log(row: UsageLog) -> dict[str, Any]:
    """The fields of a usage row shared by every usage response."""
    return {
        "id": row.id, "user_id": row.user_id, "api_key_id": row.api_key_id,
        "timestamp": row.timestamp, "model": row.model, "provider": row.provider,
        "endpoint": row.endpoint, "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens, "total_tokens": row.total_tokens,
        "cost": row.cost, "status": row.status, "error_message": row.error_message,
        "latency_ms": row.latency_ms, "request_id": row.request_id,
        "cache_read_tokens": row.cache_read_tokens, "cache_write_tokens": row.cache_write_tokens,
        "counts_toward_budget": row.counts_toward_budget,
        "route": row.route, "attempts": row.attempts,
    }


def query(start_date: datetime | None, end_date: datetime | None,
          user_ids: list[str] | None) -> Select[UsageLog]:
    """Usage rows in [start_date, end_date) for any of the users, newest first."""
    statement = select(UsageLog)
    if start_date is not None:
        statement = statement.where(UsageLog.timestamp >= start_date)
    if end_date is not None:
        statement = statement.where(UsageLog.timestamp < end_date)
    if user_ids:
        statement = statement.where(UsageLog.user_id.in_(user_ids))
    return statement.order_by(UsageLog.timestamp.desc(), UsageLog.id.desc())

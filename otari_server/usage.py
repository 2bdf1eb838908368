"""Usage rows: their wire form, the filters behind /v1/usage and its (timestamp, id) cursor."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, literal, select, tuple_

from otari_server.errors import InvalidRequest
from otari_server.tables import UsageLog, UTCDateTime


def usage_log(row: UsageLog | Row[Any]) -> dict[str, Any]:
    """The fields of a usage row shared by every usage response (an ORM row or a Row)."""
    return {
        "id": row.id, "user_id": row.user_id, "api_key_id": row.api_key_id,
        "timestamp": row.timestamp, "model": row.model, "provider": row.provider,
        "endpoint": row.endpoint, "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens, "total_tokens": row.total_tokens,
        "cost": row.cost, "status": row.status, "error_message": row.error_message,
        "latency_ms": row.latency_ms, "request_id": row.request_id,
        "cache_read_tokens": row.cache_read_tokens, "cache_write_tokens": row.cache_write_tokens,
        "counts_toward_budget": row.counts_toward_budget,
    }


@dataclass(frozen=True)
class Filters:
    """What /v1/usage and /v1/usage/summary select: [start_date, end_date) and any-of lists."""

    start_date: datetime | None = None
    end_date: datetime | None = None
    user_ids: list[str] | None = None
    api_key_ids: list[str] | None = None
    models: list[str] | None = None
    statuses: list[str] | None = None

    def conditions(self, table: Any = UsageLog, *, timed: bool = True) -> list[Any]:
        """WHERE clauses on `table` (usage_logs or usage_daily: same column names)."""
        where: list[Any] = []
        if timed and self.start_date is not None:
            where.append(table.timestamp >= self.start_date)
        if timed and self.end_date is not None:
            where.append(table.timestamp < self.end_date)
        for column, values in ((table.user_id, self.user_ids),
                               (table.api_key_id, self.api_key_ids),
                               (table.model, self.models), (table.status, self.statuses)):
            if values:
                where.append(column.in_(values))
        return where


@dataclass(frozen=True)
class Cursor:
    """The position after a row in newest-first order: its (timestamp, id)."""

    timestamp: datetime
    id: str

    def encode(self) -> str:
        """Opaque URL-safe text for `after=`."""
        raw = json.dumps([self.timestamp.isoformat(), self.id], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Parse `after=`; raises InvalidRequest (400) for anything we did not hand out."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            stamp, row_id = json.loads(raw)
            moment = datetime.fromisoformat(stamp)
            if not isinstance(row_id, str) or moment.tzinfo is None:
                raise ValueError("bad cursor")
        except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
            raise InvalidRequest("Invalid 'after' cursor: pass the value from a Link "
                                 "header unchanged", param="after") from None
        return cls(moment, row_id)

    @classmethod
    def of(cls, row: UsageLog) -> Cursor:
        """The cursor that continues after `row`."""
        return cls(row.timestamp, row.id)


def query(filters: Filters, after: Cursor | None = None) -> Select[UsageLog]:
    """Usage rows matching `filters`, newest first, strictly after the cursor when given."""
    statement = select(UsageLog).where(*filters.conditions())
    if after is not None:
        # Compared as a tuple, so rows sharing a timestamp are neither skipped nor repeated;
        # (timestamp, id) indexes serve it on both backends.
        statement = statement.where(
            tuple_(UsageLog.timestamp, UsageLog.id)
            < tuple_(literal(after.timestamp, UTCDateTime()), after.id))
    return statement.order_by(UsageLog.timestamp.desc(), UsageLog.id.desc())


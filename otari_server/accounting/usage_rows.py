"""Usage rows: their wire form, the filters behind /v1/usage and its (timestamp, id) cursor."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, literal, select, tuple_
from sqlalchemy.orm import Session

from otari_server.errors import InvalidRequest
from otari_server.storage.tables import UsageLog, UTCDateTime, as_utc

# The fields of a usage row shared by every usage response, in wire order.
FIELDS = ("id", "user_id", "api_key_id", "timestamp", "model", "provider", "endpoint",
          "prompt_tokens", "completion_tokens", "total_tokens", "cost", "status",
          "error_message", "latency_ms", "request_id", "cache_read_tokens",
          "cache_write_tokens", "counts_toward_budget", "status_code", "price_source",
          "route", "attempts")


def fetch(session: Session, statement: Select[UsageLog]) -> list[dict[str, Any]]:
    """The rows of a usage query as dicts of FIELDS, read as plain columns.

    No ORM objects: a 1,000-row page costs a third of what loading entities did.
    """
    columns = [UsageLog.__table__.c[name] for name in FIELDS]
    result = session.connection().execute(statement.with_only_columns(*columns))
    return [dict(zip(FIELDS, row, strict=True)) for row in result]


def utc(moment: datetime, name: str) -> datetime:
    """A query or body instant in UTC; one UTC cannot represent is a 400, never a 500.

    Naive values are taken as UTC; year 1 or 9999 with an offset falls outside datetime.
    """
    try:
        instant = as_utc(moment)
        instant + timedelta(days=1)  # room for the day arithmetic of summaries and prunes
        instant - timedelta(days=1)
    except OverflowError:
        raise InvalidRequest(f"{name}: {moment.isoformat()} is out of range",
                             param=name) from None
    return instant


def utc_instant(moment: datetime | None, name: str) -> datetime | None:
    """`utc` for an optional instant."""
    return None if moment is None else utc(moment, name)


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
            # NUL is no id we hand out, and PostgreSQL refuses it in a text parameter.
            if not isinstance(row_id, str) or "\x00" in row_id or moment.tzinfo is None:
                raise ValueError("bad cursor")
            moment = as_utc(moment)
        except (binascii.Error, ValueError, TypeError, UnicodeDecodeError, OverflowError,
                RecursionError):  # deeply nested JSON
            raise InvalidRequest("Invalid 'after' cursor: pass the value from a Link "
                                 "header unchanged", param="after") from None
        return cls(moment, row_id)


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


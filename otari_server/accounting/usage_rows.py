"""Usage rows: their wire form, the filters behind /v1/usage and its (timestamp, id) cursor."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import Select, func, literal, select, tuple_, type_coerce
from sqlalchemy.orm import Session
from sqlalchemy.types import NullType

from otari_server.errors import InvalidRequest
from otari_server.jsonio import plain
from otari_server.storage.tables import MONEY_PLACES, UsageLog, UTCDateTime, as_utc

# The fields of a usage row shared by every usage response, in wire order.
FIELDS = (
    "id",
    "user_id",
    "api_key_id",
    "timestamp",
    "model",
    "provider",
    "endpoint",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost",
    "status",
    "error_message",
    "latency_ms",
    "request_id",
    "cache_read_tokens",
    "cache_write_tokens",
    "counts_toward_budget",
    "status_code",
    "price_source",
    "route",
    "attempts",
)


def fetch(session: Session, statement: Select[UsageLog]) -> list[dict[str, Any]]:
    """The rows of a usage query as dicts of FIELDS, ready for jsonio: the timestamp as ISO
    8601 UTC text, the cost as an exact plain-decimal JSON number (an orjson Fragment).

    Read as the driver's values, converted here once: no ORM objects and no per-column
    type processing, the bulk of a 1,000-row page's cost (an export reads a million).
    """
    result = session.connection().execute(statement.with_only_columns(*_RAW_COLUMNS))
    stamp: Callable[[Any], str]
    money: Callable[[Any], orjson.Fragment]
    flag: Callable[[Any], Any]
    if session.get_bind().dialect.name == "sqlite":
        stamp, money, flag = _sqlite_timestamp, _sqlite_cost, bool
    else:
        stamp, money, flag = _timestamp, _cost, _same
    rows = []
    # The driver's tuples in one call (no Row objects: the columns have no types to apply).
    for values in result.cursor.fetchall():
        row = dict(zip(FIELDS, values, strict=True))
        row["timestamp"] = stamp(row["timestamp"])
        if row["cost"] is not None:
            row["cost"] = money(row["cost"])
        row["counts_toward_budget"] = flag(row["counts_toward_budget"])
        rows.append(row)
    return rows


# The columns without their result types: values come back as the driver gives them.
_RAW_COLUMNS = [type_coerce(UsageLog.__table__.c[name], NullType()).label(name) for name in FIELDS]


def _same(value: Any) -> Any:
    return value


def _sqlite_timestamp(value: str) -> str:
    """SQLite's naive UTC text as datetime.isoformat() writes the aware instant."""
    if len(value) == 26 and value[10] == " " and value[19] == ".":
        # The form SQLAlchemy stores ('YYYY-MM-DD HH:MM:SS.ffffff'), rewritten as text: a
        # third of the cost of parsing and formatting a datetime, a million times over.
        micro = "" if value.endswith(".000000") else value[19:]
        return f"{value[:10]}T{value[11:19]}{micro}+00:00"
    return datetime.fromisoformat(value).replace(tzinfo=UTC).isoformat()


def _timestamp(value: datetime) -> str:
    return as_utc(value).isoformat()


_UNIT = 10**MONEY_PLACES


def _sqlite_cost(units: int) -> orjson.Fragment:
    """Integer units of 1e-10 (tables.Money) as jsonio.plain writes the amount."""
    whole, fraction = divmod(abs(units), _UNIT)
    text = f"{whole}.{fraction:0{MONEY_PLACES}d}".rstrip("0").rstrip(".")
    return orjson.Fragment(f"-{text}" if units < 0 else text)


def _cost(amount: Decimal) -> orjson.Fragment:
    return orjson.Fragment(plain(amount))


def cursor_after(row: dict[str, Any]) -> Cursor:
    """The cursor continuing after a row `fetch` returned."""
    return Cursor(datetime.fromisoformat(row["timestamp"]), row["id"])


def utc(moment: datetime, name: str) -> datetime:
    """A query or body instant in UTC; one UTC cannot represent is a 400, never a 500.

    Naive values are taken as UTC; year 1 or 9999 with an offset falls outside datetime.
    """
    try:
        instant = as_utc(moment)
        instant + timedelta(days=1)  # room for the day arithmetic of summaries and prunes
        instant - timedelta(days=1)
    except OverflowError:
        raise InvalidRequest(f"{name}: {moment.isoformat()} is out of range", param=name) from None
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
        for column, values in (
            (table.user_id, self.user_ids),
            (table.api_key_id, self.api_key_ids),
            (table.model, self.models),
            (table.status, self.statuses),
        ):
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
        except (
            binascii.Error,
            ValueError,
            TypeError,
            UnicodeDecodeError,
            OverflowError,
            RecursionError,
        ):  # deeply nested JSON
            raise InvalidRequest(
                "Invalid 'after' cursor: pass the value from a Link header unchanged", param="after"
            ) from None
        return cls(moment, row_id)


def query(filters: Filters, after: Cursor | None = None) -> Select[UsageLog]:
    """Usage rows matching `filters`, newest first, strictly after the cursor when given."""
    statement = select(UsageLog).where(*filters.conditions())
    if after is not None:
        # Compared as a tuple, so rows sharing a timestamp are neither skipped nor repeated;
        # (timestamp, id) indexes serve it on both backends.
        statement = statement.where(
            tuple_(UsageLog.timestamp, UsageLog.id)
            < tuple_(literal(after.timestamp, UTCDateTime()), after.id)
        )
    return statement.order_by(UsageLog.timestamp.desc(), UsageLog.id.desc())


def count(session: Session, filters: Filters) -> int:
    """How many usage rows match `filters` (pruned rows no longer do)."""
    return int(
        session.scalar(select(func.count()).select_from(UsageLog).where(*filters.conditions())) or 0
    )

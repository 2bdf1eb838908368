"""Usage totals per UTC day and one dimension (user, key, model or provider), kept current.

Every usage row is added here in the transaction that inserts it (ledger.settle_all), so a
summary over whole days reads a few thousand totals instead of aggregating every row; the
raw rows are only read for the partial days at the edges of a period (see summaries).
Pruning never touches these totals: they count live and pruned rows alike.

A row is keyed (dimension, day, value, status, shard). `value` is the user, key, model or
provider, with "" for a row that has none (user ids, key ids and provider names are never
empty). `shard` is derived from the writing instance, so instances sharing a PostgreSQL
database add to different rows and never wait on each other's row locks; a summary sums
over shards.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Connection,
    Date,
    String,
    cast,
    delete,
    func,
    insert,
    literal,
    select,
    union_all,
)

from otari_server.storage.tables import MONEY_PLACES, UsageDaily, UsageLog, UsageTotal, quantize

# Dimension name -> the usage_logs column it totals.
DIMENSIONS = {"user": "user_id", "key": "api_key_id", "model": "model", "provider": "provider"}
# Dimensions whose column may be NULL ("" stands for it in `value`).
NULLABLE = frozenset({"user", "key", "provider"})
SHARDS = 16
_ZERO = Decimal(0)

_Key = tuple[str, date, str, str, int]


def shard_of(instance_id: str) -> int:
    """The shard an instance writes its totals to (stable across restarts on one address)."""
    return zlib.crc32(instance_id.encode()) % SHARDS


def stored(dimension: str, value: str | None) -> str:
    """A dimension's value as kept in `value` ("" for none)."""
    return "" if value is None else value


def shown(dimension: str, value: str) -> str | None:
    """A stored value as a summary shows it (None for none)."""
    return None if value == "" and dimension in NULLABLE else value


def _day(moment: datetime) -> date:
    if moment.tzinfo is None:
        return moment.date()
    return moment.astimezone(UTC).date()


def deltas(rows: Iterable[Mapping[str, Any]], shard: int) -> list[dict[str, Any]]:
    """What `rows` (usage_logs fields) add to the totals, one entry per totals row, sorted
    (so concurrent writers lock rows in one order and never deadlock)."""
    sums: dict[_Key, list[Any]] = {}
    for row in rows:
        day = _day(row["timestamp"])
        status = row["status"]
        prompt = row["prompt_tokens"] or 0
        completion = row["completion_tokens"] or 0
        # Each row's cost as stored (ten places), so the totals equal the rows' sum.
        cost = quantize(Decimal(row["cost"])) if row["cost"] else _ZERO
        for dimension, column in DIMENSIONS.items():
            key = (dimension, day, stored(dimension, row[column]), status, shard)
            acc = sums.get(key)
            if acc is None:
                sums[key] = [1, prompt, completion, cost]
            else:
                acc[0] += 1
                acc[1] += prompt
                acc[2] += completion
                acc[3] += cost
    return [
        {
            "dimension": k[0],
            "day": k[1],
            "value": k[2],
            "status": k[3],
            "shard": k[4],
            "requests": v[0],
            "prompt_tokens": v[1],
            "completion_tokens": v[2],
            "cost": v[3],
        }
        for k, v in sorted(sums.items())
    ]


def _upsert(mark: str) -> str:
    columns = (
        "dimension",
        "day",
        "value",
        "status",
        "shard",
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "cost",
    )
    added = ", ".join(f"{name} = usage_totals.{name} + excluded.{name}" for name in columns[5:])
    return (
        f"INSERT INTO usage_totals ({', '.join(columns)}) "
        f"VALUES ({', '.join([mark] * len(columns))}) "
        f"ON CONFLICT (dimension, day, value, status, shard) DO UPDATE SET {added}"
    )


# Plain SQL for the driver: this runs for every request, and SQLAlchemy's statement
# processing cost more than the database's own work (50 against 95 microseconds per row).
_UPSERTS = {"sqlite": _upsert("?"), "postgresql": _upsert("%s")}


def add(conn: Connection, rows: Iterable[Mapping[str, Any]], shard: int) -> None:
    """Add usage rows to the totals, in the caller's transaction (one statement)."""
    params = deltas(rows, shard)
    if not params:
        return
    dialect = conn.dialect.name
    if dialect == "sqlite":  # dates as ISO text, money as integer units (tables.Money)
        values = [
            (
                p["dimension"],
                p["day"].isoformat(),
                p["value"],
                p["status"],
                p["shard"],
                p["requests"],
                p["prompt_tokens"],
                p["completion_tokens"],
                int(Decimal(p["cost"]).scaleb(MONEY_PLACES)),
            )
            for p in params
        ]
    else:
        values = [tuple(p.values()) for p in params]
    conn.exec_driver_sql(_UPSERTS[dialect], values)


def _day_of_log(dialect: str) -> Any:
    if dialect == "sqlite":
        # SQLite keeps UTC as 'YYYY-MM-DD HH:MM:SS.ffffff' text, and dates as 'YYYY-MM-DD'.
        return func.substr(UsageLog.timestamp, 1, 10)
    return cast(func.timezone("UTC", UsageLog.timestamp), Date)


def rebuild(conn: Connection) -> int:
    """Recompute every total from usage_logs and usage_daily (pruned rows), in the caller's
    transaction; returns the number of totals rows. For a database whose usage rows were
    written without the ledger (a bulk load); the ledger keeps totals current itself."""
    conn.execute(delete(UsageTotal))
    day = _day_of_log(conn.dialect.name)
    for dimension, column in DIMENSIONS.items():
        live = select(
            day.label("day"),
            func.coalesce(getattr(UsageLog, column), "").label("value"),
            UsageLog.status.label("status"),
            literal(1).label("requests"),
            func.coalesce(UsageLog.prompt_tokens, 0).label("prompt_tokens"),
            func.coalesce(UsageLog.completion_tokens, 0).label("completion_tokens"),
            func.coalesce(UsageLog.cost, 0).label("cost"),
        )
        pruned = select(
            UsageDaily.day,
            func.coalesce(getattr(UsageDaily, column), ""),
            UsageDaily.status,
            UsageDaily.requests,
            UsageDaily.prompt_tokens,
            UsageDaily.completion_tokens,
            UsageDaily.cost,
        )
        both = union_all(live, pruned).subquery()
        grouped = select(
            cast(literal(dimension), String),
            both.c.day,
            both.c.value,
            both.c.status,
            literal(0),
            func.sum(both.c.requests),
            func.sum(both.c.prompt_tokens),
            func.sum(both.c.completion_tokens),
            func.sum(both.c.cost),
        ).group_by(both.c.day, both.c.value, both.c.status)
        conn.execute(
            insert(UsageTotal).from_select(
                [
                    "dimension",
                    "day",
                    "value",
                    "status",
                    "shard",
                    "requests",
                    "prompt_tokens",
                    "completion_tokens",
                    "cost",
                ],
                grouped,
            )
        )
    return int(conn.scalar(select(func.count()).select_from(UsageTotal)) or 0)

"""Usage summaries: requests, errors, tokens and exact cost per group, from totals and rows.

Every usage row is counted in usage_totals (per UTC day and one dimension) as it is written,
so a summary that needs one dimension reads whole days there and only the partial days at
the period's edges from usage_logs. Other summaries (two dimensions besides day, a filter
on another dimension, by hour) add up usage_logs plus usage_daily, where pruned rows are
kept per day (see retention). Pruned days cannot be split by hour or by a bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Integer, case, cast, func, select, true
from sqlalchemy.orm import Session

from otari_server.accounting import usage_totals
from otari_server.accounting.usage_rows import Filters
from otari_server.errors import InvalidRequest
from otari_server.storage.tables import UsageDaily, UsageLog, UsageTotal, as_utc

# group_by names and the field each group is labelled with.
DIMENSIONS = {
    "user": "user_id",
    "key": "api_key_id",
    "model": "model",
    "provider": "provider",
    "day": "day",
    "hour": "hour",
}


@dataclass
class Totals:
    """Sums for one group (or all): counts, tokens, and cost as an exact Decimal."""

    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal = field(default_factory=Decimal)

    def add(
        self,
        requests: int,
        errors: int,
        prompt: int | None,
        completion: int | None,
        cost: Decimal | None,
    ) -> None:
        self.requests += int(requests)
        self.errors += int(errors or 0)
        self.prompt_tokens += int(prompt or 0)
        self.completion_tokens += int(completion or 0)
        self.cost += cost or Decimal(0)

    def fields(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": self.cost,
        }


def _live_key(dimension: str, dialect: str) -> Any:
    """A SQL expression for one dimension on usage_logs."""
    if dimension in ("day", "hour"):
        if dialect == "sqlite":
            # SQLite keeps UTC as 'YYYY-MM-DD HH:MM:SS.ffffff' text: its prefix is the bucket.
            return func.substr(UsageLog.timestamp, 1, 10 if dimension == "day" else 13)
        return func.date_trunc(dimension, func.timezone("UTC", UsageLog.timestamp))
    return getattr(UsageLog, DIMENSIONS[dimension])


def _label(dimension: str, value: Any) -> Any:
    """A group value on the wire: days as YYYY-MM-DD, hours as ISO 8601 UTC."""
    if dimension == "day":
        if isinstance(value, datetime | date):
            return value.strftime("%Y-%m-%d")
        return str(value)[:10]
    if dimension == "hour":
        if isinstance(value, datetime):
            value = value.strftime("%Y-%m-%d %H")
        return datetime.strptime(str(value)[:13], "%Y-%m-%d %H").replace(tzinfo=UTC).isoformat()
    return value


def _day_bounds(filters: Filters) -> list[Any]:
    """Roll-up days inside [start_date, end_date)."""
    where: list[Any] = []
    if filters.start_date is not None:
        start = as_utc(filters.start_date)
        first = (
            start.date()
            if start.time() == datetime.min.time()
            else (start.date() + timedelta(days=1))
        )
        where.append(UsageDaily.day >= first)
    if filters.end_date is not None:
        end = as_utc(filters.end_date)
        last = end.date() if end.time() == datetime.min.time() else (end.date() + timedelta(days=1))
        where.append(UsageDaily.day < last)
    return where


def _refuse_split_days(session: Session, filters: Filters) -> None:
    """A bound inside a pruned day would count that day wholly or not at all: refuse it
    (InvalidRequest) rather than answer a wrong sum."""
    for name, bound in (("start_date", filters.start_date), ("end_date", filters.end_date)):
        if bound is None:
            continue
        moment = as_utc(bound)
        if moment.time() == datetime.min.time():
            continue
        day = [*filters.conditions(UsageDaily, timed=False), UsageDaily.day == moment.date()]
        if session.scalar(select(true()).where(*day).select_from(UsageDaily).limit(1)):
            raise InvalidRequest(
                f"{name} falls inside {moment.date().isoformat()}, a day "
                "already pruned and kept per day only: give midnight UTC",
                param=name,
            )


def parse_group_by(values: Sequence[str]) -> list[str]:
    """Validate group_by (one or two distinct dimensions); raises InvalidRequest."""
    if not 1 <= len(values) <= 2 or len(set(values)) != len(values):
        raise InvalidRequest("group_by takes one or two distinct dimensions", param="group_by")
    unknown = [v for v in values if v not in DIMENSIONS]
    if unknown:
        raise InvalidRequest(
            f"group_by: unknown dimension {unknown[0]!r} (one of {', '.join(DIMENSIONS)})",
            param="group_by",
        )
    return list(values)


def _totals_dimension(group_by: list[str], filters: Filters) -> str | None:
    """The usage_totals dimension that answers this summary, or None (raw rows needed).

    Totals hold one dimension per row besides day and status: they answer when the groups
    and filters name at most one of user, key, model, provider. Without any, the provider
    totals (the fewest rows) hold every request.
    """
    if "hour" in group_by:
        return None
    needed = {d for d in group_by if d != "day"}
    for dimension, values in (
        ("user", filters.user_ids),
        ("key", filters.api_key_ids),
        ("model", filters.models),
    ):
        if values:
            needed.add(dimension)
    if len(needed) > 1:
        return None
    return needed.pop() if needed else "provider"


def _midnight(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=UTC)


def _whole_days(filters: Filters) -> tuple[date | None, date | None, list[Filters]]:
    """[first, end) whole UTC days of the period (None: unbounded), and the partial days
    at its edges as narrower Filters, to be read from the raw rows.

    (None, None) with one edge covering everything when the period holds no whole day.
    """
    start = None if filters.start_date is None else as_utc(filters.start_date)
    end = None if filters.end_date is None else as_utc(filters.end_date)
    first = (
        None
        if start is None
        else (
            start.date() if start == _midnight(start.date()) else start.date() + timedelta(days=1)
        )
    )
    last = None if end is None else end.date()
    if first is not None and last is not None and first >= last:
        return first, first, [filters]
    edges = []
    if start is not None and first is not None and start < _midnight(first):
        edges.append(replace(filters, start_date=start, end_date=_midnight(first)))
    if end is not None and last is not None and end > _midnight(last):
        edges.append(replace(filters, start_date=_midnight(last), end_date=end))
    return first, last, edges


def _from_totals(
    session: Session,
    dimension: str,
    group_by: list[str],
    filters: Filters,
    groups: dict[tuple[Any, ...], Totals],
) -> None:
    """Add the sums of whole days (and the raw rows of partial ones) to `groups`."""
    first, last, edges = _whole_days(filters)
    if first is None or last is None or first < last:
        keys = [
            (UsageTotal.day if d == "day" else UsageTotal.value).label(f"g{i}")
            for i, d in enumerate(group_by)
        ]
        errors = case((UsageTotal.status != "success", UsageTotal.requests), else_=0)
        where = [UsageTotal.dimension == dimension]
        if first is not None:
            where.append(UsageTotal.day >= first)
        if last is not None:
            where.append(UsageTotal.day < last)
        values = {
            "user": filters.user_ids,
            "key": filters.api_key_ids,
            "model": filters.models,
        }.get(dimension)
        if values:
            where.append(UsageTotal.value.in_([usage_totals.stored(dimension, v) for v in values]))
        if filters.statuses:
            where.append(UsageTotal.status.in_(filters.statuses))
        totals = (
            select(
                *keys,
                func.sum(UsageTotal.requests),
                func.sum(cast(errors, Integer)),
                func.sum(UsageTotal.prompt_tokens),
                func.sum(UsageTotal.completion_tokens),
                func.sum(UsageTotal.cost),
            )
            .where(*where)
            .group_by(*keys)
        )
        row: Any
        for row in session.execute(totals):
            key = tuple(
                _label(d, v) if d == "day" else usage_totals.shown(d, v)
                for d, v in zip(group_by, row[: len(keys)], strict=True)
            )
            groups.setdefault(key, Totals()).add(*row[len(keys) :])
    for edge in edges:
        _add_live(session, group_by, edge, groups)


def _add_live(
    session: Session, group_by: list[str], filters: Filters, groups: dict[tuple[Any, ...], Totals]
) -> None:
    """Add the sums of the raw usage rows matching `filters` to `groups`."""
    dialect = session.get_bind().dialect.name
    errors = case((UsageLog.status != "success", 1), else_=0)
    keys = [_live_key(d, dialect).label(f"g{i}") for i, d in enumerate(group_by)]
    live = (
        select(
            *keys,
            func.count().label("requests"),
            func.sum(errors),
            func.sum(UsageLog.prompt_tokens),
            func.sum(UsageLog.completion_tokens),
            func.sum(UsageLog.cost),
        )
        .where(*filters.conditions())
        .group_by(*keys)
    )
    for row in session.execute(live):
        key = tuple(_label(d, v) for d, v in zip(group_by, row[: len(keys)], strict=True))
        groups.setdefault(key, Totals()).add(*row[len(keys) :])


def summarize(session: Session, group_by: list[str], filters: Filters) -> dict[str, Any]:
    """Groups sorted by their values, each with Totals fields, and the overall `total`.

    Whole days come from usage_totals when one dimension suffices; otherwise the raw rows
    plus the per-day roll-ups of pruned ones are added up. Raises InvalidRequest when
    `hour` is asked over days already rolled up, or a bound splits a pruned day.
    """
    groups: dict[tuple[Any, ...], Totals] = {}
    _refuse_split_days(session, filters)
    dimension = _totals_dimension(group_by, filters)
    if dimension is not None:
        _from_totals(session, dimension, group_by, filters, groups)
    else:
        _add_live(session, group_by, filters, groups)
        _add_rolled_up(session, group_by, filters, groups)
    total = Totals()
    answer = []
    for key in sorted(groups, key=lambda k: tuple((v is None, str(v or "")) for v in k)):
        sums = groups[key]
        total.add(sums.requests, sums.errors, sums.prompt_tokens, sums.completion_tokens, sums.cost)
        answer.append(
            {**{DIMENSIONS[d]: v for d, v in zip(group_by, key, strict=True)}, **sums.fields()}
        )
    return {"group_by": group_by, "groups": answer, "total": total.fields()}


def _add_rolled_up(
    session: Session, group_by: list[str], filters: Filters, groups: dict[tuple[Any, ...], Totals]
) -> None:
    """Add the per-day roll-ups of pruned rows (usage_daily) inside the period."""
    rolled_where = [*filters.conditions(UsageDaily, timed=False), *_day_bounds(filters)]
    if "hour" in group_by:
        if session.scalar(select(true()).where(*rolled_where).select_from(UsageDaily).limit(1)):
            raise InvalidRequest(
                "group_by=hour: part of this period was pruned and is kept "
                "per day only; narrow start_date or group by day",
                param="group_by",
            )
        return
    day_keys = [
        (UsageDaily.day if d == "day" else getattr(UsageDaily, DIMENSIONS[d])).label(f"g{i}")
        for i, d in enumerate(group_by)
    ]
    rolled_errors = case((UsageDaily.status != "success", UsageDaily.requests), else_=0)
    rolled = (
        select(
            *day_keys,
            func.sum(UsageDaily.requests),
            func.sum(cast(rolled_errors, Integer)),
            func.sum(UsageDaily.prompt_tokens),
            func.sum(UsageDaily.completion_tokens),
            func.sum(UsageDaily.cost),
        )
        .where(*rolled_where)
        .group_by(*day_keys)
    )
    for row in session.execute(rolled):
        key = tuple(_label(d, v) for d, v in zip(group_by, row[: len(day_keys)], strict=True))
        groups.setdefault(key, Totals()).add(*row[len(day_keys) :])

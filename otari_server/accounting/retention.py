"""Usage retention: old usage rows move into daily roll-ups in small batches, then go.

Each batch is one short transaction (read the oldest rows, add them to usage_daily, delete
them), so the hot path's usage writer never waits long for SQLite's lock, and a row is counted
exactly once: in usage_logs before, in usage_daily after.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from anyio import to_thread
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from otari_server.storage.tables import UsageDaily, UsageLog, as_utc, utcnow

log = logging.getLogger("otari")

BATCH_ROWS = 500  # rows per transaction: short enough that writers barely wait
CHECK_INTERVAL = 3600.0  # seconds between retention passes

_GroupKey = tuple[date, str | None, str | None, str, str | None, str]


@dataclass(frozen=True)
class PruneResult:
    """What a prune removed (or would remove): rows and their cost, before `before`."""

    before: datetime
    rows: int
    cost: Decimal
    dry_run: bool


def cutoff(days: int, now: datetime) -> datetime:
    """Midnight UTC starting the oldest day kept when `days` whole days are retained."""
    return datetime.combine(now.astimezone(UTC).date() - timedelta(days=days), time(), tzinfo=UTC)


def day_start(moment: datetime) -> datetime:
    """The midnight UTC at or before `moment` (naive means UTC): prunes move whole days."""
    return datetime.combine(as_utc(moment).date(), time(), tzinfo=UTC)


def measure(sessions: sessionmaker[Session], before: datetime) -> PruneResult:
    """Rows and cost a prune before `before` (rounded down to midnight UTC) would move."""
    before = day_start(before)
    with sessions() as session:
        rows, cost = session.execute(
            select(func.count(), func.sum(UsageLog.cost)).where(UsageLog.timestamp < before)
        ).one()
    return PruneResult(before, int(rows), cost or Decimal(0), dry_run=True)


def _roll_up(session: Session, rows: list[UsageLog]) -> None:
    sums: dict[_GroupKey, list[int | Decimal]] = {}
    for row in rows:
        key = (
            row.timestamp.astimezone(UTC).date(),
            row.user_id,
            row.api_key_id,
            row.model,
            row.provider,
            row.status,
        )
        acc = sums.setdefault(key, [0, 0, 0, 0, Decimal(0)])
        acc[0] += 1
        acc[1] += row.prompt_tokens or 0
        acc[2] += row.completion_tokens or 0
        acc[3] += row.total_tokens or 0
        acc[4] += row.cost or Decimal(0)
    for (day, user_id, key_id, model, provider, status), acc in sums.items():
        requests, prompt, completion, total, cost = acc
        match = (
            UsageDaily.day == day,
            UsageDaily.user_id.is_not_distinct_from(user_id),
            UsageDaily.api_key_id.is_not_distinct_from(key_id),
            UsageDaily.model == model,
            UsageDaily.provider.is_not_distinct_from(provider),
            UsageDaily.status == status,
        )
        added = session.execute(
            update(UsageDaily)
            .where(*match)
            .values(
                requests=UsageDaily.requests + requests,
                prompt_tokens=UsageDaily.prompt_tokens + prompt,
                completion_tokens=UsageDaily.completion_tokens + completion,
                total_tokens=UsageDaily.total_tokens + total,
                cost=UsageDaily.cost + cost,
            )
        )
        if added.rowcount == 0:  # type: ignore[attr-defined]
            session.execute(
                insert(UsageDaily).values(
                    day=day,
                    user_id=user_id,
                    api_key_id=key_id,
                    model=model,
                    provider=provider,
                    status=status,
                    requests=requests,
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    total_tokens=total,
                    cost=cost,
                )
            )


def prune_batch(
    sessions: sessionmaker[Session], before: datetime, size: int = BATCH_ROWS
) -> tuple[int, Decimal]:
    """Move up to `size` of the oldest rows before `before` into roll-ups; (rows, cost).

    If another instance moved some of the same rows first, this batch is rolled back and
    counts nothing (the next call picks up what is left).
    """
    with sessions() as session:
        rows = list(
            session.scalars(
                select(UsageLog)
                .where(UsageLog.timestamp < before)
                .order_by(UsageLog.timestamp, UsageLog.id)
                .limit(size)
            )
        )
        if not rows:
            return 0, Decimal(0)
        _roll_up(session, rows)
        gone = session.execute(delete(UsageLog).where(UsageLog.id.in_([r.id for r in rows])))
        if gone.rowcount != len(rows):  # type: ignore[attr-defined]
            session.rollback()
            return 0, Decimal(0)
        session.commit()
        return len(rows), sum((r.cost or Decimal(0) for r in rows), Decimal(0))


def prune(sessions: sessionmaker[Session], before: datetime) -> PruneResult:
    """Move every row before `before` (rounded down to midnight UTC), batch by batch."""
    before = day_start(before)
    rows, cost = 0, Decimal(0)
    while True:
        moved, moved_cost = prune_batch(sessions, before)
        if moved == 0 and not any_before(sessions, before):
            return PruneResult(before, rows, cost, dry_run=False)
        rows += moved
        cost += moved_cost


def any_before(sessions: sessionmaker[Session], before: datetime) -> bool:
    """Whether a usage row older than `before` remains (one index probe)."""
    with sessions() as session:
        found = session.scalar(select(UsageLog.id).where(UsageLog.timestamp < before).limit(1))
    return found is not None


async def retain_forever(
    sessions: sessionmaker[Session],
    days: int,
    interval: float = CHECK_INTERVAL,
    breather: float = 0.05,
) -> None:
    """Every `interval` seconds, roll up and delete rows older than `days` whole UTC days.

    One batch per thread hop with `breather` seconds between batches, so the hot path's
    writers take the database lock in between however much there is to prune.
    """
    while True:
        try:
            before = cutoff(days, utcnow())
            rows = 0
            while True:
                moved, _ = await to_thread.run_sync(prune_batch, sessions, before)
                if moved == 0 and not await to_thread.run_sync(any_before, sessions, before):
                    break
                rows += moved
                await asyncio.sleep(breather)
            if rows:
                log.info(
                    "usage retention: rolled up and removed %d row(s) before %s",
                    rows,
                    before.date().isoformat(),
                )
        except Exception:  # an outage must not end the job; the next pass retries
            log.warning("usage retention pass failed; will retry", exc_info=True)
        await asyncio.sleep(interval)

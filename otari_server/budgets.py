"""Budget rules (pure) and the statements that apply them atomically."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from otari_server.tables import User


@dataclass(frozen=True)
class Period:
    """A budget period: spend counts from `started_at` until `resets_at` (None: never)."""

    started_at: datetime
    resets_at: datetime | None


def first_period(now: datetime, duration_sec: int | None) -> Period:
    """The period that starts when a budget is attached."""
    if duration_sec is None:
        return Period(now, None)
    return Period(now, now + timedelta(seconds=duration_sec))


def current_period(started_at: datetime, duration_sec: int | None, now: datetime) -> Period:
    """The period containing `now`, aligned to the original start (no drift, no cron)."""
    if duration_sec is None:
        return Period(started_at, None)
    length = timedelta(seconds=duration_sec)
    elapsed = now - started_at
    if elapsed < length:
        return Period(started_at, started_at + length)
    start = started_at + length * (elapsed // length)
    return Period(start, start + length)


def roll_over(session: Session, user: User, duration_sec: int | None, now: datetime) -> None:
    """Start a new period for the user if the old one ended, resetting spend.

    The UPDATE is conditional on the old reset time, so concurrent roll-overs (other
    requests, other instances) apply it once.
    """
    if user.next_budget_reset_at is None or user.budget_started_at is None:
        return
    if now < user.next_budget_reset_at:
        return
    period = current_period(user.budget_started_at, duration_sec, now)
    session.execute(
        update(User)
        .where(User.user_id == user.user_id,
               User.next_budget_reset_at == user.next_budget_reset_at)
        .values(spend=0, budget_started_at=period.started_at,
                next_budget_reset_at=period.resets_at)
        .execution_options(synchronize_session=False)
    )
    session.refresh(user)

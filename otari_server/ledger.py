"""Money in motion: reserve the worst case before a call, settle the real cost after.

Reservations are written at once (they are the concurrency guarantee); settlements and usage
rows are queued and written in batches off the response path, and flushed on shutdown.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import Engine, delete, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from otari_server import budgets
from otari_server.errors import BudgetExceeded, NotFound
from otari_server.tables import APIKey, Budget, Reservation, UsageLog, User, utcnow

log = logging.getLogger("otari.ledger")


@dataclass(frozen=True, slots=True)
class Hold:
    """A reservation made for one request (amount zero when nothing had to be held)."""

    reservation_id: str | None
    amount: Decimal


NO_HOLD = Hold(None, Decimal(0))


@dataclass(slots=True)
class Settlement:
    """The outcome of one request: its usage row and the reservation it releases."""

    hold: Hold
    user_id: str | None
    api_key_id: str | None
    model: str
    provider: str | None
    endpoint: str
    status: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    cost: Decimal | None = None
    counts_toward_budget: bool = True
    error_message: str | None = None
    latency_ms: int | None = None
    request_id: str | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    timestamp: datetime = field(default_factory=utcnow)


def reserve(session: Session, user_id: str, amount: Decimal, instance_id: str,
            ttl: float, now: datetime) -> Hold:
    """Atomically hold `amount` against the user's budget, or refuse the request.

    The row lock (PostgreSQL) or the write lock (SQLite, BEGIN IMMEDIATE) makes the
    check-and-add one step, so concurrent requests can never overspend together.
    """
    statement = (select(User, Budget).outerjoin(Budget, User.budget_id == Budget.budget_id)
                 .where(User.user_id == user_id))
    if session.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update(of=User)
    row = session.execute(statement).first()
    if row is None or row[0].deleted_at is not None:
        raise NotFound(f"User '{user_id}' not found")
    user, budget = row
    if budget is None or budget.max_budget is None:
        return NO_HOLD
    budgets.roll_over(session, user, budget.budget_duration_sec, now)
    if user.spend + user.reserved + amount > budget.max_budget:
        remaining = max(budget.max_budget - user.spend - user.reserved, Decimal(0))
        raise BudgetExceeded(
            f"Budget exceeded for user '{user_id}': this request may cost up to "
            f"{amount.normalize():f}, {remaining.normalize():f} of "
            f"{budget.max_budget.normalize():f} remains"
            + (f" until {user.next_budget_reset_at.isoformat()}"
               if user.next_budget_reset_at else ""))
    reservation_id = uuid.uuid4().hex
    session.execute(update(User).where(User.user_id == user_id)
                    .values(reserved=User.reserved + amount)
                    .execution_options(synchronize_session=False))
    session.execute(insert(Reservation).values(
        id=reservation_id, user_id=user_id, api_key_id=None, amount=amount,
        instance_id=instance_id, created_at=now, expires_at=now + timedelta(seconds=ttl)))
    return Hold(reservation_id, amount)


def _release(session: Session, reservation_ids: list[str]) -> None:
    """Delete reservations and give their amounts back; ids already reclaimed are skipped."""
    if not reservation_ids:
        return
    returned = session.execute(delete(Reservation).where(Reservation.id.in_(reservation_ids))
                               .returning(Reservation.user_id, Reservation.amount)).all()
    per_user: dict[str, Decimal] = defaultdict(Decimal)
    for user_id, amount in returned:
        if user_id is not None:
            per_user[user_id] += amount
    for user_id, amount in per_user.items():
        session.execute(update(User).where(User.user_id == user_id)
                        .values(reserved=User.reserved - amount)
                        .execution_options(synchronize_session=False))


def write(session: Session, batch: list[Settlement]) -> None:
    """Apply settlements in one transaction: usage rows, spend, released reservations."""
    session.execute(insert(UsageLog), [
        {"id": s.id, "user_id": s.user_id, "api_key_id": s.api_key_id,
         "timestamp": s.timestamp, "model": s.model, "provider": s.provider,
         "endpoint": s.endpoint, "prompt_tokens": s.prompt_tokens,
         "completion_tokens": s.completion_tokens,
         "total_tokens": (None if s.prompt_tokens is None and s.completion_tokens is None
                          else (s.prompt_tokens or 0) + (s.completion_tokens or 0)),
         "cache_read_tokens": s.cache_read_tokens, "cache_write_tokens": s.cache_write_tokens,
         "counts_toward_budget": s.counts_toward_budget,
         "cost": s.cost, "status": s.status, "error_message": s.error_message,
         "latency_ms": s.latency_ms, "request_id": s.request_id} for s in batch])
    user_spend: dict[str, Decimal] = defaultdict(Decimal)
    key_spend: dict[str, Decimal] = defaultdict(Decimal)
    for s in batch:
        if not s.cost or not s.counts_toward_budget:
            continue
        if s.user_id is not None:
            user_spend[s.user_id] += s.cost
        elif s.api_key_id is not None:
            key_spend[s.api_key_id] += s.cost
    for user_id, amount in user_spend.items():
        session.execute(update(User).where(User.user_id == user_id)
                        .values(spend=User.spend + amount)
                        .execution_options(synchronize_session=False))
    for key_id, amount in key_spend.items():
        session.execute(update(APIKey).where(APIKey.id == key_id)
                        .values(spend=APIKey.spend + amount)
                        .execution_options(synchronize_session=False))
    _release(session, [s.hold.reservation_id for s in batch if s.hold.reservation_id])


def reclaim(session: Session, instance_id: str, now: datetime) -> int:
    """Give back reservations that expired or that an earlier life of this instance left."""
    ids = list(session.scalars(select(Reservation.id).where(
        or_(Reservation.expires_at <= now, Reservation.instance_id == instance_id))))
    _release(session, ids)
    return len(ids)


class Ledger:
    """The queue of settlements and the code that writes them."""

    def __init__(self, sessions: sessionmaker[Session], max_pending: int = 100_000) -> None:
        self._sessions = sessions
        self._pending: list[Settlement] = []
        self._max_pending = max_pending

    @property
    def depth(self) -> int:
        """Settlements waiting to be written."""
        return len(self._pending)

    def record(self, settlement: Settlement) -> None:
        """Queue a settlement; never blocks the request."""
        if len(self._pending) >= self._max_pending:
            log.error("usage queue full (%d); writing is falling behind", self._max_pending)
        self._pending.append(settlement)

    def take(self) -> list[Settlement]:
        """Everything queued so far (call from the event loop)."""
        batch, self._pending = self._pending, []
        return batch

    def put_back(self, batch: list[Settlement]) -> None:
        """Return a batch that could not be written, ahead of newer ones."""
        self._pending[:0] = batch

    def write(self, batch: list[Settlement]) -> None:
        """Write a batch in one transaction (call from a worker thread)."""
        if batch:
            with self._sessions.begin() as session:
                write(session, batch)


def engine_of(sessions: sessionmaker[Session]) -> Engine:
    """The engine behind a session factory."""
    bind = sessions.kw["bind"]
    assert isinstance(bind, Engine)
    return bind

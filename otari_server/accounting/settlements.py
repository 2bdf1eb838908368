"""Settlements: what a finished request really cost, applied in one transaction per batch.

`write_settlements` applies a batch (spend added, holds shrunk, usage rows inserted, request and
token counts for budget limits), splitting a batch that fails until the row that cannot be
written is alone (logged, counted, the rest written); `reclaim` returns the holds an instance
left behind. Amounts are Decimal USD; token counts are integers checked by `counts`.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, delete, or_, select, update
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError

from otari_server.accounting import rate_limits, usage_totals
from otari_server.accounting.holds import NOTHING, Held, Holds, UserSettled
from otari_server.accounting.reservations import Hold, hold_id
from otari_server.storage.tables import Reservation, UsageLog, User, utcnow

log = logging.getLogger("otari.ledger")  # one logger for the whole ledger


@dataclass(slots=True)
class Settlement:
    """The outcome of one request: its usage row and the hold it releases."""

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
    # Where the cost's price came from (prices.Price.source); None when unpriced.
    price_source: str | None = None
    # Rate-limit subjects whose tokens-per-minute this request's tokens count toward.
    rate_subjects: tuple[str, ...] = ()
    route: str | None = None  # the route the client named, if any (model: the serving target)
    attempts: int | None = None  # a route's attempts, failed ones included
    id: str = ""  # the request id when there is one (see Ledger.record)
    timestamp: datetime = field(default_factory=utcnow)
    status_code: int | None = None  # the HTTP status the client was answered
    # When it was queued (monotonic seconds): how late the writer is (Ledger.lag).
    queued: float = field(default_factory=time.monotonic)


def settle_all(
    conn: Connection,
    batch: list[Settlement],
    instance_id: str,
    now: datetime,
    holds: Holds | None = None,
) -> None:
    """Apply settlements in the caller's transaction: usage rows and totals, the users' spend
    and request and token counts, the keys' spend, and the holds released. `holds`: the
    connection's own, if the caller keeps one (see reservations.reserve_all)."""
    rows = [_usage_row(s) for s in batch]
    _insert_usage(conn, rows)
    usage_totals.add(conn, rows, usage_totals.shard_of(instance_id))
    rate_tokens: dict[str, int] = defaultdict(int)
    for s in batch:
        for subject in s.rate_subjects:
            rate_tokens[subject] += (s.prompt_tokens or 0) + (s.completion_tokens or 0)
    if rate_tokens:
        rate_limits.add_tokens(conn, rate_tokens, now)
    # Per user: [spend, requests used, tokens used, money, requests and tokens released].
    per_user: dict[str, list[Any]] = {}
    key_spend: dict[str, Decimal] = defaultdict(Decimal)
    for s in batch:
        hold = s.hold
        if hold.user_id is not None and (hold.amount or hold.requests or hold.tokens):
            sums = per_user.get(hold.user_id) or per_user.setdefault(hold.user_id, _sums())
            sums[3] += hold.amount
            sums[4] += hold.requests
            sums[5] += hold.tokens
        if not s.counts_toward_budget:
            continue
        if s.user_id is not None:
            sums = per_user.get(s.user_id) or per_user.setdefault(s.user_id, _sums())
            if s.cost:
                sums[0] += s.cost
            if served(s):
                sums[1] += 1
                sums[2] += (s.prompt_tokens or 0) + (s.completion_tokens or 0)
        elif s.api_key_id is not None and s.cost:
            key_spend[s.api_key_id] += s.cost
    if not per_user and not key_spend:
        return
    own = holds is None
    holds = holds or Holds(conn)
    try:
        ids = {user_id: hold_id(instance_id, user_id) for user_id, sums in per_user.items()}
        held = holds.held([ids[user_id] for user_id, sums in per_user.items() if sums[3:] != _NONE])
        settled, released = [], {}
        for user_id, (spend, requests, tokens, *freed) in per_user.items():
            # A hold reclaimed meanwhile (it expired) was given back already: release no
            # more than this instance still holds.
            release = Held(*freed).at_most(held.get(ids[user_id], NOTHING))
            settled.append(UserSettled(user_id, spend, requests, tokens, release))
            if release:
                released[ids[user_id]] = release
        if settled:
            holds.settle_users(settled)
        if released:
            holds.release(released)
        if key_spend:
            holds.settle_keys(key_spend)
    finally:
        if own:
            holds.close()


_NONE = [Decimal(0), 0, 0]


def _sums() -> list[Any]:
    return [Decimal(0), 0, 0, Decimal(0), 0, 0]


def served(s: Settlement) -> bool:
    """Whether a settled request counts toward its user's requests: it succeeded, or the
    provider consumed tokens for it (a failure before that costs nothing, like money)."""
    return s.status == "success" or bool(s.prompt_tokens or s.completion_tokens)


def _insert_usage(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert usage rows (all with the same columns) as one driver-level executemany.

    SQLAlchemy's compiled insert re-processes every parameter of every row through its
    execution context, which cost more than the rest of the settlement on the hot path; the
    columns' own bind processors are applied here instead, so the stored values are the same.
    Driver errors still come wrapped as SQLAlchemy's DBAPIError (write_settlements sorts them).
    """
    if not rows:
        return
    dialect = conn.dialect
    columns = list(rows[0])
    table = UsageLog.__table__.c
    convert = [table[name].type.dialect_impl(dialect).bind_processor(dialect) for name in columns]
    marker = "?" if dialect.name == "sqlite" else "%s"
    quote = dialect.identifier_preparer.quote
    sql = (
        f"INSERT INTO {quote(UsageLog.__tablename__)} "
        f"({', '.join(quote(name) for name in columns)}) "
        f"VALUES ({', '.join([marker] * len(columns))})"
    )
    # Only the columns that have a processor are touched: this runs for every request.
    processed = [(index, process) for index, process in enumerate(convert) if process is not None]
    values = []
    for row in rows:
        record = list(row.values())
        for index, process in processed:
            value = record[index]
            if value is not None:
                record[index] = process(value)
        values.append(tuple(record))
    conn.exec_driver_sql(sql, values)


def _usage_row(s: Settlement) -> dict[str, Any]:
    total = None
    if s.prompt_tokens is not None or s.completion_tokens is not None:
        total = (s.prompt_tokens or 0) + (s.completion_tokens or 0)
    # Strings a client chose (the model name) are cut to their column, so PostgreSQL never
    # refuses a row for its length.
    return {
        "id": s.id,
        "user_id": s.user_id,
        "api_key_id": s.api_key_id,
        "timestamp": s.timestamp,
        "model": s.model[:255],
        "provider": _cut(s.provider, 64),
        "endpoint": s.endpoint[:64],
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens,
        "total_tokens": total,
        "cache_read_tokens": s.cache_read_tokens,
        "cache_write_tokens": s.cache_write_tokens,
        "counts_toward_budget": s.counts_toward_budget,
        "cost": s.cost,
        "status": s.status,
        "error_message": s.error_message,
        "latency_ms": s.latency_ms,
        "request_id": _cut(s.request_id, 64),
        "status_code": s.status_code,
        "price_source": s.price_source,
        "route": s.route,
        "attempts": s.attempts,
    }


def _cut(text: str | None, length: int) -> str | None:
    return None if text is None else text[:length]


def reclaim(conn: Connection, left_by: str | None, now: datetime) -> int:
    """Give back holds that expired, and (at start-up) those an earlier run left behind.

    `left_by` names this host and port: holds of that instance, and of worker processes
    that ran under it ("host:port:pid"), cannot belong to anyone alive once we have the port.
    """
    condition = Reservation.expires_at <= now
    if left_by is not None:
        condition = or_(
            condition,
            Reservation.instance_id == left_by,
            Reservation.instance_id.startswith(left_by + ":", autoescape=True),
        )
    rows = conn.execute(
        delete(Reservation)
        .where(condition)
        .returning(
            Reservation.user_id, Reservation.amount, Reservation.requests, Reservation.tokens
        )
    ).all()
    per_user: dict[str, list[Any]] = defaultdict(lambda: [Decimal(0), 0, 0])
    for user_id, amount, requests, tokens in rows:
        if user_id is not None and (amount or requests or tokens):
            totals = per_user[user_id]
            totals[0] += amount or 0
            totals[1] += requests or 0
            totals[2] += tokens or 0
    for user_id, (amount, requests, tokens) in per_user.items():
        conn.execute(
            update(User)
            .where(User.user_id == user_id)
            .values(
                reserved=User.reserved - amount,
                reserved_requests=User.reserved_requests - requests,
                reserved_tokens=User.reserved_tokens - tokens,
            )
        )
    return sum(1 for _, amount, requests, tokens in rows if amount or requests or tokens)


class Unwritten(Exception):
    """The database could not be reached: these settlements are still to be written."""

    def __init__(self, rows: list[Settlement]) -> None:
        super().__init__(f"{len(rows)} usage row(s) unwritten")
        self.rows = rows


# Failures of the database itself (down, locked, connection lost), not of one row's values.
_TRANSIENT = (OperationalError, InterfaceError, DisconnectionError, SATimeoutError)


def write_settlements(
    conn: Connection,
    batch: list[Settlement],
    instance_id: str,
    reject: Callable[[Settlement, BaseException], None],
    holds: Holds | None = None,
) -> None:
    """Write settlements, each batch in one transaction; one bad row never holds back the rest.

    A batch the database refuses is split in halves until the row it refuses is alone;
    that row goes to `reject` and everything else lands. Raises Unwritten (with the rows
    not yet written) when the database itself fails, so they can be retried.
    """
    parts = [batch]
    while parts:
        part = parts.pop()
        try:
            with conn.begin():
                settle_all(conn, part, instance_id, utcnow(), holds)
            continue
        except Exception as exc:
            transient = isinstance(exc, _TRANSIENT) or (
                isinstance(exc, DBAPIError) and exc.connection_invalidated
            )
            if transient or (len(part) == 1 and not _alive(conn)):
                raise Unwritten([row for p in (*parts, part) for row in p]) from exc
            if len(part) == 1:
                reject(part[0], exc)
                continue
        middle = len(part) // 2
        parts += [part[middle:], part[:middle]]  # the first half is written first


def _alive(conn: Connection) -> bool:
    try:
        with conn.begin():
            conn.execute(select(1))
    except Exception:
        return False
    return True


def log_rejected(row: Settlement, exc: BaseException) -> None:
    # Who and what, never the key or the prompt: enough to find and redo the row by hand.
    log.error(
        "usage row refused by the database and dropped (%s): id=%s user=%s model=%s "
        "status=%s prompt_tokens=%s completion_tokens=%s cost=%s",
        type(exc).__name__,
        row.id,
        row.user_id,
        row.model[:80],
        row.status,
        row.prompt_tokens,
        row.completion_tokens,
        None if row.cost is None else f"{row.cost:f}",
    )

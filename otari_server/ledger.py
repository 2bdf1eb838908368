"""Money in motion: reserve the worst case before a call, settle the real cost after.

One writer thread owns every hot-path write. Requests queue their reservations and
settlements; the writer takes whatever has queued and applies it in one transaction (group
commit), so a burst of N requests costs one commit, not N, and SQLite never sees two writers
fight over its lock. Reservations are answered as soon as their transaction commits (they are
the concurrency guarantee); settlements and usage rows ride along in the next transaction.

Holds are kept per (instance, user) in `reservations`, so an instance that dies leaves rows
that say exactly how much to give back; the next start of that instance, or any instance once
the row expires, returns it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, bindparam, delete, insert, or_, select, update
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError

from otari_server import budgets, ratelimits, usage_totals
from otari_server.errors import BudgetExceeded, NotFound, OtariError, ServiceUnavailable
from otari_server.holds import Holds, UserBudget
from otari_server.settings import state_dir
from otari_server.tables import APIKey, Reservation, UsageLog, User, utcnow

log = logging.getLogger("otari.ledger")

_RETRY_DELAY = 1.0


@dataclass(frozen=True, slots=True)
class Hold:
    """What one request holds against a user's budget (nothing when user_id is None):
    money, requests and tokens (each only when the budget limits it). `clamped` is the
    per-choice output limit the budget clamp lowered the request to, if it did."""

    user_id: str | None
    amount: Decimal
    requests: int = 0
    tokens: int = 0
    clamped: int | None = None


NO_HOLD = Hold(None, Decimal(0))


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
    # Where the cost's price came from (pricing.Price.source); None when unpriced.
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


@dataclass(slots=True)
class _Ask:
    user_id: str | None  # None: nothing to hold, only rate limits to count
    need: budgets.Need
    limits: tuple[ratelimits.Limit, ...]
    future: asyncio.Future[Hold]
    clamp: bool = False  # the global budget_clamp setting (a budget's own overrides it)


# Statements built once: constructing SQLAlchemy expressions costs more than running them.
_SETTLE_USER = (update(User).where(User.user_id == bindparam("uid"))
                .values(spend=User.spend + bindparam("cost", type_=User.spend.type),
                        reserved=User.reserved - bindparam("release", type_=User.reserved.type)))
_SETTLE_KEY = (update(APIKey).where(APIKey.id == bindparam("kid"))
               .values(spend=APIKey.spend + bindparam("cost", type_=APIKey.spend.type)))
_SHRINK_HOLD = (update(Reservation).where(Reservation.id == bindparam("hid"))
                .values(amount=Reservation.amount - bindparam("amount",
                                                              type_=Reservation.amount.type)))
_HELD = (select(Reservation.user_id, Reservation.amount)
         .where(Reservation.id.in_(bindparam("ids", expanding=True))))
_INSERT_USAGE = insert(UsageLog)


def hold_id(instance_id: str, user_id: str) -> str:
    """Primary key of an instance's aggregated hold on a user's budget."""
    return f"{instance_id}|{user_id}"


def refusal(user_id: str, amount: Decimal, available: Decimal, max_budget: Decimal,
            resets_at: datetime | None, affordable: int | None = None,
            field: str = "max_tokens") -> BudgetExceeded:
    """The error for a request whose worst case does not fit; with `affordable` (1 or
    more), it says which output limit would."""
    until = f" until {resets_at.isoformat()}" if resets_at else ""
    return BudgetExceeded(
        f"Budget exceeded for user '{user_id}': this request may cost up to "
        f"{amount.normalize():f}, {max(available, Decimal(0)).normalize():f} of "
        f"{max_budget.normalize():f} remains{until}{_advice(affordable, field)}")


def limit_refusal(user_id: str, row: UserBudget, what: str, need: budgets.Need,
                  left: budgets.Remaining, resets_at: datetime | None,
                  affordable: int | None = None) -> BudgetExceeded:
    """The error for a request over the budget's request or token limit."""
    until = f" until {resets_at.isoformat()}" if resets_at else ""
    if what == "requests":
        return BudgetExceeded(
            f"Request limit reached for user '{user_id}': {row.request_limit} request(s) "
            f"per period, none remains{until}")
    field = need.output.field if need.output is not None else "max_tokens"
    return BudgetExceeded(
        f"Token limit exceeded for user '{user_id}': this request may use up to "
        f"{need.tokens} tokens, {max(left.tokens or 0, 0)} of {row.token_limit} "
        f"remain{until}{_advice(affordable, field)}")


def _advice(affordable: int | None, field: str) -> str:
    if not affordable:
        return ""
    return f"; lower {field} to {affordable} or less"


def reserve_all(conn: Connection, asks: list[_Ask], instance_id: str, ttl: float,
                now: datetime) -> dict[int, Hold | OtariError]:
    """Apply a batch of reservations in one transaction; results by ask index.

    Without rate limits to count, the whole transaction runs on the driver's connection
    (see holds.py): the common case, and the one a request waits on.
    """
    holds = Holds(conn)
    try:
        if any(ask.limits for ask in asks):
            with conn.begin():
                return _reserve(conn, holds, asks, instance_id, ttl, now)
        holds.begin()
        try:
            results = _reserve(None, holds, asks, instance_id, ttl, now)
        except BaseException:
            holds.rollback()
            raise
        holds.commit()
        return results
    finally:
        holds.close()


def _reserve(conn: Connection | None, holds: Holds, asks: list[_Ask], instance_id: str,
             ttl: float, now: datetime) -> dict[int, Hold | OtariError]:
    results: dict[int, Hold | OtariError] = {}
    by_user: dict[str, list[int]] = defaultdict(list)
    for index, ask in enumerate(asks):
        refused = None
        if ask.limits and conn is not None:
            refused = ratelimits.admit(conn, ask.limits, now)
        if refused is not None:
            results[index] = refused
        elif ask.user_id is None:
            results[index] = NO_HOLD
        else:
            by_user[ask.user_id].append(index)
    if by_user:
        _reserve_budgets(holds, asks, by_user, results, instance_id, ttl, now)
    return results


def _reserve_budgets(holds: Holds, asks: list[_Ask], by_user: dict[str, list[int]],
                     results: dict[int, Hold | OtariError], instance_id: str, ttl: float,
                     now: datetime) -> None:
    rows = holds.user_budgets(list(by_user))
    for user_id, indexes in by_user.items():
        row = rows.get(user_id)
        if row is None or row.deleted_at is not None:
            for index in indexes:
                results[index] = NotFound(f"User '{user_id}' not found")
            continue
        if not row.limited:
            for index in indexes:
                results[index] = NO_HOLD
            continue
        spend, requests, tokens = row.spend, row.requests, row.tokens
        resets_at = row.next_budget_reset_at
        if resets_at is not None and row.budget_started_at is not None and now >= resets_at:
            period = budgets.current_period(row.budget_started_at, row.budget_duration_sec, now,
                                            row.reset_alignment)
            holds.roll_over(user_id, period.started_at, period.resets_at)
            spend, requests, tokens, resets_at = Decimal(0), 0, 0, period.resets_at
        left = budgets.Remaining(
            None if row.max_budget is None else row.max_budget - spend - row.reserved,
            None if row.request_limit is None
            else row.request_limit - requests - row.reserved_requests,
            None if row.token_limit is None else row.token_limit - tokens - row.reserved_tokens)
        total, total_requests, total_tokens = Decimal(0), 0, 0
        for index in indexes:
            ask = asks[index]
            clamp = ask.clamp if row.budget_clamp is None else row.budget_clamp
            verdict = budgets.judge(ask.need, left, clamp)
            if verdict.refused == "money":
                assert row.max_budget is not None and left.money is not None
                field = ask.need.output.field if ask.need.output is not None else "max_tokens"
                results[index] = refusal(user_id, ask.need.amount, left.money, row.max_budget,
                                         resets_at, verdict.affordable, field)
                continue
            if verdict.refused is not None:
                results[index] = limit_refusal(user_id, row, verdict.refused, ask.need, left,
                                               resets_at, verdict.affordable)
                continue
            # Later requests of the batch see what this one holds (the same rule, in order).
            if left.money is not None:
                left.money -= verdict.amount
            if left.requests is not None:
                left.requests -= verdict.requests
            if left.tokens is not None:
                left.tokens -= verdict.tokens
            total += verdict.amount
            total_requests += verdict.requests
            total_tokens += verdict.tokens
            results[index] = Hold(user_id, verdict.amount, verdict.requests, verdict.tokens,
                                   verdict.clamped)
        if total or total_requests or total_tokens:
            holds.add_reserved(user_id, total, total_requests, total_tokens)
            holds.grow_hold(hold_id(instance_id, user_id), user_id, instance_id, total, now,
                            now + timedelta(seconds=ttl), total_requests, total_tokens)


def settle_all(conn: Connection, batch: list[Settlement], instance_id: str,
               now: datetime) -> None:
    """Apply settlements in the caller's transaction: usage rows, spend, released holds."""
    rows = [_usage_row(s) for s in batch]
    conn.execute(_INSERT_USAGE, rows)
    usage_totals.add(conn, rows, usage_totals.shard_of(instance_id))
    rate_tokens: dict[str, int] = defaultdict(int)
    for s in batch:
        for subject in s.rate_subjects:
            rate_tokens[subject] += (s.prompt_tokens or 0) + (s.completion_tokens or 0)
    if rate_tokens:
        ratelimits.add_tokens(conn, rate_tokens, now)
    user_spend: dict[str, Decimal] = defaultdict(Decimal)
    key_spend: dict[str, Decimal] = defaultdict(Decimal)
    released: dict[str, Decimal] = defaultdict(Decimal)
    for s in batch:
        if s.hold.user_id is not None and s.hold.amount:
            released[s.hold.user_id] += s.hold.amount
        if not s.cost or not s.counts_toward_budget:
            continue
        if s.user_id is not None:
            user_spend[s.user_id] += s.cost
        elif s.api_key_id is not None:
            key_spend[s.api_key_id] += s.cost
    held = _held(conn, instance_id, list(released))
    users, holds = [], []
    for user_id in user_spend.keys() | released.keys():
        # A hold reclaimed meanwhile (it expired) was given back already: release no more
        # than this instance still holds.
        release = min(released.get(user_id, Decimal(0)), held.get(user_id, Decimal(0)))
        users.append({"uid": user_id, "cost": user_spend.get(user_id, Decimal(0)),
                      "release": release})
        if release:
            holds.append({"hid": hold_id(instance_id, user_id), "amount": release})
    if users:
        conn.execute(_SETTLE_USER, users)
    if holds:
        conn.execute(_SHRINK_HOLD, holds)
    if key_spend:
        conn.execute(_SETTLE_KEY, [{"kid": k, "cost": v} for k, v in key_spend.items()])
    settle_counts(conn, batch, instance_id)


_COUNT_USER = (update(User).where(User.user_id == bindparam("uid"))
               .values(requests=User.requests + bindparam("n"),
                       tokens=User.tokens + bindparam("t"),
                       reserved_requests=User.reserved_requests - bindparam("rn"),
                       reserved_tokens=User.reserved_tokens - bindparam("rt")))
_SHRINK_COUNTS = (update(Reservation).where(Reservation.id == bindparam("hid"))
                  .values(requests=Reservation.requests - bindparam("rn"),
                          tokens=Reservation.tokens - bindparam("rt")))
_HELD_COUNTS = (select(Reservation.user_id, Reservation.requests, Reservation.tokens)
                .where(Reservation.id.in_(bindparam("ids", expanding=True))))


def served(s: Settlement) -> bool:
    """Whether a settled request counts toward its user's requests: it succeeded, or the
    provider consumed tokens for it (a failure before that costs nothing, like money)."""
    return s.status == "success" or bool(s.prompt_tokens or s.completion_tokens)


def settle_counts(conn: Connection, batch: list[Settlement], instance_id: str) -> None:
    """Apply settlements to the users' request and token counts (in the caller's
    transaction): add what was used, release what the holds reserved."""
    used: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    released: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for s in batch:
        if s.hold.user_id is not None and (s.hold.requests or s.hold.tokens):
            pair = released[s.hold.user_id]
            pair[0] += s.hold.requests
            pair[1] += s.hold.tokens
        if s.user_id is not None and s.counts_toward_budget and served(s):
            pair = used[s.user_id]
            pair[0] += 1
            pair[1] += (s.prompt_tokens or 0) + (s.completion_tokens or 0)
    if not used and not released:
        return
    held: dict[str, tuple[int, int]] = {}
    if released:
        ids = [hold_id(instance_id, user_id) for user_id in released]
        held = {str(user_id): (requests, tokens) for user_id, requests, tokens
                in conn.execute(_HELD_COUNTS, {"ids": ids})}
    users, shrink = [], []
    for user_id in used.keys() | released.keys():
        # As for money: release no more than this instance still holds (see settle_all).
        still = held.get(user_id, (0, 0))
        freed = released.get(user_id, [0, 0])
        rn, rt = min(freed[0], still[0]), min(freed[1], still[1])
        n, t = used.get(user_id, [0, 0])
        users.append({"uid": user_id, "n": n, "t": t, "rn": rn, "rt": rt})
        if rn or rt:
            shrink.append({"hid": hold_id(instance_id, user_id), "rn": rn, "rt": rt})
    conn.execute(_COUNT_USER, users)
    if shrink:
        conn.execute(_SHRINK_COUNTS, shrink)


def _held(conn: Connection, instance_id: str, user_ids: list[str]) -> dict[str, Decimal]:
    if not user_ids:
        return {}
    ids = [hold_id(instance_id, user_id) for user_id in user_ids]
    return {str(user_id): amount for user_id, amount in conn.execute(_HELD, {"ids": ids})}


def _usage_row(s: Settlement) -> dict[str, Any]:
    total = None
    if s.prompt_tokens is not None or s.completion_tokens is not None:
        total = (s.prompt_tokens or 0) + (s.completion_tokens or 0)
    # Strings a client chose (the model name) are cut to their column, so PostgreSQL never
    # refuses a row for its length.
    return {"id": s.id, "user_id": s.user_id, "api_key_id": s.api_key_id,
            "timestamp": s.timestamp, "model": s.model[:255], "provider": _cut(s.provider, 64),
            "endpoint": s.endpoint[:64], "prompt_tokens": s.prompt_tokens,
            "completion_tokens": s.completion_tokens, "total_tokens": total,
            "cache_read_tokens": s.cache_read_tokens, "cache_write_tokens": s.cache_write_tokens,
            "counts_toward_budget": s.counts_toward_budget, "cost": s.cost, "status": s.status,
            "error_message": s.error_message, "latency_ms": s.latency_ms,
            "request_id": _cut(s.request_id, 64), "status_code": s.status_code,
            "price_source": s.price_source,
            "route": s.route, "attempts": s.attempts}


def _cut(text: str | None, length: int) -> str | None:
    return None if text is None else text[:length]


def reclaim(conn: Connection, left_by: str | None, now: datetime) -> int:
    """Give back holds that expired, and (at start-up) those an earlier run left behind.

    `left_by` names this host and port: holds of that instance, and of worker processes
    that ran under it ("host:port:pid"), cannot belong to anyone alive once we have the port.
    """
    condition = Reservation.expires_at <= now
    if left_by is not None:
        condition = or_(condition, Reservation.instance_id == left_by,
                        Reservation.instance_id.startswith(left_by + ":", autoescape=True))
    rows = conn.execute(delete(Reservation).where(condition)
                        .returning(Reservation.user_id, Reservation.amount,
                                   Reservation.requests, Reservation.tokens)).all()
    per_user: dict[str, list[Any]] = defaultdict(lambda: [Decimal(0), 0, 0])
    for user_id, amount, requests, tokens in rows:
        if user_id is not None and (amount or requests or tokens):
            totals = per_user[user_id]
            totals[0] += amount or 0
            totals[1] += requests or 0
            totals[2] += tokens or 0
    for user_id, (amount, requests, tokens) in per_user.items():
        conn.execute(update(User).where(User.user_id == user_id)
                     .values(reserved=User.reserved - amount,
                             reserved_requests=User.reserved_requests - requests,
                             reserved_tokens=User.reserved_tokens - tokens))
    return sum(1 for _, amount, requests, tokens in rows if amount or requests or tokens)


class _Unwritten(Exception):
    """The database could not be reached: these settlements are still to be written."""

    def __init__(self, rows: list[Settlement]) -> None:
        super().__init__(f"{len(rows)} usage row(s) unwritten")
        self.rows = rows


# Failures of the database itself (down, locked, connection lost), not of one row's values.
_TRANSIENT = (OperationalError, InterfaceError, DisconnectionError, SATimeoutError)


def write_settlements(conn: Connection, batch: list[Settlement], instance_id: str,
                      reject: Callable[[Settlement, BaseException], None]) -> None:
    """Write settlements, each batch in one transaction; one bad row never holds back the rest.

    A batch the database refuses is split in halves until the row it refuses is alone;
    that row goes to `reject` and everything else lands. Raises _Unwritten (with the rows
    not yet written) when the database itself fails, so they can be retried.
    """
    parts = [batch]
    while parts:
        part = parts.pop()
        try:
            with conn.begin():
                settle_all(conn, part, instance_id, utcnow())
            continue
        except Exception as exc:
            transient = isinstance(exc, _TRANSIENT) or (
                isinstance(exc, DBAPIError) and exc.connection_invalidated)
            if transient or (len(part) == 1 and not _alive(conn)):
                raise _Unwritten([row for p in (*parts, part) for row in p]) from exc
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


def spool_path(instance_id: str) -> Path:
    """The file an instance's unwritten settlements go to at shutdown (state dir, 0600)."""
    return state_dir() / f"usage-spool-{_file_safe(instance_id)}.jsonl"


def spooled_paths(node: str) -> list[Path]:
    """Spool files left by this host and port (and its worker processes)."""
    folder, name = state_dir(), f"usage-spool-{_file_safe(node)}"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.name in (f"{name}.jsonl", f"{name}.jsonl.replaying")
                  or (p.name.startswith(name + "_") and ".jsonl" in p.name))


def _file_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in name)


def spool(path: Path, rows: list[Settlement]) -> None:
    """Append settlements to a spool file, one JSON object a line, mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, b"".join(orjson.dumps(_spooled(row)) + b"\n" for row in rows))
        os.fsync(fd)
    finally:
        os.close(fd)


def _spooled(s: Settlement) -> dict[str, Any]:
    return {"hold_user_id": s.hold.user_id, "hold_amount": str(s.hold.amount),
            "user_id": s.user_id, "api_key_id": s.api_key_id, "model": s.model,
            "provider": s.provider, "endpoint": s.endpoint, "status": s.status,
            "prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens,
            "cache_read_tokens": s.cache_read_tokens,
            "cache_write_tokens": s.cache_write_tokens,
            "cost": None if s.cost is None else str(s.cost),
            "counts_toward_budget": s.counts_toward_budget, "error_message": s.error_message,
            "latency_ms": s.latency_ms, "request_id": s.request_id,
            "rate_subjects": list(s.rate_subjects), "id": s.id,
            "timestamp": s.timestamp.isoformat(), "status_code": s.status_code}


def _unspooled(line: dict[str, Any]) -> Settlement:
    hold = Hold(line.pop("hold_user_id"), Decimal(line.pop("hold_amount")))
    cost = line.pop("cost")
    return Settlement(hold=hold, cost=None if cost is None else Decimal(cost),
                      timestamp=datetime.fromisoformat(line.pop("timestamp")),
                      rate_subjects=tuple(line.pop("rate_subjects")), **line)


def replay_spool(engine: Engine, node: str, instance_id: str) -> int:
    """Write the settlements earlier runs of this node spooled at shutdown; exactly once.

    Call after `reclaim` (their holds were given back with the rest, so the replay releases
    nothing twice). Each file is renamed before it is read, written, then removed; a row
    written already (its id is the usage row's primary key) is refused, not counted twice.
    Rows the database cannot take now stay in the file for the next start.
    """
    replayed = 0
    for path in spooled_paths(node):
        working = path if path.name.endswith(".replaying") else path.with_name(
            path.name + ".replaying")
        if working != path:
            path.replace(working)
        rows = [_unspooled(orjson.loads(line))
                for line in working.read_bytes().splitlines() if line.strip()]
        with engine.connect() as conn:
            try:
                write_settlements(conn, rows, instance_id, _log_rejected)
            except _Unwritten as exc:
                working.unlink()
                spool(path, exc.rows)
                log.warning("could not replay %d spooled usage row(s) from %s (%s); "
                            "kept for the next start", len(exc.rows), path.name,
                            type(exc.__cause__).__name__)
                replayed += len(rows) - len(exc.rows)
                continue
        working.unlink()
        replayed += len(rows)
    if replayed:
        log.warning("replayed %d usage row(s) spooled at an earlier shutdown", replayed)
    return replayed


def _log_rejected(row: Settlement, exc: BaseException) -> None:
    # Who and what, never the key or the prompt: enough to find and redo the row by hand.
    log.error("usage row refused by the database and dropped (%s): id=%s user=%s model=%s "
              "status=%s prompt_tokens=%s completion_tokens=%s cost=%s",
              type(exc).__name__, row.id, row.user_id, row.model[:80], row.status,
              row.prompt_tokens, row.completion_tokens,
              None if row.cost is None else f"{row.cost:f}")


class Ledger:
    """The writer thread and its two queues (reservations, settlements)."""

    def __init__(self, engine: Engine, instance_id: str, ttl: float,
                 flush_interval: float, spool_to: Path | None = None) -> None:
        self._engine = engine
        self._instance_id = instance_id
        self._ttl = ttl
        self._flush_interval = flush_interval
        self._spool = spool_to
        self._asks: list[_Ask] = []
        self._settlements: list[Settlement] = []
        self._writing: float | None = None  # when the oldest row being written was queued
        self._batch: list[Settlement] = []  # the settlements being written
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: Connection | None = None
        # Called (from the writer thread) with the users whose spend a committed batch
        # changed; budget alerts hook in here. Must not block.
        self.on_settled: Callable[[set[str]], None] | None = None
        self.rejected = 0  # rows the database refused, isolated and dropped
        self.last_error: str | None = None  # why the last write failed (a class name)

    @property
    def depth(self) -> int:
        """Settlements waiting to be written."""
        return len(self._settlements)

    def lag(self) -> float:
        """Seconds the oldest settlement not yet written has waited beyond the write-behind
        window (0 when none is late)."""
        with self._wake:
            oldest = [t for t in (self._settlements[0].queued if self._settlements else None,
                                  self._writing) if t is not None]
        if not oldest:
            return 0.0
        return max(time.monotonic() - min(oldest) - self._flush_interval, 0.0)

    def start(self) -> None:
        """Start the writer (from inside the event loop that will await reservations)."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="otari-ledger", daemon=True)
        self._thread.start()

    async def reserve(self, user_id: str | None, amount: Decimal,
                      limits: tuple[ratelimits.Limit, ...] = (),
                      need: budgets.Need | None = None, clamp: bool = False) -> Hold:
        """Count the request against its rate limits and hold `amount` against the user's
        budget (with `need`: also its request and worst-case tokens, and the clamp's
        inputs; without it, a top-up of money only); raises RateLimited, BudgetExceeded or
        NotFound."""
        assert self._loop is not None, "ledger used before start()"
        future: asyncio.Future[Hold] = self._loop.create_future()
        need = need or budgets.Need(amount, requests=0)
        with self._wake:
            self._asks.append(_Ask(user_id, need, limits, future, clamp))
            self._wake.notify()
        return await future

    def record(self, settlement: Settlement) -> None:
        """Queue a settlement; never blocks the request."""
        if not settlement.id:
            settlement.id = settlement.request_id or uuid.uuid4().hex
        with self._wake:
            self._settlements.append(settlement)
            if len(self._settlements) == 1:
                self._wake.notify()  # the writer starts its write-behind window

    def stop(self, timeout: float) -> None:
        """Write everything queued, then stop the writer (blocking; call from a thread).

        Rows the database cannot take go to the spool file, replayed at the next start.
        """
        with self._wake:
            self._stopping = True
            self._wake.notify()
        left: list[Settlement] = []
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                # Stuck in the database: its batch is not committed (the transaction dies
                # with the process), so it is spooled with the rest. Should it commit after
                # all, the replay's duplicate ids are refused, not billed twice.
                log.error("usage writer did not finish within %.0fs", timeout)
                left = list(self._batch)
        with self._wake:
            left += self._settlements
            self._settlements = []
        if not left:
            return
        if self._spool is None:
            log.error("%d usage row(s) unwritten at shutdown", len(left))
            return
        spool(self._spool, left)
        log.warning("database unavailable at shutdown: %d usage row(s) saved to %s, written "
                    "at the next start", len(left), self._spool)

    def _owed(self, users: set[str]) -> list[Settlement]:
        """Take the queued settlements if any belongs to one of `users` (all of them: one
        transaction, and their order kept)."""
        with self._wake:
            if not any(s.hold.user_id in users or s.user_id in users
                       for s in self._settlements):
                return []
            owed, self._settlements = self._settlements, []
            self._batch = self._batch + owed
            return owed

    def _reserve(self, conn: Connection, asks: list[_Ask]) -> dict[int, Hold | OtariError]:
        """Reservations; a budget refusal is decided only once the user's finished requests
        are settled (write-behind must never block a user's next request).

        Writing settlements costs a transaction, so it is paid only when it can change an
        answer: refusals of users with settlements still queued are retried after them.
        """
        results = reserve_all(conn, asks, self._instance_id, self._ttl, utcnow())
        refused = [i for i, result in results.items()
                   if isinstance(result, BudgetExceeded) and asks[i].user_id is not None]
        if not refused:
            return results
        owed = self._owed({str(asks[i].user_id) for i in refused})
        if not owed:
            return results
        write_settlements(conn, owed, self._instance_id, self._reject)
        # Rate limits were counted on the first pass: the retry holds the budget only.
        again = [_Ask(asks[i].user_id, asks[i].need, (), asks[i].future, asks[i].clamp)
                 for i in refused]
        retried = reserve_all(conn, again, self._instance_id, self._ttl, utcnow())
        for position, index in enumerate(refused):
            results[index] = retried[position]
        return results

    def _run(self) -> None:
        last_failure = 0.0
        last_flush = time.monotonic()
        while True:
            with self._wake:
                while not (self._asks or self._stopping or self._settlements):
                    self._wake.wait()
                if not self._asks and not self._stopping:
                    # Only settlements: let them gather for the write-behind window.
                    self._wake.wait(max(self._flush_interval
                                        - (time.monotonic() - last_flush), 0))
                asks, self._asks = self._asks, []
                stopping = self._stopping
                # Settlements go in batches, once per window (or when many are waiting, or
                # when a user's reservation would be refused without them: see _reserve).
                due = (stopping or len(self._settlements) >= 1000
                       or time.monotonic() - last_flush >= self._flush_interval)
                settlements: list[Settlement] = []
                if due:
                    settlements, self._settlements = self._settlements, []
                    last_flush = time.monotonic()
                self._writing = settlements[0].queued if settlements else None
                self._batch = settlements
            if time.monotonic() - last_failure < _RETRY_DELAY and not asks and not stopping:
                self._requeue(settlements)
                time.sleep(0.05)
                continue
            try:
                self._write(asks, settlements)
            except _Unwritten as exc:
                last_failure = time.monotonic()
                self.last_error = type(exc.__cause__).__name__
                log.warning("database write failed (%s); %d usage row(s) kept for retry",
                            self.last_error, len(exc.rows))
                self._requeue(exc.rows)
                self._answer(asks, {i: ServiceUnavailable("database unavailable, retry later")
                                    for i in range(len(asks))})
                if stopping:
                    return
                continue
            self.last_error = None
            if stopping and not self._asks and not self._settlements:
                if self._conn is not None:
                    self._conn.close()
                return

    def _write(self, asks: list[_Ask], settlements: list[Settlement]) -> None:
        # The writer keeps one connection for its lifetime: no pool round trip per batch.
        unwritten = settlements
        try:
            if self._conn is None or self._conn.closed or self._conn.invalidated:
                self._conn = self._engine.connect()
            conn = self._conn
            if settlements:
                write_settlements(conn, settlements, self._instance_id, self._reject)
                if self.on_settled is not None:
                    self.on_settled({s.user_id for s in settlements
                                     if s.user_id is not None and s.cost})
            unwritten = []
            if asks:
                self._answer(asks, self._reserve(conn, asks))
        except Exception as exc:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.invalidate()  # a broken connection is replaced next batch
            if isinstance(exc, _Unwritten):
                raise
            raise _Unwritten(unwritten) from exc
        finally:
            with self._wake:
                self._writing = None
                self._batch = []

    def _reject(self, row: Settlement, exc: BaseException) -> None:
        self.rejected += 1
        _log_rejected(row, exc)

    def _requeue(self, settlements: list[Settlement]) -> None:
        with self._wake:
            self._settlements[:0] = settlements

    def _answer(self, asks: list[_Ask], results: dict[int, Hold | OtariError]) -> None:
        if not asks or self._loop is None:
            return

        def deliver() -> None:
            for index, ask in enumerate(asks):
                if ask.future.done():
                    continue
                result = results[index]
                if isinstance(result, Hold):
                    ask.future.set_result(result)
                else:
                    ask.future.set_exception(result)

        self._loop.call_soon_threadsafe(deliver)

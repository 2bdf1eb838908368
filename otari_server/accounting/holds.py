"""The statements on budgets and holds, run on the driver's own cursor: reserving (once per
batch of asks) and settling (once per batch of finished requests).

They run on every request's critical path, where SQLAlchemy's statement execution costs
about five times the SQL itself; so these few statements are written out for both dialects
and their values converted with the same column types the tables use.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Dialect

from otari_server.storage.tables import Money, UTCDateTime

_MONEY = Money()
_TIME = UTCDateTime()

_USER_BUDGETS = (
    "SELECT users.user_id, users.spend, users.reserved, users.budget_started_at, "
    "users.next_budget_reset_at, users.deleted_at, budgets.max_budget, "
    "budgets.budget_duration_sec, budgets.reset_alignment, budgets.request_limit, "
    "budgets.token_limit, budgets.budget_clamp, users.requests, users.tokens, "
    "users.reserved_requests, users.reserved_tokens FROM users LEFT OUTER JOIN budgets "
    "ON users.budget_id = budgets.budget_id WHERE users.user_id IN ({ids})"
)
_USER_BUDGETS_LOCKED = _USER_BUDGETS + " FOR UPDATE OF users"
_ROLL_OVER = (
    "UPDATE users SET spend = %s, requests = 0, tokens = 0, budget_started_at = %s, "
    "next_budget_reset_at = %s WHERE user_id = %s"
)
_ADD_RESERVED = (
    "UPDATE users SET reserved = reserved + %s, "
    "reserved_requests = reserved_requests + %s, "
    "reserved_tokens = reserved_tokens + %s WHERE user_id = %s"
)
_GROW_HOLD = (
    "UPDATE reservations SET amount = amount + %s, requests = requests + %s, "
    "tokens = tokens + %s, expires_at = %s WHERE id = %s"
)
_HELD = "SELECT id, amount, requests, tokens FROM reservations WHERE id IN ({ids})"
_SETTLE_USER = (
    "UPDATE users SET spend = spend + %s, reserved = reserved - %s, "
    "requests = requests + %s, tokens = tokens + %s, "
    "reserved_requests = reserved_requests - %s, reserved_tokens = reserved_tokens - %s "
    "WHERE user_id = %s"
)
_RELEASE = (
    "UPDATE reservations SET amount = amount - %s, requests = requests - %s, "
    "tokens = tokens - %s WHERE id = %s"
)
_SETTLE_KEY = "UPDATE api_keys SET spend = spend + %s WHERE id = %s"
_NEW_HOLD = (
    "INSERT INTO reservations (id, user_id, api_key_id, amount, requests, tokens, "
    "instance_id, created_at, expires_at) VALUES (%s, %s, NULL, %s, %s, %s, %s, %s, %s)"
)


@dataclass(frozen=True, slots=True)
class UserBudget:
    """A user's budget state, as the reservation rule needs it."""

    user_id: str
    spend: Decimal
    reserved: Decimal
    budget_started_at: datetime | None
    next_budget_reset_at: datetime | None
    deleted_at: datetime | None
    max_budget: Decimal | None
    budget_duration_sec: int | None
    reset_alignment: str | None = None
    request_limit: int | None = None
    token_limit: int | None = None
    budget_clamp: bool | None = None
    requests: int = 0  # settled in the period
    tokens: int = 0
    reserved_requests: int = 0  # held by requests in flight
    reserved_tokens: int = 0

    @property
    def limited(self) -> bool:
        """Whether any of the budget's ceilings is set."""
        return not (
            self.max_budget is None and self.request_limit is None and self.token_limit is None
        )


@dataclass(frozen=True, slots=True)
class Held:
    """What a hold keeps (or gives back): money (USD), requests and tokens."""

    amount: Decimal = Decimal(0)
    requests: int = 0
    tokens: int = 0

    def __bool__(self) -> bool:
        return bool(self.amount or self.requests or self.tokens)

    def at_most(self, other: Held) -> Held:
        """Each dimension no larger than `other`'s."""
        return Held(
            min(self.amount, other.amount),
            min(self.requests, other.requests),
            min(self.tokens, other.tokens),
        )


NOTHING = Held()


@dataclass(frozen=True, slots=True)
class UserSettled:
    """One user's share of a settled batch: money spent, requests and tokens used (toward
    the budget), and what the user's hold gives back."""

    user_id: str
    spend: Decimal
    requests: int
    tokens: int
    released: Held


class Holds:
    """Reservation SQL for one connection's dialect."""

    def __init__(self, conn: Connection) -> None:
        self._dialect: Dialect = conn.dialect
        self._driver: Any = conn.connection.driver_connection
        self._cursor: Any = self._driver.cursor()  # type: ignore[union-attr]
        self._postgres = conn.dialect.name == "postgresql"

    # A transaction of our own, for when nothing else runs in it: SQLite is in autocommit
    # mode (we BEGIN IMMEDIATE, as the engine does), psycopg opens one implicitly.
    def begin(self) -> None:
        """Start a write transaction on the driver connection."""
        if not self._postgres:
            self._cursor.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        """Commit it."""
        if self._postgres:
            self._driver.commit()
        else:
            self._cursor.execute("COMMIT")

    def rollback(self) -> None:
        """Abandon it."""
        if self._postgres:
            self._driver.rollback()
        else:
            self._cursor.execute("ROLLBACK")

    def _sql(self, statement: str) -> str:
        return statement if self._postgres else _qmark(statement)

    def _money(self, value: Decimal) -> Any:
        return _MONEY.process_bind_param(value, self._dialect)

    def _time(self, value: datetime | None) -> Any:
        stored = _TIME.process_bind_param(value, self._dialect)
        if stored is None or self._postgres:
            return stored
        # SQLAlchemy's SQLite text format ('%Y-%m-%d %H:%M:%S.%f'), without strftime's cost.
        text: str = stored.isoformat(" ", "microseconds")
        return text

    def user_budgets(self, user_ids: list[str]) -> dict[str, UserBudget]:
        """The users' budget rows (locked for this transaction on PostgreSQL)."""
        # On PostgreSQL the row lock makes check-and-add atomic.
        statement = _USER_BUDGETS_LOCKED if self._postgres else _USER_BUDGETS
        self._cursor.execute(_in_list(statement, len(user_ids), self._postgres), user_ids)
        money = _MONEY.process_result_value
        moment = _TIME.process_result_value
        dialect = self._dialect
        return {
            row[0]: UserBudget(
                row[0],
                money(row[1], dialect) or Decimal(0),
                money(row[2], dialect) or Decimal(0),
                moment(_parsed(row[3]), dialect),
                moment(_parsed(row[4]), dialect),
                moment(_parsed(row[5]), dialect),
                money(row[6], dialect),
                row[7],
                row[8],
                row[9],
                row[10],
                None if row[11] is None else bool(row[11]),
                row[12] or 0,
                row[13] or 0,
                row[14] or 0,
                row[15] or 0,
            )
            for row in self._cursor.fetchall()
        }

    def roll_over(self, user_id: str, started: datetime, resets: datetime | None) -> None:
        """Start a new budget period with nothing spent and no requests or tokens used."""
        self._cursor.execute(
            self._sql(_ROLL_OVER),
            (self._money(Decimal(0)), self._time(started), self._time(resets), user_id),
        )

    def add_reserved(
        self, user_id: str, amount: Decimal, requests: int = 0, tokens: int = 0
    ) -> None:
        """Hold more of the user's budget: money, requests, tokens."""
        self._cursor.execute(
            self._sql(_ADD_RESERVED), (self._money(amount), requests, tokens, user_id)
        )

    def grow_hold(
        self,
        hold_id: str,
        user_id: str,
        instance_id: str,
        amount: Decimal,
        now: datetime,
        expires_at: datetime,
        requests: int = 0,
        tokens: int = 0,
    ) -> None:
        """Add to this instance's hold on the user, creating the row the first time."""
        self._cursor.execute(
            self._sql(_GROW_HOLD),
            (self._money(amount), requests, tokens, self._time(expires_at), hold_id),
        )
        if self._cursor.rowcount == 0:
            self._cursor.execute(
                self._sql(_NEW_HOLD),
                (
                    hold_id,
                    user_id,
                    self._money(amount),
                    requests,
                    tokens,
                    instance_id,
                    self._time(now),
                    self._time(expires_at),
                ),
            )

    def held(self, hold_ids: list[str]) -> dict[str, Held]:
        """What these hold rows still hold, by hold id (rows that are gone are left out)."""
        if not hold_ids:
            return {}
        self._cursor.execute(_in_list(_HELD, len(hold_ids), self._postgres), hold_ids)
        money = _MONEY.process_result_value
        dialect = self._dialect
        return {
            row[0]: Held(money(row[1], dialect) or Decimal(0), row[2] or 0, row[3] or 0)
            for row in self._cursor.fetchall()
        }

    def settle_users(self, settled: list[UserSettled]) -> None:
        """Add what users spent and used, and take back what their holds released."""
        money = self._money
        self._cursor.executemany(
            self._sql(_SETTLE_USER),
            [
                (
                    money(s.spend),
                    money(s.released.amount),
                    s.requests,
                    s.tokens,
                    s.released.requests,
                    s.released.tokens,
                    s.user_id,
                )
                for s in settled
            ],
        )

    def release(self, released: dict[str, Held]) -> None:
        """Shrink hold rows (by hold id) by what they released."""
        self._cursor.executemany(
            self._sql(_RELEASE),
            [
                (self._money(held.amount), held.requests, held.tokens, hold_id)
                for hold_id, held in released.items()
            ],
        )

    def settle_keys(self, spend: dict[str, Decimal]) -> None:
        """Add what user-less keys spent (by key id)."""
        self._cursor.executemany(
            self._sql(_SETTLE_KEY), [(self._money(cost), key) for key, cost in spend.items()]
        )

    def close(self) -> None:
        """Release the cursor."""
        self._cursor.close()


@functools.cache
def _qmark(statement: str) -> str:
    # sqlite3's placeholders, for the few fixed statements.
    return statement.replace("%s", "?")


@functools.lru_cache(maxsize=64)
def _in_list(statement: str, count: int, postgres: bool) -> str:
    # A statement with `count` placeholders for {ids}: one per batch size, 1 for most.
    sql = statement.format(ids=", ".join(["%s"] * count))
    return sql if postgres else sql.replace("%s", "?")


def _parsed(value: Any) -> Any:
    # sqlite3 returns stored datetimes as text; PostgreSQL already gives datetimes.
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    return value

"""The reservation statements, run on the driver's own cursor.

They run once per batch on every request's critical path, where SQLAlchemy's statement
execution costs about five times the SQL itself; so these few statements are written out for
both dialects and their values converted with the same column types the tables use.
"""

from __future__ import annotations

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
        return statement if self._postgres else statement.replace("%s", "?")

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
        sql = _USER_BUDGETS.format(ids=", ".join(["%s"] * len(user_ids)))
        if self._postgres:
            sql += " FOR UPDATE OF users"  # the row lock makes check-and-add atomic
        self._cursor.execute(self._sql(sql), user_ids)
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

    def close(self) -> None:
        """Release the cursor."""
        self._cursor.close()


def _parsed(value: Any) -> Any:
    # sqlite3 returns stored datetimes as text; PostgreSQL already gives datetimes.
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    return value

"""Budget alerts: a signed webhook when a user's spend crosses a fraction of their budget.

Off the hot path: the ledger's writer hands the users whose spend it just settled to
`Alerts.touch` (thread-safe, constant time); a background task then checks them against
their budget's thresholds. Each crossed threshold is claimed with an insert of a unique
(user, budget period start, threshold) row that only one instance can win, and that row is
delivered once: an instance takes each delivery attempt by moving `next_attempt_at` forward
with a conditional UPDATE (a lease), and retries with exponential backoff after a failure.

The event (one JSON object, money as plain decimal numbers):
    {"type": "budget.threshold_crossed", "id": "<alert id>", "user_id", "budget_id",
     "threshold": 0.8, "spend": 8.1, "max_budget": 10, "period_start": ISO 8601,
     "period_end": ISO 8601 | null, "timestamp": ISO 8601}
signed with `Otari-Signature: sha256=<hex HMAC-SHA256 of the body with webhook_secret>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from anyio import to_thread
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from otari_server.jsonio import dumps
from otari_server.settings import ConfigError
from otari_server.storage import db
from otari_server.storage.tables import Budget, BudgetAlert, User, utcnow

if TYPE_CHECKING:
    # httpx (and the Rich/Pygments its command-line module pulls in, ~5 MiB) is loaded only
    # when [alerts] is configured: a gateway without alerts never needs it.
    import httpx

log = logging.getLogger("otari.alerts")

SIGNATURE_HEADER = "Otari-Signature"
EVENT_TYPE = "budget.threshold_crossed"
DEFAULT_THRESHOLDS = (Decimal("0.8"), Decimal("1"))
_MAX_THRESHOLD = Decimal(100)
# How often a task looks for deliveries due (other instances' retries, a crashed lease).
_POLL_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class AlertSettings:
    """The [alerts] table, validated."""

    webhook_url: str
    webhook_secret: str
    thresholds: tuple[Decimal, ...] = DEFAULT_THRESHOLDS
    timeout: float = 10.0
    retry_base_sec: float = 1.0
    max_attempts: int = 8


def threshold(value: object, where: str) -> Decimal:
    """A threshold (a fraction of max_budget, above 0, at most 100) as an exact Decimal.

    TOML and JSON floats are read through their shortest text ("0.8"), never as binary.
    Raises ValueError naming `where`.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{where}: expected a number, got {value!r}") from None
    if not amount.is_finite() or amount <= 0 or amount > _MAX_THRESHOLD:
        raise ValueError(
            f"{where}: a threshold is a fraction of the budget above 0 "
            f"(1 is the whole budget), got {value!r}"
        )
    return amount.normalize()


def threshold_text(value: Decimal) -> str:
    """The stored and compared form of a threshold: plain, no trailing zeros ("0.8", "1")."""
    return format(value.normalize(), "f")


def parse_settings(table: Mapping[str, Any]) -> AlertSettings | None:
    """The [alerts] table, or None when no webhook_url is set; raises ConfigError."""
    known = {
        "webhook_url",
        "webhook_secret",
        "thresholds",
        "timeout",
        "retry_base_sec",
        "max_attempts",
    }
    for key in table:
        if key not in known:
            raise ConfigError(f"alerts.{key}: unknown setting")
    url = table.get("webhook_url")
    if not url:
        return None
    parts = urlsplit(str(url))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("alerts.webhook_url: expected an http(s) URL")
    secret = table.get("webhook_secret")
    if not isinstance(secret, str) or len(secret) < 16:
        raise ConfigError(
            "alerts.webhook_secret: required with webhook_url, at least 16 "
            "characters (receivers check Otari-Signature with it)"
        )
    raw = table.get("thresholds", list(DEFAULT_THRESHOLDS))
    if not isinstance(raw, list) or not raw:
        raise ConfigError("alerts.thresholds: expected a non-empty list of fractions")
    try:
        thresholds = tuple(
            sorted({threshold(v, f"alerts.thresholds[{i}]") for i, v in enumerate(raw)})
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    numbers = {}
    for key, default in (("timeout", 10.0), ("retry_base_sec", 1.0)):
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"alerts.{key}: expected a positive number of seconds")
        numbers[key] = float(value)
    attempts = table.get("max_attempts", 8)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise ConfigError("alerts.max_attempts: expected a positive integer")
    return AlertSettings(
        str(url), secret, thresholds, numbers["timeout"], numbers["retry_base_sec"], attempts
    )


def sign(body: bytes, secret: str) -> str:
    """The Otari-Signature header value of a body."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def event(alert: BudgetAlert) -> dict[str, Any]:
    """The webhook payload of an alert row."""
    return {
        "type": EVENT_TYPE,
        "id": str(alert.id),
        "user_id": alert.user_id,
        "budget_id": alert.budget_id,
        "threshold": Decimal(alert.threshold),
        "spend": alert.spend,
        "max_budget": alert.max_budget,
        "period_start": alert.period_start,
        "period_end": alert.period_end,
        "timestamp": alert.created_at,
    }


def sample_event(now: datetime) -> dict[str, Any]:
    """What `otari alerts test` sends: an event of the real shape, marked as a test."""
    return {
        "type": EVENT_TYPE,
        "id": "test",
        "test": True,
        "user_id": "otari-test-user",
        "budget_id": "otari-test-budget",
        "threshold": Decimal("0.8"),
        "spend": Decimal("8"),
        "max_budget": Decimal("10"),
        "period_start": now - timedelta(days=1),
        "period_end": now + timedelta(days=29),
        "timestamp": now,
    }


def backoff(attempts: int, base: float) -> float:
    """Seconds before attempt `attempts` + 1: base, 2 base, 4 base, ... at most an hour."""
    return float(min(base * 2 ** max(attempts - 1, 0), 3600.0))


def claim_crossings(
    engine: Engine, user_ids: Iterable[str], defaults: tuple[Decimal, ...], now: datetime
) -> int:
    """Record every threshold the users' spend has reached in their current period.

    One row per (user, period start, threshold): an insert that does nothing when the row
    exists, so of all instances checking the same user exactly one creates it. Returns how
    many rows this call created (each is then due for delivery).
    """
    ids = sorted(set(user_ids))
    if not ids:
        return 0
    created = 0
    with engine.begin() as conn:
        rows = conn.execute(
            select(
                User.user_id,
                User.spend,
                User.budget_started_at,
                User.next_budget_reset_at,
                Budget.budget_id,
                Budget.max_budget,
                Budget.alert_thresholds,
            )
            .join(Budget, User.budget_id == Budget.budget_id)
            .where(User.user_id.in_(ids), User.deleted_at.is_(None))
        ).all()
        insert = db.upsert_insert(conn.dialect.name, BudgetAlert)
        for user_id, spend, started, resets, budget_id, max_budget, own in rows:
            if not max_budget or max_budget <= 0 or started is None:
                continue
            if resets is not None and now >= resets:
                continue  # the period is over; its spend resets on the next request
            thresholds = (
                defaults if own is None else tuple(threshold(v, "alert_thresholds") for v in own)
            )
            for fraction in thresholds:
                if spend < max_budget * fraction:
                    continue
                result = conn.execute(
                    insert.values(
                        user_id=user_id,
                        period_start=started,
                        threshold=threshold_text(fraction),
                        budget_id=budget_id,
                        period_end=resets,
                        spend=spend,
                        max_budget=max_budget,
                        created_at=now,
                        attempts=0,
                        next_attempt_at=now,
                    ).on_conflict_do_nothing(
                        index_elements=["user_id", "period_start", "threshold"]
                    )
                )
                created += result.rowcount or 0
    return created


def take_due(engine: Engine, now: datetime, lease: float, limit: int = 50) -> list[BudgetAlert]:
    """Claim the attempts due now: each row is leased to this caller for `lease` seconds
    (a conditional UPDATE, so two instances never take the same attempt). The returned rows
    are detached, with `attempts` counting the one just taken."""
    taken = []
    with Session(engine, expire_on_commit=False) as session:
        due = session.execute(
            select(BudgetAlert.id, BudgetAlert.attempts)
            .where(BudgetAlert.delivered_at.is_(None), BudgetAlert.next_attempt_at <= now)
            .order_by(BudgetAlert.id)
            .limit(limit)
        ).all()
        for alert_id, attempts in due:
            won = session.execute(
                update(BudgetAlert)
                .where(
                    BudgetAlert.id == alert_id,
                    BudgetAlert.attempts == attempts,
                    BudgetAlert.delivered_at.is_(None),
                )
                .values(attempts=attempts + 1, next_attempt_at=now + timedelta(seconds=lease))
                .execution_options(synchronize_session=False)
            ).rowcount  # type: ignore[attr-defined]
            session.commit()
            if won:
                alert = session.get(BudgetAlert, alert_id, populate_existing=True)
                if alert is not None:
                    taken.append(alert)
        session.expunge_all()
    return taken


def finish(
    engine: Engine, alert_id: int, now: datetime, error: str | None, retry_at: datetime | None
) -> None:
    """Record an attempt's outcome: delivered, or the error and when to retry (None: never)."""
    values: dict[str, Any] = (
        {"delivered_at": now, "next_attempt_at": None, "last_error": None}
        if error is None
        else {"next_attempt_at": retry_at, "last_error": error[:500]}
    )
    with engine.begin() as conn:
        conn.execute(update(BudgetAlert).where(BudgetAlert.id == alert_id).values(**values))


class Alerts:
    """The background sender of one instance."""

    def __init__(self, engine: Engine, settings: AlertSettings) -> None:
        self._engine = engine
        self.settings = settings
        self._touched: set[str] = set()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._next_wake = time.monotonic()

    def touch(self, user_ids: Iterable[str]) -> None:
        """Note users whose spend just changed; safe from any thread, never blocks."""
        ids = set(user_ids)
        if not ids or self._loop is None:
            return

        def note() -> None:
            self._touched |= ids
            self._wake.set()

        self._loop.call_soon_threadsafe(note)

    async def post(self, payload: dict[str, Any]) -> httpx.Response:
        """Sign and POST one event; raises httpx.HTTPError when it cannot be sent."""
        import httpx

        client = self._client or httpx.AsyncClient()
        body = dumps(payload).encode("utf-8")
        try:
            return await client.post(
                self.settings.webhook_url,
                content=body,
                timeout=self.settings.timeout,
                headers={
                    "content-type": "application/json",
                    SIGNATURE_HEADER: sign(body, self.settings.webhook_secret),
                },
            )
        finally:
            if client is not self._client:
                await client.aclose()

    def start(self) -> asyncio.Task[None]:
        """Start the sender in the running loop (touches before this are dropped)."""
        import httpx

        self._loop = asyncio.get_running_loop()
        self._client = httpx.AsyncClient()
        return asyncio.create_task(self.run())

    async def run(self) -> None:
        """Check touched users and deliver due alerts until cancelled."""
        assert self._client is not None, "use start()"
        try:
            while True:
                wait = max(min(_POLL_SECONDS, self._next_wake - time.monotonic()), 0.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                self._wake.clear()
                users, self._touched = self._touched, set()
                try:
                    if users:
                        await to_thread.run_sync(
                            claim_crossings, self._engine, users, self.settings.thresholds, utcnow()
                        )
                    await self._deliver_due()
                except Exception:  # a database outage must not end alerts; retried later
                    self._touched |= users
                    self._next_wake = time.monotonic() + self.settings.retry_base_sec
                    log.warning("budget alerts: database unavailable; will retry", exc_info=True)
        finally:
            await self._client.aclose()

    async def _deliver_due(self) -> None:
        self._next_wake = time.monotonic() + _POLL_SECONDS
        lease = self.settings.timeout + 5.0
        for alert in await to_thread.run_sync(take_due, self._engine, utcnow(), lease):
            await self._attempt(alert)

    async def _attempt(self, alert: BudgetAlert) -> None:
        import httpx

        error = None
        try:
            response = await self.post(event(alert))
            if not 200 <= response.status_code < 300:
                error = f"webhook answered {response.status_code}"
        except httpx.HTTPError as exc:
            error = f"webhook unreachable ({type(exc).__name__})"
        retry_at = None
        if error is not None:
            if alert.attempts < self.settings.max_attempts:
                delay = backoff(alert.attempts, self.settings.retry_base_sec)
                retry_at = utcnow() + timedelta(seconds=delay)
                self._next_wake = min(self._next_wake, time.monotonic() + delay)
                log.warning(
                    "budget alert %s for user %s: %s; retry %d in %.1fs",
                    alert.id,
                    alert.user_id,
                    error,
                    alert.attempts + 1,
                    delay,
                )
            else:
                log.error(
                    "budget alert %s for user %s: %s; giving up after %d attempts",
                    alert.id,
                    alert.user_id,
                    error,
                    alert.attempts,
                )
        await to_thread.run_sync(finish, self._engine, alert.id, utcnow(), error, retry_at)

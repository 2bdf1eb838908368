"""SQLAlchemy 2.0 tables ("tables", because in a gateway a "model" is an LLM)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Money keeps ten decimal places everywhere: a token priced at $0.0375 per million costs
# 0.0000000375, which this holds exactly.
MONEY_PLACES = 10
_MONEY_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)
_MONEY_SCALE = 10**MONEY_PLACES


def quantize(amount: Decimal) -> Decimal:
    """Round an amount to the stored precision (half-even, like the database would)."""
    return amount.quantize(_MONEY_QUANTUM)


class Money(TypeDecorator[Decimal]):
    """Exact money: NUMERIC on PostgreSQL, integer units of 1e-10 on SQLite.

    SQLite's NUMERIC affinity silently turns fractions into binary floats, so there we store
    scaled integers; SQL arithmetic and comparisons stay exact because every operand is
    scaled the same way.
    """

    impl = Numeric(30, MONEY_PLACES)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(30, MONEY_PLACES, asdecimal=True))

    def process_bind_param(self, value: Decimal | int | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        amount = quantize(Decimal(value))
        if dialect.name == "sqlite":
            return int(amount * _MONEY_SCALE)
        return amount

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(int(value)).scaleb(-MONEY_PLACES)
        return quantize(Decimal(value))


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        stored: datetime = value
        if stored.tzinfo is None:
            return stored.replace(tzinfo=UTC)
        return stored.astimezone(UTC)


def as_utc(moment: datetime) -> datetime:
    """The instant in UTC; a naive datetime is taken as UTC already (as the database does)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def utcnow() -> datetime:
    """The current instant, timezone-aware."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base for every table."""


class Budget(Base):
    """A spending limit, optionally renewed every budget_duration_sec."""

    __tablename__ = "budgets"

    budget_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255))
    max_budget: Mapped[Decimal | None] = mapped_column(Money())
    budget_duration_sec: Mapped[int | None] = mapped_column(Integer)
    # Fractions of max_budget that send a budget alert; None: the [alerts] thresholds.
    alert_thresholds: Mapped[list[str] | None] = mapped_column(JSON)
    # "calendar_day" | "calendar_week" | "calendar_month": periods on UTC calendar boundaries
    # instead of every budget_duration_sec (the two are exclusive; see budgets.py).
    reset_alignment: Mapped[str | None] = mapped_column(String(16))
    # Per-period ceilings on requests and on tokens (prompt + completion), each independent
    # of max_budget; null is unlimited.
    request_limit: Mapped[int | None] = mapped_column(BigInteger)
    token_limit: Mapped[int | None] = mapped_column(BigInteger)
    # Lower a request's output limit to what fits instead of refusing it; null follows the
    # global budget_clamp setting.
    budget_clamp: Mapped[bool | None] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class User(Base):
    """A person or service whose keys are metered together."""

    __tablename__ = "users"

    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    alias: Mapped[str | None] = mapped_column(String(255))
    # spend is settled cost in the current budget period; reserved is the worst-case cost of
    # requests in flight. The budget check is spend + reserved + request <= max_budget.
    spend: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0))
    reserved: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0))
    # The same for the budget's request and token ceilings: settled counts in the period, and
    # what requests in flight hold (one request each; their worst-case tokens).
    requests: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    reserved_requests: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    reserved_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    budget_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("budgets.budget_id", ondelete="RESTRICT"), index=True
    )
    budget_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    next_budget_reset_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    blocked: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    rpm_limit: Mapped[int | None] = mapped_column(Integer)
    tpm_limit: Mapped[int | None] = mapped_column(Integer)
    # None: any model; otherwise "provider:model" entries, "provider:*" and "prefix*" allowed.
    allowed_models: Mapped[list[str] | None] = mapped_column(JSON)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class APIKey(Base):
    """A virtual API key; only the SHA-256 of its secret is stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # After a rotation with a grace period: the old secret's hash, valid until the instant below.
    previous_key_hash: Mapped[str | None] = mapped_column(String(64), unique=True, index=True)
    previous_key_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    key_prefix: Mapped[str] = mapped_column(String(16))
    key_name: Mapped[str | None] = mapped_column(String(255))
    user_id: Mapped[str | None] = mapped_column(
        String(255), ForeignKey("users.user_id", ondelete="SET NULL"), index=True
    )
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Keys without a user are metered on the key itself.
    spend: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0))
    reserved: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0))
    rpm_limit: Mapped[int | None] = mapped_column(Integer)
    tpm_limit: Mapped[int | None] = mapped_column(Integer)
    allowed_models: Mapped[list[str] | None] = mapped_column(JSON)
    # Requests on such a key are metered but never reserved against or added to the budget.
    exclude_from_budget: Mapped[bool] = mapped_column(Boolean, default=False)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Pricing(Base):
    """A model's price from effective_at on; older rows are its history."""

    __tablename__ = "pricing"
    __table_args__ = (UniqueConstraint("model_key", "effective_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_key: Mapped[str] = mapped_column(String(255), index=True)
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime())
    input_price_per_million: Mapped[Decimal] = mapped_column(Money())
    output_price_per_million: Mapped[Decimal] = mapped_column(Money())
    # What the rates are per: "tokens", "requests" or "images" (see prices.Price.cost).
    unit: Mapped[str] = mapped_column(String(16), default="tokens")
    cache_read_price_per_million: Mapped[Decimal | None] = mapped_column(Money())
    cache_write_price_per_million: Mapped[Decimal | None] = mapped_column(Money())
    cache_write_1h_price_per_million: Mapped[Decimal | None] = mapped_column(Money())
    # Non-token billing rules for other endpoints (images, audio, per request).
    price_per_image: Mapped[Decimal | None] = mapped_column(Money())
    price_per_audio_second: Mapped[Decimal | None] = mapped_column(Money())
    price_per_million_characters: Mapped[Decimal | None] = mapped_column(Money())
    price_per_request: Mapped[Decimal | None] = mapped_column(Money())
    # Who set it: None for an operator, "genai-prices" for `otari pricing import`.
    source: Mapped[str | None] = mapped_column(String(32))
    # Long-context tiers: [{"min_input_tokens": int, "input_price_per_million": "3.5", ...}],
    # prices as decimal strings (exact); see pricing.Tier.
    tiers: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class UsageLog(Base):
    """One row per metered request: success, provider error or client disconnect."""

    __tablename__ = "usage_logs"
    # Each index serves a usage query: pages newest first, ordered by the (timestamp, id)
    # cursor, overall, per user and per key (see usage_rows.query and summaries).
    __table_args__ = (
        Index("ix_usage_logs_timestamp_id", "timestamp", "id"),
        Index("ix_usage_logs_user_timestamp_id", "user_id", "timestamp", "id"),
        Index("ix_usage_logs_key_timestamp_id", "api_key_id", "timestamp", "id"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(String(255))
    api_key_id: Mapped[str | None] = mapped_column(String(64))
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime())
    model: Mapped[str] = mapped_column(String(255))
    provider: Mapped[str | None] = mapped_column(String(64))
    endpoint: Mapped[str] = mapped_column(String(64))
    # 64-bit: a count is bounded by counts.MAX_TOKENS, totals and sums need the room.
    prompt_tokens: Mapped[int | None] = mapped_column(BigInteger)
    completion_tokens: Mapped[int | None] = mapped_column(BigInteger)
    total_tokens: Mapped[int | None] = mapped_column(BigInteger)
    cache_read_tokens: Mapped[int | None] = mapped_column(BigInteger)
    cache_write_tokens: Mapped[int | None] = mapped_column(BigInteger)
    cost: Mapped[Decimal | None] = mapped_column(Money())
    counts_toward_budget: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(32))
    error_message: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    request_id: Mapped[str | None] = mapped_column(String(64))
    # The HTTP status the client was answered (a stream's is 200 even if it failed later).
    status_code: Mapped[int | None] = mapped_column(Integer)
    # Where the cost's price came from: "pricing" (the table), "genai-prices" (the
    # [pricing] fallback), None when the request was not priced.
    price_source: Mapped[str | None] = mapped_column(String(32))
    # Set when the client asked for a route: its name and how many attempts it took (model
    # and provider then name the target that served).
    route: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int | None] = mapped_column(Integer)


class Reservation(Base):
    """Worst-case cost held against a budget while a request is in flight.

    Rows outlive a crash, so the next start (or any instance, after expires_at) can give the
    held amount back.
    """

    __tablename__ = "reservations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(String(255), index=True)
    api_key_id: Mapped[str | None] = mapped_column(String(64), index=True)
    amount: Mapped[Decimal] = mapped_column(Money())
    # Requests and worst-case tokens held against the budget's request and token limits.
    requests: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    instance_id: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class RateCounter(Base):
    """Requests and tokens used by one key or user in one minute, shared by all instances."""

    __tablename__ = "rate_counters"

    subject: Mapped[str] = mapped_column(String(300), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)


class BudgetAlert(Base):
    """One budget alert: a threshold a user's spend crossed in one budget period.

    The unique (user, period, threshold) row is what makes an alert go out once across all
    instances: only one insert wins. next_attempt_at is a lease: an instance takes a delivery
    attempt by moving it forward with a conditional UPDATE.
    """

    __tablename__ = "budget_alerts"
    __table_args__ = (UniqueConstraint("user_id", "period_start", "threshold"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(255))
    period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    # The fraction as plain decimal text ("0.8"), so equality is exact on both databases.
    threshold: Mapped[str] = mapped_column(String(32))
    budget_id: Mapped[str | None] = mapped_column(String(64))
    period_end: Mapped[datetime | None] = mapped_column(UTCDateTime())
    spend: Mapped[Decimal] = mapped_column(Money())
    max_budget: Mapped[Decimal] = mapped_column(Money())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)


class StoredResponse(Base):
    """A Responses API answer created through the gateway: which provider keeps it, for whom.

    GET/DELETE /v1/responses/{id} and its input_items and cancel go to that provider; an API
    key of another user gets 404. `translated` answers were made by the gateway from another
    wire format (Anthropic-type providers): nothing stores them, so they cannot be fetched.
    """

    __tablename__ = "stored_responses"

    response_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    provider: Mapped[str] = mapped_column(String(64))
    model_key: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str | None] = mapped_column(String(255), index=True)
    api_key_id: Mapped[str | None] = mapped_column(String(64), index=True)
    translated: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class UsageDaily(Base):
    """Usage rows rolled up per UTC day as they are pruned, so summaries outlive the rows.

    One row per (day, user, key, model, provider, status); a usage row is counted either
    here or in usage_logs, never both (they move in one transaction).
    """

    __tablename__ = "usage_daily"
    __table_args__ = (
        Index(
            "ix_usage_daily_group", "day", "user_id", "api_key_id", "model", "provider", "status"
        ),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    day: Mapped[date] = mapped_column(Date)
    user_id: Mapped[str | None] = mapped_column(String(255))
    api_key_id: Mapped[str | None] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(255))
    provider: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32))
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    total_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0))


class UsageTotal(Base):
    """Usage per UTC day and one dimension, added to as each usage row is written.

    See usage_totals: summaries over whole days read these instead of every row.
    """

    __tablename__ = "usage_totals"

    # The primary key is the upsert's conflict target and the index of summary scans.
    dimension: Mapped[str] = mapped_column(String(8), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    value: Mapped[str] = mapped_column(String(255), primary_key=True)
    status: Mapped[str] = mapped_column(String(32), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0))


class RouteDefinition(Base):
    """A route created through /v1/routes (config-file routes are not stored)."""

    __tablename__ = "routes"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    strategy: Mapped[str] = mapped_column(String(16))
    # [{"model": "provider:model", "weight": 1}, ...], in try order.
    targets: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # Every other setting (retries, backoff, timeout, cooldowns ...), see routing.model.
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

"""Wire models of the management API, named as in the OpenAPI contract.

Responses carry a superset of the contract's fields: the official otari client SDK reads a few
more (workspace_id, key_prefix, reserved, unit, ...), so we send them too.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected an integer, not a boolean")
    return value


# Money is exact to 1e-10 and, so that SQLite's 64-bit integers hold any sum of it, below
# a hundred million per amount.
from otari_server.accounting.prices import MAX_MONEY  # noqa: E402  (re-exported for the wire models)

NonNegativeMoney = Annotated[
    Decimal,
    Field(ge=0, le=MAX_MONEY, allow_inf_nan=False, max_digits=30, decimal_places=10),
    WithJsonSchema({"type": "number", "minimum": 0}),
]
# Money in responses: exact Decimals, written as JSON numbers (see jsonio), so documented so.
Money = Annotated[Decimal, WithJsonSchema({"type": "number"})]
# Counts the databases must hold (SQLite integers and datetimes overflow far above this).
# A bool is refused, never read as 1; integral numbers (60, 60.0, "60") are accepted.
Count = Annotated[int, BeforeValidator(_no_bool), Field(ge=1, le=2**31 - 1)]
Metadata = dict[str, Any]
ModelList = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=255)]], Field(max_length=1000)
]
# Per-period request and token ceilings (the otari SDK's bounds); 0 refuses everything.
Ceiling = Annotated[int, Field(ge=0, le=10**15, strict=True)]
# Budget alert thresholds: fractions of max_budget (1 is all of it), above 0, at most 100.
AlertThresholds = Annotated[
    list[Annotated[Decimal, Field(gt=0, le=100, allow_inf_nan=False, max_digits=12)]],
    Field(min_length=1, max_length=20),
]
Alignment = Literal["calendar_day", "calendar_week", "calendar_month"]
# Fields the otari SDK knows that this gateway does not implement: refused unless null, so a
# caller is never told a limit exists when none is enforced.
Unsupported = Annotated[None, Field(None, description="Not supported by this gateway; null")]

# Keys in a self-hosted gateway belong to one implicit workspace; the SDK requires its id.
DEFAULT_WORKSPACE_ID = uuid.UUID("00000000-0000-4000-8000-000000000000")


class _Request(BaseModel):
    # Unknown fields are ignored: newer clients (the otari SDK) send fields we do not use.
    model_config = ConfigDict(extra="ignore")


class CreateKeyRequest(_Request):
    """Body of POST /v1/keys."""

    key_name: str | None = Field(None, description="Optional name for the key", max_length=255)
    user_id: str | None = Field(None, description="Optional user ID to associate with this key")
    expires_at: datetime | None = Field(None, description="Optional expiration timestamp")
    metadata: Metadata = Field(default_factory=dict, description="Optional metadata")
    rpm_limit: Count | None = Field(None, description="Requests per minute (extension)")
    tpm_limit: Count | None = Field(None, description="Tokens per minute (extension)")
    allowed_models: ModelList | None = Field(
        None, description="null: any model; else provider:model entries ('provider:*' ok)"
    )
    exclude_from_budget: bool = Field(
        False, description="Meter this key's requests but never gate or charge the budget"
    )


class UpdateKeyRequest(_Request):
    """Body of PATCH /v1/keys/{key_id}; only the fields sent change."""

    key_name: str | None = Field(None, max_length=255)
    is_active: bool | None = None
    expires_at: datetime | None = None
    metadata: Metadata | None = None
    rpm_limit: Count | None = Field(None)
    tpm_limit: Count | None = Field(None)
    allowed_models: ModelList | None = None
    exclude_from_budget: bool | None = None


class KeyInfo(BaseModel):
    """A key as listed; never includes the secret."""

    id: str
    key_name: str | None
    user_id: str | None
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    is_active: bool
    metadata: Metadata
    key_prefix: str | None = None
    key_suffix: str | None = None
    spend: Money = Decimal(0)
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    workspace_id: uuid.UUID = DEFAULT_WORKSPACE_ID
    allowed_models: list[str] | None = None
    exclude_from_budget: bool = False
    capture_agent_telemetry: bool | None = None
    reject_user_mismatch: bool | None = None


class CreateKeyResponse(KeyInfo):
    """A new key, with its secret: the only time the secret is shown."""

    key: str


class RotateKeyRequest(_Request):
    """Body of POST /v1/keys/{key_id}/rotate (optional)."""

    grace_period_sec: int = Field(
        0,
        ge=0,
        le=30 * 86400,
        description="Seconds the old secret keeps working (default 0: it stops at once)",
    )


class RotateKeyResponse(CreateKeyResponse):
    """A rotated key: the same key with a new secret, shown this once."""

    previous_key_expires_at: datetime | None = Field(
        None, description="When the old secret stops working (null: it already has)"
    )


class CreateUserRequest(_Request):
    """Body of POST /v1/users."""

    user_id: str = Field(..., min_length=1, max_length=255, description="Unique user identifier")
    alias: str | None = Field(None, max_length=255, description="Optional admin-facing alias")
    budget_id: str | None = Field(None, description="Optional budget ID")
    blocked: bool = Field(False, description="Whether user is blocked")
    metadata: Metadata = Field(default_factory=dict, description="Optional metadata")
    rpm_limit: Count | None = Field(None)
    tpm_limit: Count | None = Field(None)
    allowed_models: ModelList | None = None


class UpdateUserRequest(_Request):
    """Body of PATCH /v1/users/{user_id}; only the fields sent change."""

    alias: str | None = Field(None, max_length=255)
    budget_id: str | None = None
    blocked: bool | None = None
    metadata: Metadata | None = None
    rpm_limit: Count | None = Field(None)
    tpm_limit: Count | None = Field(None)
    allowed_models: ModelList | None = None


class UserResponse(BaseModel):
    """A user with its current budget period."""

    user_id: str
    alias: str | None
    spend: Money
    budget_id: str | None
    budget_started_at: datetime | None
    next_budget_reset_at: datetime | None
    blocked: bool
    created_at: datetime
    updated_at: datetime
    metadata: Metadata
    reserved: Money = Decimal(0)
    deleted_at: datetime | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    allowed_models: list[str] | None = None
    current_requests: int = 0
    current_tokens: int = 0
    reserved_requests: int = 0
    reserved_tokens: int = 0


class CreateBudgetRequest(_Request):
    """Body of POST /v1/budgets."""

    max_budget: NonNegativeMoney | None = Field(None, description="Maximum spending limit")
    budget_duration_sec: Count | None = Field(
        None, description="Budget duration in seconds (e.g., 86400 for daily)"
    )
    budget_id: str | None = Field(
        None, min_length=1, max_length=64, description="Optional id; generated when omitted"
    )
    name: str | None = Field(None, max_length=255)
    request_limit: Ceiling | None = Field(
        None, description="Maximum requests per period, independent of max_budget; null: none"
    )
    token_limit: Ceiling | None = Field(
        None, description="Maximum tokens (prompt + completion) per period; null: none"
    )
    reset_alignment: Alignment | None = Field(
        None,
        description="Reset on a UTC calendar boundary (day; ISO week from Monday; month "
        "from the 1st) instead of every budget_duration_sec; exclusive with it",
    )
    budget_clamp: bool | None = Field(
        None,
        description="Lower a request's output limit to what fits instead of refusing it "
        "with 402; null follows the gateway's budget_clamp setting",
    )
    alert_thresholds: AlertThresholds | None = Field(
        None,
        description="Fractions of max_budget whose crossing sends a budget alert "
        "(e.g. [0.5, 0.9, 1]); null uses the gateway's [alerts] thresholds",
    )


class UpdateBudgetRequest(_Request):
    """Body of PATCH /v1/budgets/{budget_id}; only the fields sent change."""

    max_budget: NonNegativeMoney | None = None
    budget_duration_sec: Count | None = None
    name: str | None = Field(None, max_length=255)
    request_limit: Ceiling | None = None
    token_limit: Ceiling | None = None
    reset_alignment: Alignment | None = None
    budget_clamp: bool | None = None
    alert_thresholds: AlertThresholds | None = None


class BudgetResponse(BaseModel):
    """A budget."""

    budget_id: str
    max_budget: Money | None
    budget_duration_sec: int | None
    created_at: datetime
    updated_at: datetime
    user_count: int = 0
    total_spend: Money = Decimal(0)
    total_reserved: Money = Decimal(0)
    name: str | None = None
    organization_id: uuid.UUID | None = None
    request_limit: int | None = None
    token_limit: int | None = None
    reset_alignment: str | None = None
    budget_clamp: bool | None = None
    alert_thresholds: list[Money] | None = None


class PricingTier(_Request):
    """A long-context tier: from a prompt size on, the whole request is priced at these
    rates (those omitted are the entry's own). Give the threshold as `min_input_tokens`
    (the otari SDK's form: this many prompt tokens or more) or `above_input_tokens` (more
    than this many); exactly one of them."""

    min_input_tokens: Count | None = None
    above_input_tokens: Annotated[int, Field(ge=0, le=2**31 - 2)] | None = None
    input_price_per_million: NonNegativeMoney | None = None
    output_price_per_million: NonNegativeMoney | None = None
    cache_read_price_per_million: NonNegativeMoney | None = None
    cache_write_price_per_million: NonNegativeMoney | None = None
    cache_write_1h_price_per_million: NonNegativeMoney | None = None

    @model_validator(mode="after")
    def _one_threshold(self) -> PricingTier:
        if (self.min_input_tokens is None) == (self.above_input_tokens is None):
            raise ValueError("a tier needs exactly one of min_input_tokens and above_input_tokens")
        return self

    @property
    def threshold(self) -> int:
        """The prompt tokens from which the tier applies (min_input_tokens form)."""
        if self.min_input_tokens is not None:
            return self.min_input_tokens
        assert self.above_input_tokens is not None
        return self.above_input_tokens + 1


class SetPricingRequest(_Request):
    """Body of POST /v1/pricing."""

    model_key: str = Field(
        ..., min_length=3, max_length=255, description="Model identifier in format 'provider:model'"
    )
    input_price_per_million: NonNegativeMoney = Field(..., description="Price per 1M input tokens")
    output_price_per_million: NonNegativeMoney = Field(
        ..., description="Price per 1M output tokens"
    )
    effective_at: datetime | None = Field(
        None, description="ISO 8601 datetime from which this price applies. Defaults to now."
    )
    unit: Literal["tokens", "requests", "images"] = Field(
        "tokens", description="What input_price_per_million is per: tokens, requests, images"
    )
    cache_read_price_per_million: NonNegativeMoney | None = None
    cache_write_price_per_million: NonNegativeMoney | None = None
    cache_write_1h_price_per_million: NonNegativeMoney | None = None
    price_per_image: NonNegativeMoney | None = None
    price_per_audio_second: NonNegativeMoney | None = None
    price_per_million_characters: NonNegativeMoney | None = None
    price_per_request: NonNegativeMoney | None = None
    pricing_tiers: Annotated[list[PricingTier], Field(max_length=100)] | None = Field(
        None, description="Long-context tiers (the otari SDK's name); same as tiers"
    )
    tiers: Annotated[list[PricingTier], Field(max_length=100)] | None = Field(
        None, description="Long-context tiers; send this or pricing_tiers, not both"
    )


class PricingResponse(BaseModel):
    """A price entry."""

    model_key: str
    effective_at: datetime
    input_price_per_million: Money
    output_price_per_million: Money
    created_at: datetime
    updated_at: datetime
    price_per_image: Money | None = None
    price_per_audio_second: Money | None = None
    price_per_million_characters: Money | None = None
    price_per_request: Money | None = None
    unit: str = "tokens"
    origin: str | None = "api"
    # The same tiers in both forms: the otari SDK's (min_input_tokens) and above_input_tokens.
    pricing_tiers: list[dict[str, Any]] = Field(default_factory=list)
    tiers: list[dict[str, Any]] = Field(default_factory=list)
    cache_read_price_per_million: Money | None = None
    cache_write_price_per_million: Money | None = None
    cache_write_1h_price_per_million: Money | None = None


class ImportPricingRequest(_Request):
    """Body of POST /v1/pricing/import."""

    providers: list[str] | None = Field(
        None, description="otari provider names to import (default: every mapped provider)"
    )
    model: str | None = Field(
        None, max_length=255, description="Glob on the model id or provider:model key"
    )
    dry_run: bool = Field(False, description="Only report what would be written")
    overwrite: bool = Field(
        False, description="Replace operator-set prices that differ (default: keep them)"
    )


class PriceImportChange(BaseModel):
    """One model in an import: the published price and what the import does with it."""

    model_key: str
    action: Literal["add", "change", "unchanged", "kept"]
    input_price_per_million: Money
    output_price_per_million: Money
    cache_read_price_per_million: Money | None = None
    cache_write_price_per_million: Money | None = None
    pricing_tiers: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Long-context tiers: from min_input_tokens on, "
        "the whole request at these rates (those omitted are the base rates)",
    )
    current: PricingResponse | None = None


class ImportPricingResponse(BaseModel):
    """What POST /v1/pricing/import wrote (or would write, on a dry run)."""

    source: str = "genai-prices"
    source_version: str
    dry_run: bool
    effective_at: datetime
    written: int
    changes: list[PriceImportChange]


class UsageLogResponse(BaseModel):
    """One usage row."""

    id: str
    user_id: str | None
    api_key_id: str | None
    timestamp: datetime
    model: str
    provider: str | None
    endpoint: str
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    cost: Money | None
    status: str
    error_message: str | None
    latency_ms: int | None = None
    request_id: str | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    counts_toward_budget: bool = True
    price_source: str | None = Field(
        None,
        description="Where the cost's price came from: 'pricing' (a pricing entry), "
        "'genai-prices' (the [pricing] fallback); null when the request was not priced",
    )
    # Set when the client named a route: model and provider are the target that served (or
    # failed last); attempts counts every try, failed ones included.
    route: str | None = None
    attempts: int | None = None


class UsageEntry(UsageLogResponse):
    """One usage row as listed by GET /v1/usage."""

    source: str = "gateway"
    bulk_editable: bool = False
    status_code: int | None = None
    cache_write_1h_tokens: int | None = None


class ModelObject(BaseModel):
    """A model, OpenAI style."""

    id: str
    object: str = "model"
    created: int
    owned_by: str


class ModelListResponse(BaseModel):
    """The models list, OpenAI style."""

    object: str = "list"
    data: list[ModelObject]


class UsageTotals(BaseModel):
    """Sums over usage rows: counts, tokens and exact cost (a plain decimal number)."""

    requests: int
    errors: int = Field(description="Requests whose status is not 'success'")
    prompt_tokens: int
    completion_tokens: int
    cost: Money


class UsageGroup(UsageTotals):
    """One group of a summary; only the fields named by group_by are present."""

    user_id: str | None = None
    api_key_id: str | None = None
    model: str | None = None
    provider: str | None = None
    day: str | None = Field(None, description="UTC day, YYYY-MM-DD")
    hour: str | None = Field(None, description="UTC hour, ISO 8601 (2026-01-10T13:00:00+00:00)")


class UsageSummaryResponse(BaseModel):
    """GET /v1/usage/summary: groups sorted by their values, and the total of all."""

    group_by: list[str]
    groups: list[UsageGroup]
    total: UsageTotals


class PruneUsageRequest(BaseModel):
    """POST /v1/usage/prune: roll up and delete usage rows before a day."""

    model_config = ConfigDict(extra="forbid")

    before: datetime = Field(
        description="Rows before this instant, rounded down to "
        "midnight UTC, are rolled up per day and deleted"
    )
    dry_run: bool = Field(False, description="Only count what would be pruned")


class PruneUsageResponse(BaseModel):
    """What a prune moved (or, with dry_run, would move) into the daily roll-ups."""

    before: datetime
    rows: int
    cost: Money
    dry_run: bool

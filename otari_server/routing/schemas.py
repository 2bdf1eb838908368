"""Wire models of /v1/routes (kept with routing: the management API's own models)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from otari_server.routing.model import (
    DEFAULT_BACKOFF,
    DEFAULT_COOLDOWN_FAILURES,
    DEFAULT_COOLDOWN_SECONDS,
    DEFAULT_COOLDOWN_WINDOW,
    DEFAULT_RETRIES,
    DEFAULT_RETRY_AFTER_CAP,
)

Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class RouteTarget(BaseModel):
    """One target: a `provider:model` and its load-balancing weight."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="provider:model")
    weight: int = Field(1, description="Relative share under the loadbalance strategy")


class RouteSpec(BaseModel):
    """A route's definition (the body of PUT /v1/routes/{name}); every value is checked by
    the same rules as a [routes.NAME] config table."""

    model_config = ConfigDict(extra="forbid")

    strategy: Literal["fallback", "loadbalance"] = "fallback"
    targets: list[str | RouteTarget] = Field(
        description="provider:model strings or {model, weight}, in try order"
    )
    retries: int = Field(DEFAULT_RETRIES, description="Retries on the same target")
    backoff: Seconds = Field(DEFAULT_BACKOFF, description="First retry's longest wait (s)")
    retry_after_cap: Seconds = Field(
        DEFAULT_RETRY_AFTER_CAP, description="Longest single wait, Retry-After included (s)"
    )
    timeout: Seconds | None = Field(
        None,
        description="Deadline across every attempt (s); default: the gateway's request_timeout",
    )
    context_window_fallbacks: bool = False
    cooldown_failures: int = Field(
        DEFAULT_COOLDOWN_FAILURES,
        description="Failures within cooldown_window that start a cooldown (0: never)",
    )
    cooldown_window: Seconds = DEFAULT_COOLDOWN_WINDOW
    cooldown_seconds: Seconds = DEFAULT_COOLDOWN_SECONDS

    def table(self) -> dict[str, Any]:
        """The definition as a config-style table, for routing.model.parse_route."""
        data = self.model_dump(exclude={"name"})
        data["targets"] = [t if isinstance(t, str) else t.model_dump() for t in self.targets]
        return data


class CreateRouteRequest(RouteSpec):
    """The body of POST /v1/routes."""

    name: str = Field(description="Client-facing model name: letters, digits, '.', '_', '-'")


class RouteResponse(BaseModel):
    """A route as the API shows it; `read_only` routes come from the config file."""

    name: str
    strategy: str
    targets: list[RouteTarget]
    retries: int
    backoff: float
    retry_after_cap: float
    timeout: float | None
    context_window_fallbacks: bool
    cooldown_failures: int
    cooldown_window: float
    cooldown_seconds: float
    source: Literal["config", "api"]
    read_only: bool
    created_at: datetime | None = None
    updated_at: datetime | None = None


class ExplainedPrice(BaseModel):
    """A target's price in effect now, per million (tokens unless `unit` says otherwise)."""

    input_price_per_million: Annotated[Decimal, WithJsonSchema({"type": "number"})]
    output_price_per_million: Annotated[Decimal, WithJsonSchema({"type": "number"})]
    unit: str


class ExplainedTarget(BaseModel):
    """One target in an explanation."""

    order: int | None = Field(description="1-based try position; null when not tried")
    model: str
    weight: int
    share: float | None = Field(description="loadbalance: probability of being tried first")
    price: ExplainedPrice | None
    cooldown_remaining: float | None = Field(description="Seconds of cooldown left")
    status: Literal["eligible", "cooling", "skipped"]
    reason: str | None


class RouteExplanation(BaseModel):
    """How a route would serve a request right now (nothing is sent)."""

    route: str
    strategy: str
    source: Literal["config", "api"]
    targets: list[ExplainedTarget]

"""A route and its targets: parsed and validated once, from a config table or an API body."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

# Route names never contain ':' or '/', so no route can shadow a `provider:model` (or
# `provider/model`) spelling: the hot path tells them apart with one dict lookup.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
STRATEGIES = ("fallback", "loadbalance")
MAX_TARGETS = 16
Strategy = Literal["fallback", "loadbalance"]
Source = Literal["config", "api"]

# Defaults, documented in docs/routes.md.
DEFAULT_RETRIES = 0
DEFAULT_BACKOFF = 0.5  # seconds: the first retry waits up to this, then doubles
DEFAULT_RETRY_AFTER_CAP = 30.0  # seconds: the longest single wait (Retry-After included)
DEFAULT_COOLDOWN_FAILURES = 3  # failures ...
DEFAULT_COOLDOWN_WINDOW = 60.0  # ... within this many seconds ...
DEFAULT_COOLDOWN_SECONDS = 30.0  # ... skip the target for this long
MAX_RETRIES = 10
MAX_SECONDS = 86400.0


class RouteError(ValueError):
    """A route definition that cannot be used; the message names the field."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Target:
    """One `provider:model` a route may send to, with its load-balancing weight."""

    model: str
    weight: int = 1

    @property
    def provider(self) -> str:
        """The provider name (the part before ':')."""
        return self.model.partition(":")[0]


@dataclass(frozen=True, slots=True)
class Route:
    """A client-facing model name and how its targets are tried.

    Times are in seconds. `timeout` is the deadline across every attempt (None: the
    gateway's request_timeout). `retries` is per target, before moving to the next.
    """

    name: str
    strategy: Strategy
    targets: tuple[Target, ...]
    retries: int = DEFAULT_RETRIES
    backoff: float = DEFAULT_BACKOFF
    retry_after_cap: float = DEFAULT_RETRY_AFTER_CAP
    timeout: float | None = None
    context_window_fallbacks: bool = False
    cooldown_failures: int = DEFAULT_COOLDOWN_FAILURES
    cooldown_window: float = DEFAULT_COOLDOWN_WINDOW
    cooldown_seconds: float = DEFAULT_COOLDOWN_SECONDS
    source: Source = "api"
    # Shares for a weighted pick, computed once (the hot path only reads them).
    total_weight: int = field(default=0, compare=False)

    def options(self) -> dict[str, Any]:
        """Every setting but name, strategy, targets and source (the stored `options`)."""
        return {
            "retries": self.retries,
            "backoff": self.backoff,
            "retry_after_cap": self.retry_after_cap,
            "timeout": self.timeout,
            "context_window_fallbacks": self.context_window_fallbacks,
            "cooldown_failures": self.cooldown_failures,
            "cooldown_window": self.cooldown_window,
            "cooldown_seconds": self.cooldown_seconds,
        }

    def public(self) -> dict[str, Any]:
        """The route as the API shows it."""
        return {
            "name": self.name,
            "strategy": self.strategy,
            "targets": [{"model": t.model, "weight": t.weight} for t in self.targets],
            **self.options(),
            "source": self.source,
            "read_only": self.source == "config",
        }


OPTION_NAMES = frozenset(Route("x", "fallback", ()).options())
_KEYS = OPTION_NAMES | {"strategy", "targets"}


def check_name(name: object) -> str:
    """A valid route name, else RouteError: letters, digits, '.', '_', '-' (no ':' or '/')."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise RouteError(
            "name",
            "a route name is 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (no ':' or '/': those spell "
            "provider:model)",
        )
    return name


def parse_route(name: str, table: Mapping[str, Any], source: Source = "api") -> Route:
    """A Route from a `[routes.NAME]` table or an API body; RouteError names what is wrong."""
    check_name(name)
    if not isinstance(table, Mapping):
        raise RouteError("route", "expected a table")
    for key in table:
        if key not in _KEYS:
            raise RouteError(str(key), f"unknown setting; use {', '.join(sorted(_KEYS))}")
    strategy = table.get("strategy", "fallback")
    if strategy not in STRATEGIES:
        raise RouteError("strategy", f"must be one of {', '.join(STRATEGIES)}")
    targets = _targets(table.get("targets"))
    timeout = table.get("timeout")
    route = Route(
        name=name,
        strategy=strategy,
        targets=targets,
        retries=_int(table, "retries", DEFAULT_RETRIES, 0, MAX_RETRIES),
        backoff=_seconds(table, "backoff", DEFAULT_BACKOFF, zero=True),
        retry_after_cap=_seconds(table, "retry_after_cap", DEFAULT_RETRY_AFTER_CAP, zero=True),
        timeout=None if timeout is None else _seconds(table, "timeout", 0.0),
        context_window_fallbacks=_bool(table, "context_window_fallbacks"),
        cooldown_failures=_int(table, "cooldown_failures", DEFAULT_COOLDOWN_FAILURES, 0, 1000),
        cooldown_window=_seconds(table, "cooldown_window", DEFAULT_COOLDOWN_WINDOW),
        cooldown_seconds=_seconds(table, "cooldown_seconds", DEFAULT_COOLDOWN_SECONDS),
        source=source,
        total_weight=sum(t.weight for t in targets),
    )
    return route


def _targets(value: object) -> tuple[Target, ...]:
    if not isinstance(value, list) or not value:
        raise RouteError(
            "targets",
            "expected a non-empty list of 'provider:model' or "
            "{model = 'provider:model', weight = N}",
        )
    if len(value) > MAX_TARGETS:
        raise RouteError("targets", f"at most {MAX_TARGETS} targets")
    targets: list[Target] = []
    for index, item in enumerate(value):
        where = f"targets[{index}]"
        model: object
        weight: object
        if isinstance(item, str):
            model, weight = item, 1
        elif isinstance(item, Mapping):
            unknown = set(item) - {"model", "weight"}
            if unknown:
                raise RouteError(where, f"unknown key '{sorted(unknown)[0]}'; use model, weight")
            model, weight = item.get("model"), item.get("weight", 1)
        else:
            raise RouteError(where, "expected 'provider:model' or a table with model, weight")
        if not isinstance(model, str) or len(model) > 255 or not _is_model_key(model):
            raise RouteError(where, "model must be spelled 'provider:model'")
        if not isinstance(weight, int) or isinstance(weight, bool) or not 1 <= weight <= 1000:
            raise RouteError(f"{where}.weight", "must be an integer from 1 to 1000")
        if any(t.model == model for t in targets):
            raise RouteError(where, f"'{model}' is listed twice")
        targets.append(Target(model, weight))
    return tuple(targets)


def _is_model_key(model: str) -> bool:
    provider, colon, upstream = model.partition(":")
    return bool(colon and provider and upstream.strip()) and model.isprintable()


def _int(table: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise RouteError(key, f"must be an integer from {low} to {high}")
    return value


def _seconds(table: Mapping[str, Any], key: str, default: float, *, zero: bool = False) -> float:
    value = table.get(key, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero)
        or value > MAX_SECONDS
    ):
        floor = "0 or more" if zero else "more than 0"
        raise RouteError(key, f"must be a number of seconds, {floor}, at most {MAX_SECONDS:g}")
    return float(value)


def _bool(table: Mapping[str, Any], key: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise RouteError(key, "must be true or false")
    return value


def parse_config(tables: Mapping[str, Any]) -> dict[str, Route]:
    """Every `[routes.NAME]` table; RouteError's message is prefixed `routes.NAME.`."""
    routes = {}
    for name, table in tables.items():
        try:
            routes[name] = parse_route(name, table, "config")
        except RouteError as exc:
            raise RouteError(f"routes.{name}.{exc.field}", exc.problem) from None
    return routes

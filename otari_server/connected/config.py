"""The `[platform]` table: which platform to serve, and how patiently to talk to it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from otari_server.settings import ConfigError, Settings


@dataclass(frozen=True, slots=True)
class PlatformConfig:
    """Connected-mode settings, validated once at start-up. Durations are in seconds."""

    token: str
    base_url: str
    # POST /gateway/provider-keys/resolve, once per request before any provider call.
    resolve_timeout: float = 5.0
    # POST /gateway/usage, after every attempt: each try's timeout, how many tries in all,
    # the first pause between tries (doubling after each), and how long shutdown waits.
    usage_timeout: float = 5.0
    usage_max_tries: int = 3
    usage_backoff: float = 0.25
    usage_drain_timeout: float = 10.0
    # Streams: an attempt that sends no chunk within this many seconds is abandoned for the next.
    first_chunk_timeout: float = 60.0
    # Readiness: GET base_url + health_path; any answer below 500 counts as reachable.
    health_path: str = ""
    health_timeout: float = 2.0
    health_cache: float = 5.0

    def url(self, path: str) -> str:
        """Absolute platform URL for a path such as `/gateway/usage`."""
        return self.base_url + path


_SECONDS = ("resolve_timeout", "usage_timeout", "usage_backoff", "usage_drain_timeout",
            "first_chunk_timeout", "health_timeout")
_KEYS = tuple(f.name for f in fields(PlatformConfig))


def platform_config(settings: Settings) -> PlatformConfig:
    """The validated `[platform]` table; ConfigError naming the key when it is not usable."""
    if settings.providers:
        raise ConfigError("providers: not allowed in connected mode (platform.token is set): "
                          "the platform supplies provider keys; remove the [providers] tables")
    table: Mapping[str, Any] = settings.platform
    for key in table:
        if key not in _KEYS:
            raise ConfigError(f"platform.{key}: unknown setting; use {', '.join(_KEYS)}")
    values: dict[str, Any] = {"token": _text(table, "token"),
                              "base_url": _base_url(table.get("base_url"))}
    for key in _SECONDS:
        if key in table:
            values[key] = _seconds(table[key], key, positive=True)
    if "health_cache" in table:
        values["health_cache"] = _seconds(table["health_cache"], "health_cache", positive=False)
    if "usage_max_tries" in table:
        values["usage_max_tries"] = _tries(table["usage_max_tries"])
    if "health_path" in table:
        path = _text(table, "health_path", required=False)
        if path and not path.startswith("/"):
            raise ConfigError("platform.health_path: must start with '/'")
        values["health_path"] = path
    return PlatformConfig(**values)


def _text(table: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    value = table.get(key, "")
    if not isinstance(value, str):
        raise ConfigError(f"platform.{key}: expected a string, got {value!r}")
    if required and not value.strip():
        raise ConfigError(f"platform.{key}: required in connected mode")
    return value.strip()


def _base_url(value: object) -> str:
    if value is None or value == "":
        raise ConfigError("platform.base_url: required in connected mode "
                          "(set it in [platform] or OTARI_PLATFORM_BASE_URL)")
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise ConfigError(f"platform.base_url: must be an http:// or https:// URL, got {value!r}")
    return value.rstrip("/")


def _seconds(value: object, key: str, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"platform.{key}: expected a number of seconds, got {value!r}")
    if value < 0 or (positive and value == 0):
        kind = "positive" if positive else "zero or more"
        raise ConfigError(f"platform.{key}: must be {kind}, got {value!r}")
    return float(value)


def _tries(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"platform.usage_max_tries: expected an integer of 1 or more, "
                          f"got {value!r}")
    return value

"""The `[platform]` table: which platform to serve, and how patiently to talk to it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from otari_server.settings import ConfigError, Settings, state_dir
from otari_server.tools.urls import Network, policy_settings


@dataclass(frozen=True, slots=True)
class PlatformConfig:
    """Connected-mode settings, validated once at start-up. Durations are in seconds."""

    token: str
    base_url: str
    # POST /gateway/provider-keys/resolve, once per request before any provider call.
    resolve_timeout: float = 5.0
    # POST /gateway/usage, one report per attempt, queued on disk (docs/deployment.md): each
    # try's timeout; the first pause between tries (doubling, with jitter, up to
    # usage_backoff_max); tries in all (0: no limit) and the age at which a report is given
    # up; the queue file and its size bound (when full, new chat requests get 503);
    # deliveries at once; and how long shutdown keeps delivering.
    usage_timeout: float = 5.0
    usage_backoff: float = 0.25
    usage_backoff_max: float = 60.0
    usage_max_tries: int = 0
    usage_max_age: float = 7 * 24 * 3600.0
    usage_queue: str = ""
    usage_queue_max_bytes: int = 64 * 1024 * 1024
    usage_concurrency: int = 4
    usage_drain_timeout: float = 10.0
    # A resolve answer asking for more attempts than this is cut to its first max_attempts.
    max_attempts: int = 5
    # Provider addresses the platform may send, besides public ones (as [tools] has them).
    allow_loopback: bool = False
    allow_private_networks: bool = False
    private_networks: tuple[Network, ...] = ()
    # Streams: an attempt that sends no chunk within this many seconds is abandoned for the next.
    first_chunk_timeout: float = 60.0
    # Readiness: GET base_url + health_path; any answer below 500 counts as reachable.
    health_path: str = ""
    health_timeout: float = 2.0
    health_cache: float = 5.0

    def url(self, path: str) -> str:
        """Absolute platform URL for a path such as `/gateway/usage`."""
        return self.base_url + path

    @property
    def queue_path(self) -> Path:
        """The usage queue file: `usage_queue`, else usage-reports.sqlite3 in the state dir."""
        return (
            Path(self.usage_queue).expanduser()
            if self.usage_queue
            else (state_dir() / "usage-reports.sqlite3")
        )


# Query parameters that carry a credential (`?api_key=`, `?token=`, `?password=`).
_SECRET_PARAMETER = re.compile("pass|secret|token|key|auth|sig|cred", re.IGNORECASE)


def redacted(url: str) -> str:
    """`url` without any user:password@ part, and with the values of query parameters that
    carry a credential hidden, for /health (no credentials needed) and logs."""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        parts = parts._replace(netloc="[redacted]@" + parts.netloc.rpartition("@")[2])
    if parts.query and _SECRET_PARAMETER.search(parts.query):
        query = [
            (name, "[redacted]" if _SECRET_PARAMETER.search(name) else value)
            for name, value in parse_qsl(parts.query, keep_blank_values=True)
        ]
        parts = parts._replace(query=urlencode(query, safe="[]"))
    return urlunsplit(parts)


_SECONDS = (
    "resolve_timeout",
    "usage_timeout",
    "usage_backoff",
    "usage_backoff_max",
    "usage_max_age",
    "usage_drain_timeout",
    "first_chunk_timeout",
    "health_timeout",
)
_COUNTS = {
    "usage_max_tries": 0,
    "usage_queue_max_bytes": 1,
    "usage_concurrency": 1,
    "max_attempts": 1,
}  # each with its least allowed value
_KEYS = tuple(f.name for f in fields(PlatformConfig) if f.name != "private_networks")


def platform_config(settings: Settings) -> PlatformConfig:
    """The validated `[platform]` table; ConfigError naming the key when it is not usable."""
    if settings.providers:
        raise ConfigError(
            "providers: not allowed in connected mode (platform.token is set): "
            "the platform supplies provider keys; remove the [providers] tables"
        )
    table: Mapping[str, Any] = settings.platform
    for key in table:
        if key not in _KEYS:
            raise ConfigError(f"platform.{key}: unknown setting; use {', '.join(_KEYS)}")
    values: dict[str, Any] = {
        "token": _text(table, "token"),
        "base_url": _base_url(table.get("base_url")),
    }
    for key in _SECONDS:
        if key in table:
            values[key] = _seconds(table[key], key, positive=True)
    if "health_cache" in table:
        values["health_cache"] = _seconds(table["health_cache"], "health_cache", positive=False)
    for key, least in _COUNTS.items():
        if key in table:
            values[key] = _count(table[key], key, least)
    if "usage_queue" in table:
        values["usage_queue"] = _text(table, "usage_queue", required=False)
    values.update(policy_settings(table, "platform"))
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
        raise ConfigError(
            "platform.base_url: required in connected mode "
            "(set it in [platform] or OTARI_PLATFORM_BASE_URL)"
        )
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


def _count(value: object, key: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"platform.{key}: expected an integer of {least} or more, got {value!r}")
    return value

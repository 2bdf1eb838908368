"""The `[tools]` table: backends for gateway-run tools, URL safety, per-call limits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from otari_server.settings import ConfigError, Settings
from otari_server.tools.urls import Network, policy_settings


@dataclass(frozen=True, slots=True)
class ToolsConfig:
    """Gateway-run tool settings, validated once. Durations in seconds, sizes in bytes."""

    # A SearXNG-compatible search backend: GET {web_search_url}/search?format=json&q=...
    web_search_url: str | None = None
    # A code sandbox speaking the protocol in docs/tools.md; its bearer token, if it wants one.
    sandbox_url: str | None = None
    sandbox_token: str | None = None
    # Which addresses a request's MCP server URLs may resolve to, besides public ones.
    # Loopback is off by default: a client's URL must not reach services on the gateway host.
    allow_loopback: bool = False
    allow_private_networks: bool = False
    private_networks: tuple[Network, ...] = ()
    # Every tool call (and every MCP connection) gets this long, and this much result text.
    call_timeout: float = 30.0
    max_result_bytes: int = 65536
    # The lead-in of the system message listing MCP servers' purpose hints.
    header: str | None = None

    @property
    def max_response_bytes(self) -> int:
        """The most a backend may send for one call before it counts as a failure."""
        return max(16 * self.max_result_bytes, 1 << 20)


_KEYS = (
    "web_search_url",
    "sandbox_url",
    "sandbox_token",
    "allow_loopback",
    "allow_private_networks",
    "call_timeout",
    "max_result_bytes",
    "header",
)


def tools_config(settings: Settings) -> ToolsConfig:
    """The validated `[tools]` table; ConfigError naming the key when it is not usable."""
    table: Mapping[str, Any] = settings.tools
    for key in table:
        if key not in _KEYS:
            raise ConfigError(f"tools.{key}: unknown setting; use {', '.join(_KEYS)}")
    values: dict[str, Any] = {}
    for key in ("web_search_url", "sandbox_url"):
        if table.get(key) not in (None, ""):
            values[key] = _base_url(table[key], key)
    for key in ("sandbox_token", "header"):
        if table.get(key) not in (None, ""):
            values[key] = _text(table[key], key)
    values.update(policy_settings(table, "tools", lenient=True))
    if "call_timeout" in table:
        values["call_timeout"] = _positive(table["call_timeout"], "call_timeout", float)
    if "max_result_bytes" in table:
        values["max_result_bytes"] = _positive(table["max_result_bytes"], "max_result_bytes", int)
    return ToolsConfig(**values)


def _base_url(value: Any, key: str) -> str:
    text = _text(value, key)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"tools.{key}: expected an http(s) URL, got {value!r}")
    return text.rstrip("/")


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"tools.{key}: expected a string, got {value!r}")
    return value


def _positive(value: Any, key: str, kind: type[int] | type[float]) -> Any:
    number: float = 0
    whole = kind is float or isinstance(value, int | str)
    if whole and not isinstance(value, bool):
        try:
            number = kind(value)
        except (TypeError, ValueError):
            number = 0
    if number <= 0:
        noun = "an integer" if kind is int else "a number"
        raise ConfigError(f"tools.{key}: expected {noun} above zero, got {value!r}")
    return number

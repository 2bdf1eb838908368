"""Settings: defaults < config.toml < OTARI_* environment < command-line flags, resolved once."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import platformdirs

APP_NAME = "otari"
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(Exception):
    """A configuration value is invalid; the message is one line naming the key."""


def config_dir() -> Path:
    """Directory holding config.toml and CLI contexts."""
    return platformdirs.user_config_path(APP_NAME)


def state_dir() -> Path:
    """Directory holding the generated master key and the daemon's pidfile."""
    return platformdirs.user_state_path(APP_NAME)


def data_dir() -> Path:
    """Directory holding the embedded SQLite database."""
    return platformdirs.user_data_path(APP_NAME)


def default_config_path() -> Path:
    """Where `otari init` writes and the daemon looks when no --config is given."""
    return config_dir() / "config.toml"


def master_key_path() -> Path:
    """File the daemon writes a generated master key to (mode 0600)."""
    return state_dir() / "master_key"


@dataclass(frozen=True)
class Settings:
    """Everything the daemon needs, resolved once at start-up and passed explicitly."""

    host: str = "127.0.0.1"
    port: int = 8000
    # Proxies whose X-Forwarded-For / -Proto are believed (uvicorn's forwarded_allow_ips).
    forwarded_allow_ips: str = "127.0.0.1"
    database_url: str = ""
    master_key: str | None = None
    log_level: str = "info"
    # "text" or "json" (one object per line, for log shippers); the access log's on/off.
    log_format: str = "text"
    access_log: bool = True
    auto_migrate: bool = True
    workers: int = 1
    bootstrap_api_key: bool = True
    require_pricing: bool = True
    default_max_tokens: int = 4096
    # A request whose worst case does not fit the budget runs with its output limit lowered
    # to what fits, instead of being refused (a budget's own budget_clamp overrides this).
    budget_clamp: bool = False
    request_timeout: float = 600.0
    max_body_bytes: int = 10 * 1024 * 1024
    auth_cache_ttl: float = 2.0
    reservation_ttl: float = 3600.0
    usage_flush_interval: float = 0.2
    shutdown_timeout: float = 30.0
    # Seconds usage may go unwritten (database refusing or unreachable) before readiness
    # answers 503.
    usage_max_lag: float = 5.0
    metrics: bool = False
    max_header_bytes: int = 65536
    # Context windows in tokens: what bounds the input a provider bills from stored state
    # (/v1/responses with previous_response_id, conversation or prompt). Per model key in
    # the [context_windows] table ("openai:gpt-4o" = 128000), else the default.
    default_context_window: int = 1_048_576
    context_windows: Mapping[str, int] = field(default_factory=dict)
    # Usage rows older than this many whole UTC days are rolled up per day and deleted;
    # None keeps every row.
    usage_retention_days: int | None = None
    # Browser origins allowed to call the gateway (CORS); empty: no CORS headers at all.
    cors_allow_origins: tuple[str, ...] = ()
    providers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Connected mode ([platform] table): the gateway serves as a platform's data plane.
    platform: Mapping[str, Any] = field(default_factory=dict)
    # Gateway-run tools ([tools] table: web search backend, code sandbox, URL safety).
    tools: Mapping[str, Any] = field(default_factory=dict)
    # [pricing]: fallback = "genai-prices" prices models without an entry from that package.
    pricing: Mapping[str, Any] = field(default_factory=dict)
    # [alerts]: webhook_url, webhook_secret, thresholds (budget alerts, see alerts.py).
    alerts: Mapping[str, Any] = field(default_factory=dict)
    # Routes ([routes.NAME] tables): model names served by several targets (otari_server.routing).
    routes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def context_window(self, model_key: str) -> int:
        """The context window of `model_key` in tokens: its own, else the default."""
        return self.context_windows.get(model_key, self.default_context_window)

    @property
    def connected(self) -> bool:
        """Whether a platform token switches the gateway to connected mode."""
        return bool(self.platform.get("token"))

    @property
    def database_kind(self) -> str:
        """'sqlite' or 'postgresql', for health output."""
        return "postgresql" if self.database_url.startswith("postgres") else "sqlite"


# Keys that may come from the file, the environment and flags, with their parsers.
def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    return int(str(value).strip())


def _parse_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    try:
        return float(Decimal(str(value).strip()))
    except InvalidOperation as exc:
        raise ValueError(f"expected a number, got {value!r}") from exc


def _parse_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _parse_origins(value: Any) -> tuple[str, ...]:
    """A list of origins (or one comma-separated string, from the environment)."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValueError(f"expected a list of origins, got {value!r}")
    origins = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"expected origins as strings, got {item!r}")
        origin = item.strip().rstrip("/")
        if not origin:
            continue
        if origin != "*" and not _ORIGIN.match(origin):
            raise ValueError(
                f"expected an origin such as https://app.example.com or '*', got {item!r}"
            )
        origins.append(origin)
    return tuple(origins)


_ORIGIN = re.compile(r"https?://[^/\s?#]+\Z")


def _parse_log_format(value: Any) -> str:
    if value in ("text", "json"):
        return str(value)
    raise ValueError(f'expected "text" or "json", got {value!r}')


def _parse_log_level(value: Any) -> str:
    text = str(value).strip().lower()
    if text.isdigit():
        return text
    if text in {"critical", "error", "warning", "info", "debug", "trace"}:
        return text
    raise ValueError(f"expected a level name or number, got {value!r}")


_PARSERS = {
    "host": _parse_str,
    "port": _parse_int,
    "forwarded_allow_ips": _parse_str,
    "database_url": _parse_str,
    "master_key": _parse_str,
    "log_level": _parse_log_level,
    "log_format": _parse_log_format,
    "access_log": _parse_bool,
    "auto_migrate": _parse_bool,
    "workers": _parse_int,
    "bootstrap_api_key": _parse_bool,
    "require_pricing": _parse_bool,
    "default_max_tokens": _parse_int,
    "budget_clamp": _parse_bool,
    "request_timeout": _parse_float,
    "max_body_bytes": _parse_int,
    "auth_cache_ttl": _parse_float,
    "reservation_ttl": _parse_float,
    "usage_flush_interval": _parse_float,
    "shutdown_timeout": _parse_float,
    "usage_max_lag": _parse_float,
    "metrics": _parse_bool,
    "max_header_bytes": _parse_int,
    "default_context_window": _parse_int,
    "usage_retention_days": _parse_int,
    "cors_allow_origins": _parse_origins,
}
_TABLES = {"providers", "platform", "tools", "pricing", "alerts", "context_windows", "routes"}
PRICE_FALLBACKS = ("genai-prices",)
# Environment variables that fill keys of a table: OTARI_PLATFORM_TOKEN -> platform.token.
_TABLE_ENV = {
    "OTARI_PLATFORM_TOKEN": ("platform", "token"),
    "OTARI_PLATFORM_BASE_URL": ("platform", "base_url"),
}
_POSITIVE = {
    "port",
    "workers",
    "default_max_tokens",
    "request_timeout",
    "max_body_bytes",
    "max_header_bytes",
    "default_context_window",
    "usage_max_lag",
    "usage_retention_days",
}


def interpolate(value: Any, environ: Mapping[str, str], key: str) -> Any:
    """Replace ${VAR} in every string of a TOML value; an unset variable is an error."""
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in environ:
                raise ConfigError(f"{key}: environment variable {name} is not set")
            return environ[name]

        return _INTERPOLATION.sub(substitute, value)
    if isinstance(value, dict):
        return {k: interpolate(v, environ, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, environ, f"{key}[{i}]") for i, v in enumerate(value)]
    return value


def read_file(path: Path, environ: Mapping[str, str]) -> dict[str, Any]:
    """Parse a config TOML file and interpolate ${VAR} references."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config: file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: {path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"config: cannot read {path}: {exc.strerror}") from exc
    return {k: interpolate(v, environ, k) for k, v in raw.items()}


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {
        name: environ[f"OTARI_{name.upper()}"]
        for name in _PARSERS
        if f"OTARI_{name.upper()}" in environ
    }
    return values


def _tables_from_env(
    values: dict[str, Any], environ: Mapping[str, str], sources: dict[str, str]
) -> None:
    for variable, (table, key) in _TABLE_ENV.items():
        if environ.get(variable):
            values[table] = {**values.get(table, {}), key: environ[variable]}
            sources[f"{table}.{key}"] = "environment"


def _apply(
    values: dict[str, Any], source: str, layer: Mapping[str, Any], sources: dict[str, str]
) -> None:
    for key, raw in layer.items():
        if raw is None:
            continue
        if key in _TABLES:
            if not isinstance(raw, dict):
                raise ConfigError(f"{key}: expected a table")
            if key == "context_windows":
                _check_windows(raw, source)
            values[key] = raw
        elif key in _PARSERS:
            try:
                parsed = _PARSERS[key](raw)
            except ValueError as exc:
                raise ConfigError(f"{key}: {exc} (from {source})") from exc
            if key in _POSITIVE and isinstance(parsed, int | float) and parsed <= 0:
                raise ConfigError(f"{key}: must be positive, got {raw!r} (from {source})")
            values[key] = parsed
        else:
            raise ConfigError(f"{key}: unknown setting (from {source})")
        sources[key] = source


def _check_pricing(table: Mapping[str, Any]) -> None:
    for key, value in table.items():
        if key != "fallback":
            raise ConfigError(f"pricing.{key}: unknown setting")
        if value not in PRICE_FALLBACKS:
            raise ConfigError(
                f"pricing.fallback: expected one of {', '.join(PRICE_FALLBACKS)}, got {value!r}"
            )


def _check_windows(table: Mapping[str, Any], source: str) -> None:
    for model_key, tokens in table.items():
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens <= 0:
            raise ConfigError(
                f"context_windows.{model_key}: expected a positive number of "
                f"tokens, got {tokens!r} (from {source})"
            )


def load(
    config_path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve settings from every source in precedence order."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    path = config_path
    if path is None and env.get("OTARI_CONFIG"):
        path = Path(env["OTARI_CONFIG"])
    if path is None and default_config_path().is_file():
        path = default_config_path()
    if path is not None:
        _apply(values, f"file {path}", read_file(path, env), sources)
    _apply(values, "environment", _from_env(env), sources)
    _tables_from_env(values, env, sources)
    _apply(values, "flags", dict(overrides or {}), sources)
    if not values.get("database_url"):
        values["database_url"] = f"sqlite:///{data_dir() / 'otari.db'}"
        sources["database_url"] = "default"
    if not values.get("master_key"):
        values.pop("master_key", None)
    _check_pricing(values.get("pricing", {}))
    known = {f.name for f in fields(Settings)}
    return Settings(**{k: v for k, v in values.items() if k in known}, sources=sources)

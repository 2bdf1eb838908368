"""Which gateway to talk to: flag/env > context > local daemon; the files behind it (mode 0600)."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs

from otari_cli.errors import UsageError

APP_NAME = "otari"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
LOCAL = "local"


@dataclass(frozen=True)
class Dirs:
    """Where the CLI and the local daemon keep their files."""

    config: Path
    state: Path
    log: Path

    @classmethod
    def from_platform(cls) -> Dirs:
        """The platform directories for `otari` (XDG on Linux)."""
        return cls(
            config=platformdirs.user_config_path(APP_NAME),
            state=platformdirs.user_state_path(APP_NAME),
            log=platformdirs.user_log_path(APP_NAME),
        )

    @property
    def config_file(self) -> Path:
        return self.config / "config.toml"

    @property
    def contexts_file(self) -> Path:
        return self.config / "contexts.toml"

    @property
    def pidfile(self) -> Path:
        return self.state / "otari.pid"

    @property
    def logfile(self) -> Path:
        return self.log / "otari.log"

    @property
    def master_key_file(self) -> Path:
        return self.state / "master_key"


def write_private(path: Path, text: str) -> None:
    """Atomically write `text` to `path`, readable by the owner only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file, turning syntax errors into a usage error naming the file."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None


# Contexts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """A named remote gateway; its master key comes from an env var or is stored in the file."""

    name: str
    url: str
    key_env: str | None = None
    key: str | None = None

    def key_source(self) -> str:
        """Where this context's master key comes from, without revealing it."""
        if self.key_env:
            return f"env ${self.key_env}"
        return "stored" if self.key else "none"


@dataclass
class Contexts:
    """The contents of contexts.toml."""

    current: str | None = None
    entries: dict[str, Context] = field(default_factory=dict)

    def get(self, name: str) -> Context:
        """The context called `name`, or a usage error listing the known ones."""
        try:
            return self.entries[name]
        except KeyError:
            known = ", ".join(sorted(self.entries)) or "none"
            raise UsageError(f"no context named {name!r} (known: {known})") from None


def load_contexts(path: Path) -> Contexts:
    """Read contexts.toml; a missing file is an empty set of contexts."""
    if not path.exists():
        return Contexts()
    data = read_toml(path)
    entries: dict[str, Context] = {}
    for name, raw in dict(data.get("contexts", {})).items():
        if not isinstance(raw, dict) or not isinstance(raw.get("url"), str):
            raise UsageError(f"{path}: context {name!r} needs a url")
        entries[name] = Context(
            name=name, url=raw["url"], key_env=raw.get("master_key_env"), key=raw.get("master_key")
        )
    current = data.get("current")
    return Contexts(current=current if isinstance(current, str) else None, entries=entries)


def save_contexts(path: Path, contexts: Contexts) -> None:
    """Write contexts.toml at mode 0600 (it may hold master keys)."""
    import tomli_w

    table: dict[str, Any] = {}
    if contexts.current:
        table["current"] = contexts.current
    table["contexts"] = {}
    for name, ctx in sorted(contexts.entries.items()):
        entry = {"url": ctx.url}
        if ctx.key_env:
            entry["master_key_env"] = ctx.key_env
        if ctx.key:
            entry["master_key"] = ctx.key
        table["contexts"][name] = entry
    write_private(path, tomli_w.dumps(table))


def check_url(url: str) -> str:
    """`url` without a trailing slash, or a usage error if it is not http(s)://host[:port].

    A URL ending in `/v1` (or `/api/v1`), as an OpenAI SDK's base_url does, is taken to mean
    the gateway itself: the CLI adds `/v1/...` to every path.
    """
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 -- raises ValueError for a port out of range or not a number
    except ValueError:
        raise UsageError(f"invalid gateway URL {url!r}: bad port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"invalid gateway URL {url!r}: expected http(s)://host[:port]")
    url = url.rstrip("/")
    for suffix in ("/api/v1", "/v1"):
        if url.endswith(suffix):
            return url[: -len(suffix)]
    return url


def same_gateway(url: str, other: str) -> bool:
    """Whether two gateway URLs reach the same listener (loopback spellings are alike)."""
    a, b = urlsplit(url), urlsplit(other)
    defaults = {"http": 80, "https": 443}
    port_a, port_b = a.port or defaults.get(a.scheme), b.port or defaults.get(b.scheme)
    if a.scheme != b.scheme or port_a != port_b:
        return False
    return a.hostname == b.hostname or (is_loopback(url) and is_loopback(other))


def is_loopback(url: str) -> bool:
    """Whether `url` points at this machine (then the local master key may be sent to it)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# The local daemon's settings ------------------------------------------------------------------


@dataclass(frozen=True)
class LocalSettings:
    """What the CLI needs to know of the local daemon's settings, and where each came from."""

    config_file: Path | None
    host: str
    port: int
    master_key: str | None
    master_key_source: str

    @property
    def url(self) -> str:
        """The URL a client on this machine reaches the daemon at."""
        return local_url(self.host, self.port)


def local_url(host: str, port: int) -> str:
    """http URL for a listen address; wildcard addresses become loopback."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def config_file_path(explicit: Path | None, env: Mapping[str, str], dirs: Dirs) -> Path | None:
    """The daemon's config file: --config > $OTARI_CONFIG > the default file if it exists."""
    if explicit is not None:
        return explicit
    if env.get("OTARI_CONFIG"):
        return Path(env["OTARI_CONFIG"])
    return dirs.config_file if dirs.config_file.exists() else None


def local_settings(
    config_file: Path | None,
    overrides: Mapping[str, object],
    env: Mapping[str, str],
    dirs: Dirs,
) -> LocalSettings:
    """host/port/master key as the daemon resolves them: defaults < file < OTARI_* env < flags."""
    raw = read_toml(config_file) if config_file is not None else {}
    data: dict[str, object] = {
        k: _interpolate(raw[k], env, k) for k in ("host", "port", "master_key") if k in raw
    }
    host = str(overrides.get("host") or env.get("OTARI_HOST") or data.get("host") or DEFAULT_HOST)
    raw_port = overrides.get("port") or env.get("OTARI_PORT") or data.get("port") or DEFAULT_PORT
    try:
        port = int(str(raw_port))
    except ValueError:
        raise UsageError(f"invalid port {raw_port!r}") from None
    key, source = _local_master_key(config_file, data, overrides, env, dirs)
    return LocalSettings(config_file, host, port, key, source)


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _interpolate(value: object, env: Mapping[str, str], key: str) -> object:
    """${VAR} in a config string, as the daemon expands it."""
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(1) not in env:
            raise UsageError(f"{key}: environment variable {match.group(1)} is not set")
        return env[match.group(1)]

    return _VARIABLE.sub(substitute, value)


def _local_master_key(
    config_file: Path | None,
    data: Mapping[str, object],
    overrides: Mapping[str, object],
    env: Mapping[str, str],
    dirs: Dirs,
) -> tuple[str | None, str]:
    if overrides.get("master_key"):
        return str(overrides["master_key"]), "--master-key"
    if env.get("OTARI_MASTER_KEY"):
        return env["OTARI_MASTER_KEY"], "OTARI_MASTER_KEY"
    from_file = data.get("master_key")
    if isinstance(from_file, str) and from_file:
        return from_file, f"config file {config_file}"
    if dirs.master_key_file.exists():
        key = dirs.master_key_file.read_text(encoding="utf-8").strip()
        if key:
            return key, f"generated key file {dirs.master_key_file}"
    return None, "none"


# Which gateway --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The gateway one command talks to, and where each part of it came from."""

    url: str
    master_key: str | None
    url_source: str
    key_source: str
    context: str | None = None


@dataclass(frozen=True)
class Selection:
    """The user's explicit choices for this call (flags, then environment)."""

    url: str | None = None
    master_key: str | None = None
    context: str | None = None

    @classmethod
    def from_flags(
        cls,
        url: str | None,
        master_key: str | None,
        context: str | None,
        env: Mapping[str, str],
    ) -> Selection:
        """Flags win over OTARI_URL / OTARI_MASTER_KEY / OTARI_CONTEXT."""
        return cls(
            url=url or env.get("OTARI_URL") or None,
            master_key=master_key or env.get("OTARI_MASTER_KEY") or None,
            context=context or env.get("OTARI_CONTEXT") or None,
        )


def resolve_target(
    chosen: Selection,
    contexts: Contexts,
    local_settings: Callable[[], LocalSettings],
    daemon_url: str | None,
    env: Mapping[str, str],
) -> Target:
    """Pick the gateway: --url/OTARI_URL > --context or current context > the local daemon.

    Credentials belong to their gateway: the local master key is only ever sent to the local
    daemon's own URL, a context's key only to that context's URL; any other URL gets only a key
    given explicitly (--master-key / OTARI_MASTER_KEY).
    """
    key_flag = (chosen.master_key, "--master-key/OTARI_MASTER_KEY")
    if chosen.url:
        url = check_url(chosen.url)
        key, source = key_flag
        if key is None:
            local = local_settings()
            if any(same_gateway(url, own) for own in (local.url, daemon_url) if own):
                key, source = local.master_key, local.master_key_source
        return Target(url, key, "--url/OTARI_URL", source if key else "none")
    name = chosen.context or contexts.current
    if name and name != LOCAL:
        ctx = contexts.get(name)
        key, source = key_flag
        if key is None:
            key, source = _context_key(ctx, env), f"context {name} ({ctx.key_source()})"
        return Target(check_url(ctx.url), key, f"context {name}", source if key else "none", name)
    local = local_settings()
    if daemon_url:
        url, url_source = daemon_url, "running daemon (pidfile)"
    elif local.config_file is not None:
        url, url_source = local.url, f"config file {local.config_file}"
    else:
        url, url_source = local.url, "default"
    key, source = key_flag if chosen.master_key else (local.master_key, local.master_key_source)
    return Target(url, key, url_source, source if key else "none", None)


def _context_key(ctx: Context, env: Mapping[str, str]) -> str | None:
    if ctx.key_env:
        value = env.get(ctx.key_env)
        if not value:
            raise UsageError(
                f"context {ctx.name!r} reads its master key from ${ctx.key_env}, which is not set"
            )
        return value
    return ctx.key

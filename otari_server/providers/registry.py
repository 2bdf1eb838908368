"""Provider configuration from `[providers.NAME]` tables, and model addressing against it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, cast
from urllib.parse import urlsplit

from otari_server.providers.presets import PRESETS, PROVIDER_TYPES, ProviderType

DEFAULT_TIMEOUT = 600.0
SETTINGS = ("type", "api_key", "base_url", "headers", "timeout")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ProviderConfigError(ValueError):
    """A `[providers]` table is invalid; `key` names the offending setting."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key


class ModelAddressError(ValueError):
    """A requested model does not name a configured provider."""

    def __init__(self, problem: str, providers: Mapping[str, object]) -> None:
        names = ", ".join(sorted(providers)) or "none"
        super().__init__(f"{problem}; configured providers: {names}")
        self.providers = tuple(sorted(providers))


@dataclass(frozen=True, slots=True)
class Provider:
    """One configured upstream: where it lives, how to authenticate, how long to wait."""

    name: str
    type: ProviderType
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    timeout: float = DEFAULT_TIMEOUT

    def url(self, path: str) -> str:
        """Absolute upstream URL for an API path such as `/chat/completions`."""
        return self.base_url + path

    def request_headers(self) -> dict[str, str]:
        """Headers for every upstream request: the configured ones plus authentication."""
        headers = dict(self.headers)
        if self.api_key:
            if self.type == "anthropic":
                headers["x-api-key"] = self.api_key
            else:
                headers["Authorization"] = f"Bearer {self.api_key}"
        return headers


def build_providers(
    table: Mapping[str, Any], environ: Mapping[str, str], *, autodetect: bool = False
) -> dict[str, Provider]:
    """Merge each `[providers.NAME]` table over its preset and fill keys from the environment.

    With `autodetect`, presets whose key variable is set are enabled without a table.
    """
    providers = {name: _build(name, settings, environ) for name, settings in table.items()}
    if autodetect:
        for name, preset in PRESETS.items():
            if name not in providers and any(environ.get(var) for var in preset.key_env):
                providers[name] = _build(name, {}, environ)
    return providers


def api_root(base_url: str, kind: ProviderType) -> str:
    """The API root requests are sent under, from a base URL spelled either way.

    Anthropic-type: the Anthropic SDK's convention, `/v1` appended unless the path already
    ends in `/v1` (`http://host:8000` and `http://host:8000/v1` both post to
    `/v1/messages`). OpenAI-type: a URL without a path gets `/v1` (`http://host:8000` posts
    to `/v1/chat/completions`, as with `http://host:8000/v1`); a URL with a path is the
    root as given (`https://host/openai`).
    """
    root = base_url.rstrip("/")
    path = urlsplit(root).path
    if kind == "anthropic":
        return root if path.endswith("/v1") else root + "/v1"
    return root if path else root + "/v1"


def resolve(model: str, providers: Mapping[str, Provider]) -> tuple[Provider, str]:
    """Split `provider:model` or `provider/model` into the provider and the upstream model."""
    if not isinstance(model, str) or not model.strip():
        raise ModelAddressError("model is required, as 'provider:model'", providers)
    prefix, colon, rest = model.partition(":")
    if colon and prefix in providers:
        return _checked(providers[prefix], rest, model, providers)
    # `/` only separates a provider when one is named, since upstream ids contain `/` too.
    prefix, slash, rest = model.partition("/")
    if slash and prefix in providers:
        return _checked(providers[prefix], rest, model, providers)
    if colon or slash:
        known = model.split(":", 1)[0] if colon else prefix
        raise ModelAddressError(f"unknown provider '{known}' in model '{model}'", providers)
    raise ModelAddressError(f"model '{model}' must be given as 'provider:model'", providers)


def _checked(
    provider: Provider, upstream: str, model: str, providers: Mapping[str, Provider]
) -> tuple[Provider, str]:
    if not upstream.strip():
        raise ModelAddressError(f"model '{model}' names no model after the provider", providers)
    return provider, upstream


def _build(name: str, settings: object, environ: Mapping[str, str]) -> Provider:
    where = f"providers.{name}"
    if not isinstance(name, str) or not _NAME.match(name):
        raise ProviderConfigError(where, "a provider name uses letters, digits, '_', '-', '.'")
    if not isinstance(settings, Mapping):
        raise ProviderConfigError(where, "expected a table")
    for key in settings:
        if key not in SETTINGS:
            raise ProviderConfigError(
                f"{where}.{key}", f"unknown setting; use {', '.join(SETTINGS)}"
            )
    preset = PRESETS.get(name)
    kind = settings.get("type", preset.type if preset else None)
    if kind not in PROVIDER_TYPES:
        raise ProviderConfigError(f"{where}.type", f"must be one of {', '.join(PROVIDER_TYPES)}")
    base_url = settings.get("base_url", preset.base_url if preset else None)
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ProviderConfigError(f"{where}.base_url", "must be an http:// or https:// URL")
    headers = dict(preset.headers) if preset and kind == preset.type else {}
    headers.update(_headers(settings.get("headers", {}), where, environ))
    if not (preset and base_url == preset.base_url):  # presets are right as they are
        base_url = api_root(base_url, cast(ProviderType, kind))
    return Provider(
        name=name,
        type=cast(ProviderType, kind),
        base_url=base_url.rstrip("/"),
        api_key=_api_key(settings, where, environ, preset.key_env if preset else ()),
        headers=MappingProxyType(headers),
        timeout=_timeout(settings.get("timeout", DEFAULT_TIMEOUT), where),
    )


def _api_key(
    settings: Mapping[str, Any], where: str, environ: Mapping[str, str], key_env: tuple[str, ...]
) -> str | None:
    value = settings.get("api_key")
    if value is None:
        return next((environ[var] for var in key_env if environ.get(var)), None)
    if not isinstance(value, str):
        raise ProviderConfigError(f"{where}.api_key", "must be a string")
    return _expand(value, f"{where}.api_key", environ) or None


def _headers(value: object, where: str, environ: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ProviderConfigError(f"{where}.headers", "expected a table of strings")
    headers = {}
    for key, text in value.items():
        if not isinstance(key, str) or not isinstance(text, str):
            raise ProviderConfigError(f"{where}.headers.{key}", "must be a string")
        headers[key] = _expand(text, f"{where}.headers.{key}", environ)
    return headers


def _timeout(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ProviderConfigError(f"{where}.timeout", "must be a positive number of seconds")
    return float(value)


def _expand(text: str, key: str, environ: Mapping[str, str]) -> str:
    """Replace `${VAR}` references; an unset variable is a configuration error."""

    def lookup(match: re.Match[str]) -> str:
        var = match.group(1)
        if var not in environ:
            raise ProviderConfigError(key, f"environment variable {var} is not set")
        return environ[var]

    return _REFERENCE.sub(lookup, text)

"""The platform's routing answer: an ordered list of attempts, each a provider to call."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from otari_server.providers.presets import PRESETS
from otari_server.providers.registry import Provider, api_root


class MalformedRoute(ValueError):
    """A resolve answer that lacks what we need to route the request, or is unsafe to use."""


# Ids and keys go into HTTP headers (ours to the client, the key to the provider): visible
# ASCII only, so a CR/LF from the platform can never split a header. Bounded in length.
_TOKEN = re.compile(r"[\x21-\x7e]{1,256}")
_KEY = re.compile(r"[\x21-\x7e]{1,4096}")
# Model names only travel in JSON bodies, but logs and messages show them: no control
# characters.
_MODEL = re.compile(r"[^\x00-\x1f\x7f]{1,256}")


@dataclass(frozen=True, slots=True)
class Attempt:
    """One provider to try; `attempt_id` correlates it with its usage report."""

    attempt_id: str
    position: int
    provider: str
    model: str
    api_key: str = field(repr=False)
    api_base: str | None = None
    managed: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    """What the platform decided for one request: its id and the attempts, in order."""

    request_id: str
    fallback_enabled: bool
    attempts: tuple[Attempt, ...]


def split_model(model: str) -> tuple[str | None, str]:
    """`provider:model` into its parts; a model without a prefix leaves the provider open."""
    prefix, colon, rest = model.partition(":")
    if colon and prefix:
        return prefix, rest
    return None, model


def parse_route(payload: object) -> Route:
    """A resolve answer in either shape: `attempts` or the older flat single attempt."""
    if not isinstance(payload, Mapping):
        raise MalformedRoute("not a JSON object")
    attempts = payload.get("attempts")
    if attempts is None:
        correlation_id = _string(payload, "correlation_id")
        only = _attempt({**payload, "attempt_id": correlation_id, "position": 0})
        return Route(request_id=correlation_id, fallback_enabled=False, attempts=(only,))
    if not isinstance(attempts, list):
        raise MalformedRoute("attempts: not a list")
    fallback = payload.get("fallback_enabled", True)
    if not isinstance(fallback, bool):
        raise MalformedRoute("fallback_enabled: not a boolean")
    ordered = sorted((_attempt(a) for a in attempts), key=lambda a: a.position)
    return Route(
        request_id=_string(payload, "request_id"),
        fallback_enabled=fallback,
        attempts=tuple(ordered),
    )


def _attempt(raw: object) -> Attempt:
    if not isinstance(raw, Mapping):
        raise MalformedRoute("attempt: not a JSON object")
    position = raw.get("position", 0)
    if isinstance(position, bool) or not isinstance(position, int):
        raise MalformedRoute("attempt.position: not an integer")
    base = raw.get("api_base")
    if base is not None and not _http_url(base):
        raise MalformedRoute("attempt.api_base: not an http(s) URL")
    return Attempt(
        attempt_id=_string(raw, "attempt_id"),
        position=position,
        provider=_string(raw, "provider"),
        model=_string(raw, "model", _MODEL),
        api_key=_string(raw, "api_key", _KEY),
        api_base=base or None,
        managed=raw.get("managed") is True,
    )


def _http_url(value: object) -> bool:
    if not isinstance(value, str) or not value:
        return value is None or value == ""
    if len(value) > 2048 or not _KEY.fullmatch(value):
        return False  # whitespace or control characters have no place in a URL
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _string(raw: Mapping[str, Any], key: str, pattern: re.Pattern[str] = _TOKEN) -> str:
    """A field the platform must send: visible ASCII ids and keys, printable model names."""
    value = raw.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # ids may come as numbers from some platforms
    if not isinstance(value, str) or not value:
        raise MalformedRoute(f"{key}: missing or not a string")
    if not pattern.fullmatch(value):
        raise MalformedRoute(f"{key}: contains characters or a length not allowed there")
    return value


def provider_for(attempt: Attempt, timeout: float) -> Provider | None:
    """The upstream for an attempt: its api_base, else the preset's; None when unknown."""
    preset = PRESETS.get(attempt.provider)
    base_url = attempt.api_base or (preset.base_url if preset else None)
    if base_url is None:
        return None
    if attempt.api_base:  # spelled either way, as in a [providers] table
        base_url = api_root(attempt.api_base, preset.type if preset else "openai")
    if preset is None:
        return Provider(
            name=attempt.provider,
            type="openai",
            base_url=base_url.rstrip("/"),
            api_key=attempt.api_key,
            timeout=timeout,
        )
    return Provider(
        name=attempt.provider,
        type=preset.type,
        base_url=base_url.rstrip("/"),
        api_key=attempt.api_key,
        headers=preset.headers,
        timeout=timeout,
    )

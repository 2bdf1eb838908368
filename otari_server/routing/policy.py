"""When a failed attempt moves on to another target, and how long a retry waits."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum

from otari_server.routing.model import Route


class Failure(StrEnum):
    """Why an attempt failed, as far as routing cares (also the metrics/log label)."""

    CONNECTION = "connection"  # refused, reset, DNS, TLS
    TIMEOUT = "timeout"  # no answer in time (or 408)
    RATE_LIMITED = "rate_limited"  # 429
    SERVER = "server_error"  # 5xx, malformed answer
    OVERLOADED = "overloaded"  # 529 (Anthropic)
    CONTEXT_LENGTH = "context_length"  # 400 saying the prompt is too long for the model
    REFUSED = "refused"  # any other 4xx: the request is wrong everywhere


# Failures that say nothing about the request, only about the target right now.
TRANSIENT = frozenset(
    {Failure.CONNECTION, Failure.TIMEOUT, Failure.RATE_LIMITED, Failure.SERVER, Failure.OVERLOADED}
)

# How providers phrase a context-length refusal (OpenAI's code, Anthropic's and others'
# messages), lower-cased.
_CONTEXT_MARKERS = (
    "context_length_exceeded",
    "maximum context length",
    "context window",
    "context length",
    "prompt is too long",
    "too many tokens",
    "input is too long",
)


def classify(status: int | None, message: str = "", *, timeout: bool = False) -> Failure:
    """A failure's kind from the provider's HTTP status (None: no answer at all)."""
    if status is None:
        return Failure.TIMEOUT if timeout else Failure.CONNECTION
    if status == 408:
        return Failure.TIMEOUT
    if status == 529:
        return Failure.OVERLOADED
    if status == 429:
        return Failure.RATE_LIMITED
    if status >= 500:
        return Failure.SERVER
    if status in (400, 413, 422) and is_context_length(message):
        return Failure.CONTEXT_LENGTH
    return Failure.REFUSED


def is_context_length(message: str) -> bool:
    """Whether a provider's refusal says the input does not fit the model's context."""
    text = message.lower()
    return any(marker in text for marker in _CONTEXT_MARKERS)


def moves_on(kind: Failure, route: Route) -> bool:
    """Whether another target may succeed where this one failed."""
    if kind in TRANSIENT:
        return True
    return kind is Failure.CONTEXT_LENGTH and route.context_window_fallbacks


def retries_same_target(kind: Failure) -> bool:
    """Whether retrying the same target can help (a too-long prompt stays too long)."""
    return kind in TRANSIENT


def backoff(
    retry: int, retry_after: float | None, route: Route, rng: random.Random
) -> float | None:
    """Seconds to wait before retry number `retry` (0-based) of the same target.

    The provider's Retry-After is honoured exactly when it is at most the route's
    `retry_after_cap`; a longer one gives None (do not wait: move on). Without one, the
    wait is exponential with full jitter: uniform in [0, min(cap, backoff * 2**retry)].
    """
    if retry_after is not None:
        return retry_after if retry_after <= route.retry_after_cap else None
    ceiling = min(route.retry_after_cap, route.backoff * 2.0 ** min(retry, 30))
    return rng.uniform(0.0, ceiling)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent
    or unreadable. Provider input: negative, non-finite or absurd values are ignored."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
        seconds = max(seconds, 0.0)
    if not math.isfinite(seconds) or seconds < 0 or seconds > 86400:
        return None
    return seconds

"""Worst-case token estimates for budget reservations (pure, cheap, over- not under-estimating)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeGuard

# Tokenizers average about four bytes of English per token; JSON framing only adds bytes, so
# three bytes per token over the raw body errs on the side of reserving too much.
_BYTES_PER_TOKEN = 3


def input_tokens(raw_body: bytes) -> int:
    """An upper estimate of the prompt tokens in a request body."""
    return len(raw_body) // _BYTES_PER_TOKEN + 1


# For billing (not reserving) without the provider's count: the usual four bytes per token.
_BILLED_BYTES_PER_TOKEN = 4


def estimated_prompt(raw_body: bytes) -> int:
    """The prompt tokens billed when the provider reported none (a client that left early, a
    dropped stream, an answer without usage): four bytes of the request body per token,
    rounded up. Never more than the reservation's `input_tokens`."""
    return -(-len(raw_body) // _BILLED_BYTES_PER_TOKEN)


def output_tokens(body: Mapping[str, Any], default: int, *keys: str) -> int:
    """The most output the request allows: its token limit (times n choices) or `default`.

    With more than one limit field sent, the largest: servers differ in which one they obey."""
    limit = max((body[k] for k in keys if _count(body.get(k))), default=None)
    n = body.get("n")
    choices = n if _count(n) and n > 1 else 1
    return (limit if limit is not None and limit > 0 else default) * choices


def _count(value: object) -> TypeGuard[int]:
    # `true` is no count: a bool never stands for 1 (it would shrink the reservation).
    return isinstance(value, int) and not isinstance(value, bool)


# The lowest common speech bitrates are about 8 kbit/s: no audio file holds more seconds
# than its size in bytes over this.
_MIN_AUDIO_BYTES_PER_SECOND = 1000


def audio_seconds_bound(size_bytes: int) -> int:
    """An upper bound on the duration of an audio upload, from its size."""
    return size_bytes // _MIN_AUDIO_BYTES_PER_SECOND + 1

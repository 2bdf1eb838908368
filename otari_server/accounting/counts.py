"""Numbers read from a provider's answer, checked before anything is billed from them.

A provider's usage report is input like a request body: a hostile or broken provider may
send 3,000,000,000 prompt tokens, -5, "12", 12.5, `true` or nothing. The rules, the same in
standalone and connected mode:

- a count is a non-negative integer no larger than its ceiling (MAX_TOKENS, MAX_IMAGES);
- an integral float (12.0) or a string of decimal digits ("12") is converted on purpose;
- anything else (a fraction, a negative number, a boolean, text, a list, NaN) is refused;
- a missing count (None) is 0 and is not an error: many answers report only some fields;
  but a usage without an input count (`{}`, only nulls, only an output count) is no
  report, and the answer is billed from the gateway's estimate (`reports_tokens`).

Audio seconds are a non-negative, finite decimal no larger than MAX_AUDIO_SECONDS.

Refused numbers raise `BadCount`; callers bill such an answer from the gateway's own
estimate and mark its usage row (see docs/billing.md). Pure functions, no I/O.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from typing import Any, TypeGuard

from otari_server.accounting.prices import Consumption

# No model reads or writes more than this in one request (the largest context windows are
# about 10^7 tokens); anything above is a provider bug, not usage.
MAX_TOKENS = 100_000_000
# More images than any image endpoint returns for one request.
MAX_IMAGES = 10_000
# About 11.5 days of audio in one request.
MAX_AUDIO_SECONDS = Decimal(1_000_000)


class BadCount(ValueError):
    """A provider number that breaks the rules; str() says which rule, for the usage row."""


def count(value: object, name: str, ceiling: int = MAX_TOKENS) -> int:
    """`value` as a count in [0, ceiling]; None is 0; raises BadCount otherwise."""
    if type(value) is int and 0 <= value <= ceiling:
        return value  # the common case, decided in one test (bool is not exactly int)
    if value is None:
        return 0
    if isinstance(value, bool):
        raise BadCount(f"{name}: {value!r} is a boolean, not a count")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise BadCount(f"{name}: {value!r} is not a whole number")
        number = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text.isdecimal() or not text.isascii():
            raise BadCount(f"{name}: {_shown(value)} is not a number")
        number = int(text)
    else:
        raise BadCount(f"{name}: a {type(value).__name__} is not a count")
    if number < 0:
        raise BadCount(f"{name}: {number} is negative")
    if number > ceiling:
        raise BadCount(f"{name}: {number} is over the ceiling of {ceiling}")
    return number


# The input count of each usage object providers send: OpenAI chat and embeddings
# (`prompt_tokens`), the Responses API and Anthropic (`input_tokens`).
_INPUT_COUNTS = ("prompt_tokens", "input_tokens")


def reports_tokens(usage: object) -> TypeGuard[dict[str, Any]]:
    """Whether `usage` is an object that reports an input count (a null is no report):
    without one, nothing says what the prompt cost."""
    return isinstance(usage, dict) and any(usage.get(name) is not None for name in _INPUT_COUNTS)


def seconds(value: object, name: str = "duration") -> Decimal:
    """`value` as audio seconds in [0, MAX_AUDIO_SECONDS]; None is 0; raises BadCount."""
    if value is None:
        return Decimal(0)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadCount(f"{name}: {_shown(value)} is not a number of seconds")
    try:
        amount = Decimal(value.strip() if isinstance(value, str) else str(value))
    except InvalidOperation:
        raise BadCount(f"{name}: {_shown(value)} is not a number of seconds") from None
    if not amount.is_finite():
        raise BadCount(f"{name}: {_shown(value)} is not a finite number of seconds")
    if amount < 0:
        raise BadCount(f"{name}: {amount} is negative")
    if amount > MAX_AUDIO_SECONDS:
        raise BadCount(f"{name}: {amount} is over the ceiling of {MAX_AUDIO_SECONDS}")
    return amount


def clean(value: object) -> int:
    """A count for an answer translated to another wire format (which must hold integers).

    A valid number is converted; an integer outside the rules is kept as it is, so that
    metering, reading the translated usage through `count`, still refuses it; anything
    else (text, fractions, booleans) reads as absent (0).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return count(value, "")
    except BadCount:
        return 0


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def consumption(usage: object, **extra: Any) -> Consumption:
    """Consumption from an OpenAI-style usage object (chat, embeddings, responses).

    Every number is checked by `count`; one that breaks the rules gives a Consumption
    whose `invalid` says why (billed from the estimate by Call.settle).
    """
    if not isinstance(usage, dict):
        return Consumption(**extra)
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details")
    details = details if isinstance(details, dict) else {}
    try:
        prompt = _first_count(usage, "prompt_tokens", "input_tokens")
        completion = _first_count(usage, "completion_tokens", "output_tokens")
        return Consumption(
            prompt_tokens=prompt,
            completion_tokens=completion,
            cache_read_tokens=_first_count(details, "cached_tokens"),
            cache_write_tokens=_first_count(details, "cache_creation_tokens"),
            **extra,
        )
    except BadCount as exc:
        return Consumption(invalid=str(exc), **extra)


def _first_count(usage: dict[str, Any], *names: str) -> int:
    """The first of `names` present in `usage`, checked (0 when none is)."""
    for name in names:
        if name in usage:
            return count(usage[name], name)
    return 0

"""Human durations (`30d`, `12h`, `1w2d`) and instants (ISO dates, or a duration from now)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

from otari_cli.errors import UsageError

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+)([smhdw])")
_WHOLE = re.compile(r"(?:\d+[smhdw])+")


def parse_duration(text: str) -> int:
    """Seconds in `text`: `3600`, `3600s`, `90m`, `12h`, `30d`, `1w`, or a sum like `1d12h`."""
    spec = text.strip().lower()
    if spec.isdigit():
        seconds = int(spec)
    elif _WHOLE.fullmatch(spec):
        seconds = sum(int(n) * UNIT_SECONDS[unit] for n, unit in _PART.findall(spec))
    else:
        raise UsageError(f"invalid duration {text!r}: use e.g. 3600s, 90m, 12h, 30d or 1w")
    if seconds <= 0:
        raise UsageError(f"invalid duration {text!r}: must be longer than zero")
    return seconds


def format_duration(seconds: int) -> str:
    """The shortest exact human form of `seconds`: 2592000 -> `30d`, 1209600 -> `2w`,
    5400 -> `1h30m` (weeks only when whole: an operator who typed 30d reads 30d)."""
    if seconds <= 0:
        return f"{seconds}s"
    parts = []
    rest = seconds
    units = ("w", "d", "h", "m", "s") if seconds % UNIT_SECONDS["w"] == 0 else ("d", "h", "m", "s")
    for unit in units:
        count, rest = divmod(rest, UNIT_SECONDS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def is_duration(text: str) -> bool:
    """Whether `text` is a duration (`7d`, `3600`) rather than a date or datetime."""
    spec = text.strip().lower()
    return spec.isdigit() or bool(_WHOLE.fullmatch(spec))


def parse_instant(text: str, now: datetime, *, ago: bool) -> datetime:
    """An aware UTC datetime from an ISO date/datetime, or a duration before/after `now`."""
    spec = text.strip()
    if spec.isdigit() or _WHOLE.fullmatch(spec.lower()):
        delta = timedelta(seconds=parse_duration(spec))
        return now - delta if ago else now + delta
    try:
        if len(spec) == 10:
            day = date.fromisoformat(spec)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(spec)
    except ValueError:
        raise UsageError(
            f"invalid time {text!r}: use an ISO date (2025-01-31), a datetime "
            "(2025-01-31T12:00:00Z) or a duration (30d)"
        ) from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)

"""Human durations and instants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from otari_cli.durations import format_duration, parse_duration, parse_instant
from otari_cli.errors import ExitCode, UsageError

NOW = datetime(2025, 6, 15, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30d", 2_592_000),
        ("12h", 43_200),
        ("1w", 604_800),
        ("90m", 5_400),
        ("3600s", 3_600),
        ("3600", 3_600),
        ("1d12h", 129_600),
        (" 2W ", 1_209_600),
    ],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "30x", "1.5h", "-1d", "0s", "0", "12h abc", "h12"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_duration(text)
    assert caught.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (2_592_000, "30d"),
        (1_209_600, "2w"),
        (86_400, "1d"),
        (5_400, "1h30m"),
        (61, "1m1s"),
        (90_061, "1d1h1m1s"),
    ],
)
def test_format_duration(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


def test_instant_from_duration_goes_forward_or_back() -> None:
    assert parse_instant("30d", NOW, ago=False) == NOW + timedelta(days=30)
    assert parse_instant("7d", NOW, ago=True) == NOW - timedelta(days=7)


def test_instant_from_iso_forms() -> None:
    assert parse_instant("2025-01-31", NOW, ago=True) == datetime(2025, 1, 31, tzinfo=UTC)
    naive = parse_instant("2025-01-31T10:30:00", NOW, ago=True)
    assert naive == datetime(2025, 1, 31, 10, 30, tzinfo=UTC)
    offset = parse_instant("2025-01-31T10:30:00+02:00", NOW, ago=True)
    assert offset == datetime(2025, 1, 31, 8, 30, tzinfo=UTC)
    assert offset.tzinfo is UTC


def test_instant_rejects_garbage() -> None:
    with pytest.raises(UsageError, match="invalid time"):
        parse_instant("next tuesday", NOW, ago=True)

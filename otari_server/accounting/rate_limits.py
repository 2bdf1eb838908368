"""Requests- and tokens-per-minute limits, counted in the database so every instance agrees.

Fixed one-minute windows. A request counts toward requests-per-minute when it is admitted,
and its tokens toward tokens-per-minute when it settles; a subject whose window already
holds its token allowance is refused until the window ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, delete, select, update

from otari_server.errors import RateLimited
from otari_server.storage import db
from otari_server.storage.tables import RateCounter

WINDOW_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Limit:
    """The limits of one subject ("key:<id>" or "user:<id>"); None means unlimited."""

    subject: str
    rpm: int | None
    tpm: int | None


def window(now: datetime) -> int:
    """The window (epoch minute) containing `now`."""
    return int(now.timestamp()) // WINDOW_SECONDS


def retry_after(now: datetime) -> int:
    """Whole seconds until the current window ends (at least 1)."""
    return max(math.ceil(WINDOW_SECONDS - now.timestamp() % WINDOW_SECONDS), 1)


def _upsert(
    conn: Connection, subject: str, window_start: int, requests: int, tokens: int
) -> tuple[int, int]:
    """Add to a counter, creating it if needed; returns the new (requests, tokens)."""
    statement = db.upsert_insert(conn.dialect.name, RateCounter).values(
        subject=subject, window_start=window_start, requests=requests, tokens=tokens
    )
    upsert = statement.on_conflict_do_update(
        index_elements=[RateCounter.subject, RateCounter.window_start],
        set_={"requests": RateCounter.requests + requests, "tokens": RateCounter.tokens + tokens},
    ).returning(RateCounter.requests, RateCounter.tokens)
    row = conn.execute(upsert).one()
    return int(row[0]), int(row[1])


_UNCOUNT = (
    update(RateCounter)
    .where(RateCounter.subject == bindparam("s"), RateCounter.window_start == bindparam("w"))
    .values(requests=RateCounter.requests - 1)
)


def admit(conn: Connection, limits: tuple[Limit, ...], now: datetime) -> RateLimited | None:
    """Count one request against every limit, or refuse it (counting nothing)."""
    current = window(now)
    counted: list[str] = []
    refusal: RateLimited | None = None
    for limit in limits:
        if limit.rpm is None and limit.tpm is None:
            continue
        # Increment first, then check: atomic per statement, so concurrent instances
        # can never both take the last slot.
        requests, tokens = _upsert(conn, limit.subject, current, 1, 0)
        counted.append(limit.subject)
        if limit.rpm is not None and requests > limit.rpm:
            refusal = _refuse(limit, f"{limit.rpm} requests per minute", now, requests - 1, tokens)
            break
        if limit.tpm is not None and tokens >= limit.tpm:
            refusal = _refuse(limit, f"{limit.tpm} tokens per minute", now, requests - 1, tokens)
            break
    if refusal is not None:
        for subject in counted:
            conn.execute(_UNCOUNT, {"s": subject, "w": current})
    return refusal


def _refuse(limit: Limit, what: str, now: datetime, requests: int, tokens: int) -> RateLimited:
    seconds = retry_after(now)
    kind, _, ident = limit.subject.partition(":")
    return RateLimited(
        f"Rate limit reached for {kind} '{ident}': {what}; retry in {seconds}s",
        headers={"Retry-After": str(seconds), **pacing_headers(limit, requests, tokens, seconds)},
    )


def pacing_headers(limit: Limit, requests: int, tokens: int, reset_seconds: int) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers for a subject's window: its limits, what is left of
    them after `requests` requests and `tokens` tokens, and when they reset ("42s")."""
    reset = _openai_duration(reset_seconds)
    headers = {}
    if limit.rpm is not None:
        headers.update(
            {
                "x-ratelimit-limit-requests": str(limit.rpm),
                "x-ratelimit-remaining-requests": str(max(limit.rpm - requests, 0)),
                "x-ratelimit-reset-requests": reset,
            }
        )
    if limit.tpm is not None:
        headers.update(
            {
                "x-ratelimit-limit-tokens": str(limit.tpm),
                "x-ratelimit-remaining-tokens": str(max(limit.tpm - tokens, 0)),
                "x-ratelimit-reset-tokens": reset,
            }
        )
    return headers


def _openai_duration(seconds: int) -> str:
    # OpenAI writes reset times as Go durations: "6s", "1m0s".
    minutes, rest = divmod(seconds, 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


def add_tokens(conn: Connection, used: dict[str, int], now: datetime) -> None:
    """Count settled tokens toward each subject's current window."""
    current = window(now)
    for subject, tokens in used.items():
        if tokens:
            _upsert(conn, subject, current, 0, tokens)


def prune(conn: Connection, now: datetime) -> None:
    """Forget windows that ended more than a minute ago."""
    conn.execute(delete(RateCounter).where(RateCounter.window_start < window(now) - 1))


def counts(conn: Connection, subject: str, now: datetime) -> tuple[int, int]:
    """(requests, tokens) of a subject in the current window, for inspection."""
    row = conn.execute(
        select(RateCounter.requests, RateCounter.tokens).where(
            RateCounter.subject == subject, RateCounter.window_start == window(now)
        )
    ).first()
    return (int(row[0]), int(row[1])) if row else (0, 0)

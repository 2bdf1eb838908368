"""Prices in effect at an instant, and cost arithmetic in Decimal."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from anyio import to_thread
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from otari_server.tables import Pricing, quantize

_MILLION = Decimal(1_000_000)


def price_at(session: Session, model_key: str, at: datetime) -> Pricing | None:
    """The entry for `model_key` with the latest effective_at not after `at`."""
    return session.scalars(
        select(Pricing).where(Pricing.model_key == model_key, Pricing.effective_at <= at)
        .order_by(Pricing.effective_at.desc()).limit(1)
    ).first()


def token_cost(input_price_per_million: Decimal, output_price_per_million: Decimal,
               prompt_tokens: int, completion_tokens: int) -> Decimal:
    """Exact cost of a token count at per-million prices, at stored precision."""
    return quantize((input_price_per_million * prompt_tokens
                     + output_price_per_million * completion_tokens) / _MILLION)


@dataclass(frozen=True, slots=True)
class Price:
    """A price entry as the hot path needs it."""

    model_key: str
    effective_at: datetime
    input_per_million: Decimal
    output_per_million: Decimal
    unit: str = "tokens"
    cache_read_per_million: Decimal | None = None
    cache_write_per_million: Decimal | None = None

    def cost(self, prompt_tokens: int, completion_tokens: int, cache_read_tokens: int = 0,
             cache_write_tokens: int = 0) -> Decimal:
        """Exact cost of one request.

        Tokens: prompt tokens (cached reads and cache writes at their own rates when set)
        and completion tokens. Requests and images: input_price_per_million per million of
        them, one per request here.
        """
        if self.unit != "tokens":
            return quantize(self.input_per_million / _MILLION)
        read = min(cache_read_tokens, prompt_tokens)
        written = min(cache_write_tokens, prompt_tokens - read)
        fresh = prompt_tokens - read - written
        total = (self.input_per_million * fresh
                 + (self.cache_read_per_million or self.input_per_million) * read
                 + (self.cache_write_per_million or self.input_per_million) * written
                 + self.output_per_million * completion_tokens)
        return quantize(total / _MILLION)


def load_prices(session: Session, model_key: str) -> list[Price]:
    """Every entry of a model, newest first."""
    rows = session.scalars(select(Pricing).where(Pricing.model_key == model_key)
                           .order_by(Pricing.effective_at.desc()))
    return [Price(r.model_key, r.effective_at, r.input_price_per_million,
                  r.output_price_per_million, r.unit or "tokens",
                  r.cache_read_price_per_million, r.cache_write_price_per_million)
            for r in rows]


class PriceBook:
    """Prices by model, cached for `ttl` seconds and cleared when pricing changes here."""

    def __init__(self, sessions: sessionmaker[Session], ttl: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._sessions = sessions
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[str, tuple[float, list[Price]]] = {}

    def _load(self, model_key: str) -> list[Price]:
        with self._sessions() as session:
            return load_prices(session, model_key)

    async def at(self, model_key: str, when: datetime) -> Price | None:
        """The price of `model_key` in effect at `when`, or None when it has none."""
        entry = self._entries.get(model_key)
        if entry is None or self._clock() - entry[0] > self._ttl:
            prices = await to_thread.run_sync(self._load, model_key)
            if len(self._entries) > 10_000:
                self._entries.clear()
            entry = (self._clock(), prices)
            self._entries[model_key] = entry
        return next((p for p in entry[1] if p.effective_at <= when), None)

    def clear(self) -> None:
        """Forget cached prices (after a pricing change)."""
        self._entries.clear()

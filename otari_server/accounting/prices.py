"""Prices in effect at an instant, and cost arithmetic in Decimal."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from otari_server.storage.flights import ReadCache
from otari_server.storage.tables import Pricing, quantize

_MILLION = Decimal(1_000_000)
# Money is exact to 1e-10 and, so that SQLite's 64-bit integers hold any sum of it, below
# a hundred million per amount (USD).
MAX_MONEY = Decimal(100_000_000)


def price_at(session: Session, model_key: str, at: datetime) -> Pricing | None:
    """The entry for `model_key` with the latest effective_at not after `at`."""
    return session.scalars(
        select(Pricing)
        .where(Pricing.model_key == model_key, Pricing.effective_at <= at)
        .order_by(Pricing.effective_at.desc())
        .limit(1)
    ).first()


@dataclass(frozen=True, slots=True)
class Consumption:
    """What one request used, in every unit a price may be quoted in."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    images: int = 0
    audio_seconds: Decimal = Decimal(0)
    characters: int = 0
    requests: int = 1
    # Why the provider's numbers were refused (counts.BadCount), when they were: such a
    # request is billed from the gateway's estimate instead (see proxy.Call.settle).
    invalid: str | None = None


# Billing rules: which price field an endpoint cannot do without (see Price.covers).
TOKENS, IMAGES, AUDIO_SECONDS, CHARACTERS, REQUESTS = (
    "tokens",
    "images",
    "audio_seconds",
    "characters",
    "requests",
)


@dataclass(frozen=True, slots=True)
class Tier:
    """A long-context tier: from `min_input_tokens` prompt tokens on (cached ones included),
    the whole request is priced at these rates; a rate left None is the base entry's."""

    min_input_tokens: int
    input_per_million: Decimal | None = None
    output_per_million: Decimal | None = None
    cache_read_per_million: Decimal | None = None
    cache_write_per_million: Decimal | None = None
    cache_write_1h_per_million: Decimal | None = None


# A stored tier's keys (pricing.tiers JSON, prices as decimal strings) and Tier's fields.
TIER_RATES = {
    "input_price_per_million": "input_per_million",
    "output_price_per_million": "output_per_million",
    "cache_read_price_per_million": "cache_read_per_million",
    "cache_write_price_per_million": "cache_write_per_million",
    "cache_write_1h_price_per_million": "cache_write_1h_per_million",
}


def tiers_from_json(stored: Iterable[Mapping[str, Any]] | None) -> tuple[Tier, ...]:
    """Tiers from the pricing.tiers column, lowest threshold first."""
    tiers = [
        Tier(
            int(item["min_input_tokens"]),
            **{
                field: Decimal(str(item[key]))
                for key, field in TIER_RATES.items()
                if item.get(key) is not None
            },
        )
        for item in stored or ()
    ]
    return tuple(sorted(tiers, key=lambda tier: tier.min_input_tokens))


@dataclass(frozen=True, slots=True)
class Price:
    """A price entry as the hot path needs it."""

    model_key: str
    effective_at: datetime
    input_per_million: Decimal
    output_per_million: Decimal
    unit: str = TOKENS
    cache_read_per_million: Decimal | None = None
    cache_write_per_million: Decimal | None = None
    per_image: Decimal | None = None
    per_audio_second: Decimal | None = None
    per_million_characters: Decimal | None = None
    per_request: Decimal | None = None
    tiers: tuple[Tier, ...] = ()  # lowest min_input_tokens first
    # Where it came from, recorded on usage rows: "pricing" (the table) or "genai-prices"
    # (the [pricing] fallback for a model without an entry).
    source: str = "pricing"

    def for_input(self, prompt_tokens: int) -> Price:
        """The entry with the rates of the tier `prompt_tokens` falls in (itself below the
        first tier); the result has no tiers."""
        tier = None
        for candidate in self.tiers:
            if prompt_tokens >= candidate.min_input_tokens:
                tier = candidate
        if tier is None:
            return replace(self, tiers=()) if self.tiers else self
        return replace(
            self,
            tiers=(),
            input_per_million=_either(tier.input_per_million, self.input_per_million),
            output_per_million=_either(tier.output_per_million, self.output_per_million),
            cache_read_per_million=_either(
                tier.cache_read_per_million, self.cache_read_per_million
            ),
            cache_write_per_million=_either(
                tier.cache_write_per_million, self.cache_write_per_million
            ),
        )

    def cost(self, used: Consumption) -> Decimal:
        """Exact cost of one request.

        The unit says what input_price_per_million counts: tokens (with output, cached
        reads and cache writes at their own rates when set), or requests or images (per
        million of them). The per-image, per-audio-second, per-million-characters and
        per-request prices add to that. With tiers, the tier the request's prompt tokens
        fall in prices all of its tokens (a worst case its worst tier, real usage its own).
        """
        if self.tiers:
            return self.for_input(used.prompt_tokens).cost(used)
        total = Decimal(0)
        if self.unit == TOKENS:
            read = min(used.cache_read_tokens, used.prompt_tokens)
            written = min(used.cache_write_tokens, used.prompt_tokens - read)
            fresh = used.prompt_tokens - read - written
            total += (
                self.input_per_million * fresh
                + (self.cache_read_per_million or self.input_per_million) * read
                + (self.cache_write_per_million or self.input_per_million) * written
                + self.output_per_million * used.completion_tokens
            ) / _MILLION
        else:
            count = used.images if self.unit == IMAGES else used.requests
            total += self.input_per_million * count / _MILLION
        if self.per_image is not None:
            total += self.per_image * used.images
        if self.per_audio_second is not None:
            total += self.per_audio_second * used.audio_seconds
        if self.per_million_characters is not None:
            total += self.per_million_characters * used.characters / _MILLION
        if self.per_request is not None:
            total += self.per_request * used.requests
        return quantize(total)

    def covers(self, billing: str) -> bool:
        """Whether this entry prices what an endpoint with this billing rule consumes."""
        if billing == IMAGES:
            return self.per_image is not None or self.unit == IMAGES
        if billing == AUDIO_SECONDS:
            return self.per_audio_second is not None
        if billing == CHARACTERS:
            return self.per_million_characters is not None
        return True


def _either(rate: Decimal | None, base: Decimal | None) -> Any:
    return base if rate is None else rate


def load_prices(session: Session, model_key: str) -> list[Price]:
    """Every entry of a model, newest first."""
    rows = session.scalars(
        select(Pricing).where(Pricing.model_key == model_key).order_by(Pricing.effective_at.desc())
    )
    return [
        Price(
            r.model_key,
            r.effective_at,
            r.input_price_per_million,
            r.output_price_per_million,
            r.unit or TOKENS,
            r.cache_read_price_per_million,
            r.cache_write_price_per_million,
            r.price_per_image,
            r.price_per_audio_second,
            r.price_per_million_characters,
            r.price_per_request,
            tiers_from_json(r.tiers),
        )
        for r in rows
    ]


class PriceBook:
    """Prices by model, cached for `ttl` seconds and cleared when pricing changes here (one
    database read per model at a time, refreshed ahead of their expiry: storage/flights.py).
    Models without an entry are remembered apart, so a flood of unknown model names never
    pushes out a real price.

    `fallback(model_key, when)` prices a model that has no entry in effect (the
    [pricing] fallback); None: such a model is unpriced.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
        fallback: Callable[[str, datetime], Price | None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._fallback = fallback
        self._cache: ReadCache[str, list[Price]] = ReadCache(ttl, 10_000, 10_000, clock)

    def _load(self, model_key: str) -> list[Price]:
        with self._sessions() as session:
            return load_prices(session, model_key)

    async def at(self, model_key: str, when: datetime) -> Price | None:
        """The price of `model_key` in effect at `when`, or None when it has none."""
        _, prices, due = self._cache.lookup(model_key)
        if prices is None:
            prices = await self._cache.read(model_key, partial(self._load, model_key))
        elif due:
            self._cache.refresh(model_key, partial(self._load, model_key))
        price = next((p for p in prices if p.effective_at <= when), None)
        if price is None and self._fallback is not None:
            price = self._fallback(model_key, when)
        return price

    def clear(self) -> None:
        """Forget cached prices (after a pricing change; from any thread)."""
        self._cache.clear()

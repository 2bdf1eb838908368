"""Prices from genai-prices (pydantic's maintained price data, installed with otari, offline).

Which providers map: otari's preset names (left) to genai-prices provider ids (right) in
PROVIDER_IDS. Presets missing there (deepinfra, sambanova, nebius, huggingface and the local
servers) have no published per-provider prices in the package and are never imported or
priced from it. A model is imported under `<otari provider>:<genai-prices model id>` with its
current token prices (input, output, cache read, cache write per million) and their
long-context tiers; models without both an input and an output token price are left out
(otari prices them only when an operator does).
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from importlib.metadata import version
from types import MappingProxyType
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from otari_server.accounting.prices import TIER_RATES, TOKENS, Price, Tier, tiers_from_json
from otari_server.storage.tables import Pricing, quantize

log = logging.getLogger("otari.pricing")

SOURCE = "genai-prices"

PROVIDER_IDS = MappingProxyType(
    {
        "openai": "openai",
        "anthropic": "anthropic",
        "mistral": "mistral",
        "groq": "groq",
        "together": "together",
        "fireworks": "fireworks",
        "deepseek": "deepseek",
        "openrouter": "openrouter",
        "xai": "x-ai",
        "perplexity": "perplexity",
        "cerebras": "cerebras",
        "gemini": "google",
        "moonshot": "moonshotai",
    }
)


def package_version() -> str:
    """The installed genai-prices version (its data is as of that release)."""
    return version("genai-prices")


def exact(value: object) -> Decimal | None:
    """A package price as an exact Decimal, never through float.

    Returns None for values otari cannot hold as one number (tiered prices, missing); raises
    ValueError for a float or a negative or non-finite number, which would be a data error.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float):
        raise ValueError(f"refusing a binary float price {value!r}")
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int | str):
        amount = Decimal(value)
    else:
        return None  # TieredPrices and anything else that is not a single number
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"invalid price {value!r}")
    return amount


@dataclass(frozen=True, slots=True)
class Quote:
    """One model's published token prices, per million tokens."""

    model_key: str
    input_per_million: Decimal
    output_per_million: Decimal
    cache_read_per_million: Decimal | None = None
    cache_write_per_million: Decimal | None = None
    tiers: tuple[Tier, ...] = ()  # lowest min_input_tokens first

    def price(self, effective_at: datetime) -> Price:
        """As a hot-path price, marked as coming from genai-prices."""
        return Price(
            self.model_key,
            effective_at,
            self.input_per_million,
            self.output_per_million,
            TOKENS,
            self.cache_read_per_million,
            self.cache_write_per_million,
            tiers=self.tiers,
            source=SOURCE,
        )

    def stored_tiers(self) -> list[dict[str, Any]] | None:
        """The tiers as the pricing.tiers column keeps them (prices as decimal strings)."""
        if not self.tiers:
            return None
        fields = {field: key for key, field in TIER_RATES.items()}
        return [
            {
                "min_input_tokens": tier.min_input_tokens,
                **{
                    fields[name]: f"{getattr(tier, name):f}"
                    for name in fields
                    if getattr(tier, name) is not None
                },
            }
            for tier in self.tiers
        ]


_FIELDS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")
_TIER_FIELDS = (
    "input_per_million",
    "output_per_million",
    "cache_read_per_million",
    "cache_write_per_million",
)


def _rates(value: object) -> tuple[Decimal | None, list[tuple[int, Decimal]]]:
    """A package price as (base, [(tier start, price)]): a plain price has no tiers.

    genai-prices applies a tier when the prompt has more than `start` tokens, and then to
    the whole request, like otari's tiers from min_input_tokens = start + 1.
    """
    base = getattr(value, "base", None)
    if base is None:
        return _stored(exact(value)), []
    tiers = []
    for tier in getattr(value, "tiers", []):
        start, price = tier.start, _stored(exact(tier.price))
        if isinstance(start, bool) or not isinstance(start, int) or start < 0 or price is None:
            raise ValueError(f"invalid price tier {tier!r}")
        tiers.append((start, price))
    return _stored(exact(base)), tiers


def _stored(amount: Decimal | None) -> Decimal | None:
    # Rounded to the ten places otari keeps (a few published rates are thirds, like
    # 0.0833...): what is written then equals what the next import compares.
    return None if amount is None else quantize(amount)


def _quote(model_key: str, model: Any, at: datetime) -> Quote | None:
    prices = model.get_prices(at)
    rates = [_rates(getattr(prices, name, None)) for name in _FIELDS]
    bases = [base for base, _ in rates]
    if bases[0] is None or bases[1] is None:
        return None
    starts = sorted({start for _, tiers in rates for start, _ in tiers})
    tiers = []
    for start in starts:
        # Each field's rate at this size: its own highest tier started by then, else the
        # base (left None, which otari reads as the entry's own rate).
        tier_rates: dict[str, Decimal | None] = {}
        for field, (_, field_tiers) in zip(_TIER_FIELDS, rates, strict=True):
            applied = [price for tier_start, price in field_tiers if tier_start <= start]
            tier_rates[field] = applied[-1] if applied else None
        tiers.append(Tier(start + 1, **tier_rates))
    return Quote(model_key, bases[0], bases[1], bases[2], bases[3], tuple(tiers))


def _providers() -> dict[str, Any]:
    from genai_prices.data_snapshot import get_snapshot  # imported on use: 30k lines of data

    return {provider.id: provider for provider in get_snapshot().providers}


def unknown_providers(names: Iterable[str]) -> list[str]:
    """The names among `names` that do not map to genai-prices."""
    return [name for name in names if name not in PROVIDER_IDS]


def quotes(providers: Sequence[str] | None, model_glob: str | None, at: datetime) -> list[Quote]:
    """Published prices for the mapped providers (all when None), optionally only models
    whose id or provider:model key matches `model_glob` (fnmatch, case-sensitive)."""
    published = _providers()
    result: list[Quote] = []
    for name in providers or sorted(PROVIDER_IDS):
        source = published.get(PROVIDER_IDS[name])
        if source is None:
            continue
        for model in source.models:
            key = f"{name}:{model.id}"
            if model_glob and not (
                fnmatch.fnmatchcase(model.id, model_glob) or fnmatch.fnmatchcase(key, model_glob)
            ):
                continue
            try:
                quote = _quote(key, model, at)
            except ValueError as exc:  # bad package data: leave that model out, say so
                log.warning("genai-prices: skipping %s: %s", key, exc)
                continue
            if quote is not None:
                result.append(quote)
    return sorted(result, key=lambda q: q.model_key)


def fallback_price(model_key: str, at: datetime) -> Price | None:
    """The published price of a 'provider:model' at `at`, for a model with no entry.

    The model name is matched as genai-prices matches it (aliases and dated snapshots
    included); None when the provider does not map or the model is unknown.
    """
    from genai_prices.data_snapshot import get_snapshot

    provider, _, model = model_key.partition(":")
    provider_id = PROVIDER_IDS.get(provider)
    if provider_id is None or not model:
        return None
    try:
        _, info = get_snapshot().find_provider_model(model, None, provider_id, None)
        quote = _quote(model_key, info, at)
    except (LookupError, ValueError):
        return None
    return None if quote is None else quote.price(at)


Action = Literal["add", "change", "unchanged", "kept"]


@dataclass(frozen=True, slots=True)
class Change:
    """What an import does to one model: add, change, leave unchanged, or keep the
    operator's price (not overwritten without `overwrite`)."""

    quote: Quote
    action: Action
    current: Pricing | None


def _same(row: Pricing, quote: Quote) -> bool:
    return (
        (row.unit or TOKENS) == TOKENS
        and row.input_price_per_million == quote.input_per_million
        and row.output_price_per_million == quote.output_per_million
        and row.cache_read_price_per_million == quote.cache_read_per_million
        and row.cache_write_price_per_million == quote.cache_write_per_million
        and tiers_from_json(row.tiers) == quote.tiers
    )


def _current(session: Session, keys: list[str], now: datetime) -> dict[str, Pricing]:
    """The entry in effect at `now` of each model key that has one (one query)."""
    if not keys:
        return {}
    latest = (
        select(Pricing.model_key, func.max(Pricing.effective_at).label("at"))
        .where(Pricing.effective_at <= now, Pricing.model_key.in_(keys))
        .group_by(Pricing.model_key)
        .subquery()
    )
    rows = session.scalars(
        select(Pricing).join(
            latest,
            (Pricing.model_key == latest.c.model_key) & (Pricing.effective_at == latest.c.at),
        )
    )
    return {row.model_key: row for row in rows}


def plan(session: Session, found: list[Quote], overwrite: bool, now: datetime) -> list[Change]:
    """Compare published prices with the prices in effect at `now`."""
    current = _current(session, [quote.model_key for quote in found], now)
    changes = []
    for quote in found:
        row = current.get(quote.model_key)
        if row is None:
            action: Action = "add"
        elif _same(row, quote):
            action = "unchanged"
        elif row.source == SOURCE or overwrite:
            action = "change"
        else:
            action = "kept"
        changes.append(Change(quote, action, row))
    return changes


def apply(session: Session, changes: list[Change], now: datetime) -> int:
    """Write a new entry effective `now` for every add and change (history stays)."""
    written = 0
    for change in changes:
        if change.action not in ("add", "change"):
            continue
        q = change.quote
        session.add(
            Pricing(
                model_key=q.model_key,
                effective_at=now,
                unit=TOKENS,
                input_price_per_million=q.input_per_million,
                output_price_per_million=q.output_per_million,
                cache_read_price_per_million=q.cache_read_per_million,
                cache_write_price_per_million=q.cache_write_per_million,
                tiers=q.stored_tiers(),
                source=SOURCE,
                created_at=now,
                updated_at=now,
            )
        )
        written += 1
    return written

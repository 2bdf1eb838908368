"""Prices in effect at an instant, and cost arithmetic in Decimal."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

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

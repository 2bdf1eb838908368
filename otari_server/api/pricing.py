"""Pricing with history: each entry applies from its effective_at until the next one."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy import delete as sql_delete
from sqlalchemy import func, select

from otari_server.accounting import price_import
from otari_server.accounting.prices import TIER_RATES, Tier, price_at, tiers_from_json
from otari_server.api.paging import Limit, Skip
from otari_server.api.schemas import (
    ImportPricingRequest,
    ImportPricingResponse,
    PriceImportChange,
    PricingResponse,
    SetPricingRequest,
)
from otari_server.deps import CallerDep, ReadSessionDep, RuntimeDep, SessionDep, require_master
from otari_server.errors import InvalidRequest, NotFound
from otari_server.jsonio import ExactJSONResponse, ExactRoute
from otari_server.storage.tables import Pricing, utcnow

# Reads are open to API keys; writes need the master key (per the reference).
router = APIRouter(prefix="/v1/pricing", tags=["pricing"], route_class=ExactRoute)


def pricing_response(row: Pricing) -> PricingResponse:
    """The public view of a price entry."""
    tiers = tiers_from_json(row.tiers)
    return PricingResponse(
        model_key=row.model_key,
        effective_at=row.effective_at,
        input_price_per_million=row.input_price_per_million,
        output_price_per_million=row.output_price_per_million,
        created_at=row.created_at,
        updated_at=row.updated_at,
        price_per_image=row.price_per_image,
        price_per_audio_second=row.price_per_audio_second,
        price_per_million_characters=row.price_per_million_characters,
        price_per_request=row.price_per_request,
        unit=row.unit,
        cache_read_price_per_million=row.cache_read_price_per_million,
        cache_write_price_per_million=row.cache_write_price_per_million,
        cache_write_1h_price_per_million=row.cache_write_1h_price_per_million,
        origin=row.source or "api",
        pricing_tiers=[_tier(tier, "min_input_tokens", tier.min_input_tokens) for tier in tiers],
        tiers=[_tier(tier, "above_input_tokens", tier.min_input_tokens - 1) for tier in tiers],
    )


def _tier(tier: Tier, threshold: str, tokens: int) -> dict[str, Any]:
    rates = {key: getattr(tier, field) for key, field in TIER_RATES.items()}
    return {threshold: tokens, **{k: v for k, v in rates.items() if v is not None}}


def _stored_tiers(body: SetPricingRequest) -> list[dict[str, Any]] | None:
    """The request's tiers as the pricing.tiers column keeps them; 400 when inconsistent."""
    if body.tiers is not None and body.pricing_tiers is not None:
        raise InvalidRequest("Send tiers or pricing_tiers, not both", param="tiers")
    tiers = body.tiers if body.tiers is not None else body.pricing_tiers
    if not tiers:
        return None
    if body.unit != "tokens":
        raise InvalidRequest("Long-context tiers apply to prices per token only", param="tiers")
    thresholds = [tier.threshold for tier in tiers]
    if len(set(thresholds)) != len(thresholds):
        raise InvalidRequest("Two tiers start at the same prompt size", param="tiers")
    stored = []
    for tier in sorted(tiers, key=lambda t: t.threshold):
        rates = tier.model_dump(include=set(TIER_RATES), exclude_none=True)
        stored.append(
            {
                "min_input_tokens": tier.threshold,
                **{key: f"{value:f}" for key, value in rates.items()},
            }
        )
    return stored


def _check_model_key(model_key: str) -> None:
    provider, sep, model = model_key.partition(":")
    if not sep or not provider or not model:
        raise InvalidRequest(
            f"model_key must look like 'provider:model', got '{model_key}'", param="model_key"
        )


@router.post("", response_model=PricingResponse, dependencies=[Depends(require_master)])
def set_price(body: SetPricingRequest, session: SessionDep, runtime: RuntimeDep) -> Response:
    """Add a price from effective_at (default now); the same instant again replaces it."""
    _check_model_key(body.model_key)
    stored_tiers = _stored_tiers(body)  # refused before anything is written
    now = utcnow()
    effective_at = body.effective_at or now
    row = session.scalars(
        select(Pricing).where(
            Pricing.model_key == body.model_key, Pricing.effective_at == effective_at
        )
    ).first()
    if row is None:
        row = Pricing(model_key=body.model_key, effective_at=effective_at, created_at=now)
        session.add(row)
    fields = body.model_dump(exclude={"model_key", "effective_at", "pricing_tiers", "tiers"})
    for name, value in fields.items():
        setattr(row, name, value)
    row.tiers = stored_tiers
    row.updated_at = now
    session.commit()
    runtime.changed()
    return ExactJSONResponse(pricing_response(row))


@router.post(
    "/import", response_model=ImportPricingResponse, dependencies=[Depends(require_master)]
)
def import_prices(body: ImportPricingRequest, session: SessionDep, runtime: RuntimeDep) -> Response:
    """Add or change prices from genai-prices, effective now (history kept).

    Operator-set prices that differ are kept unless `overwrite`; prices equal to the
    published ones are left alone, so importing twice writes nothing the second time.
    Raises 400 for a provider that does not map to genai-prices.
    """
    unknown = price_import.unknown_providers(body.providers or [])
    if unknown:
        raise InvalidRequest(
            f"provider(s) {', '.join(unknown)} have no genai-prices data; known: "
            + ", ".join(sorted(price_import.PROVIDER_IDS)),
            param="providers",
        )
    now = utcnow()
    found = price_import.quotes(body.providers, body.model, now)
    changes = price_import.plan(session, found, body.overwrite, now)
    written = 0
    if not body.dry_run:
        written = price_import.apply(session, changes, now)
        session.commit()
        runtime.changed()
    return ExactJSONResponse(
        ImportPricingResponse(
            source_version=price_import.package_version(),
            dry_run=body.dry_run,
            effective_at=now,
            written=written,
            changes=[
                PriceImportChange(
                    model_key=c.quote.model_key,
                    action=c.action,
                    input_price_per_million=c.quote.input_per_million,
                    output_price_per_million=c.quote.output_per_million,
                    cache_read_price_per_million=c.quote.cache_read_per_million,
                    cache_write_price_per_million=c.quote.cache_write_per_million,
                    pricing_tiers=[
                        {
                            "min_input_tokens": t.min_input_tokens,
                            **{
                                key: getattr(t, name)
                                for key, name in TIER_RATES.items()
                                if getattr(t, name) is not None
                            },
                        }
                        for t in c.quote.tiers
                    ],
                    current=None if c.current is None else pricing_response(c.current),
                )
                for c in changes
            ],
        )
    )


@router.get("", response_model=list[PricingResponse])
def list_prices(
    _caller: CallerDep, session: ReadSessionDep, skip: Skip = 0, limit: Limit = 100
) -> Response:
    """The price in effect now for every model (one entry per model_key)."""
    now = utcnow()
    latest = (
        select(Pricing.model_key, func.max(Pricing.effective_at).label("at"))
        .where(Pricing.effective_at <= now)
        .group_by(Pricing.model_key)
        .subquery()
    )
    rows = session.scalars(
        select(Pricing)
        .join(
            latest,
            (Pricing.model_key == latest.c.model_key) & (Pricing.effective_at == latest.c.at),
        )
        .order_by(Pricing.model_key)
        .offset(skip)
        .limit(limit)
    )
    return ExactJSONResponse([pricing_response(row) for row in rows])


# Registered before the catch-all path below: model keys may contain '/'.
@router.get("/{model_key:path}/history", response_model=list[PricingResponse])
def history(model_key: str, _caller: CallerDep, session: ReadSessionDep) -> Response:
    """Every entry for a model, newest effective_at first."""
    rows = list(
        session.scalars(
            select(Pricing)
            .where(Pricing.model_key == model_key)
            .order_by(Pricing.effective_at.desc())
        )
    )
    if not rows:
        raise NotFound(f"No pricing for model '{model_key}'")
    return ExactJSONResponse([pricing_response(row) for row in rows])


@router.get("/{model_key:path}", response_model=PricingResponse)
def get(
    model_key: str,
    _caller: CallerDep,
    session: ReadSessionDep,
    as_of: datetime | None = Query(None, description="Instant to price at (default now)"),
) -> Response:
    """The price in effect for a model now, or at `as_of`."""
    at = as_of or utcnow()
    row = price_at(session, model_key, at)
    if row is None:
        raise NotFound(f"No pricing for model '{model_key}' in effect at {at.isoformat()}")
    return ExactJSONResponse(pricing_response(row))


@router.delete("/{model_key:path}", status_code=204, dependencies=[Depends(require_master)])
def delete(
    model_key: str,
    session: SessionDep,
    runtime: RuntimeDep,
    effective_at: datetime | None = Query(
        None, description="Delete only this entry; without it, the whole history"
    ),
) -> Response:
    """Delete one entry (effective_at given) or every entry of the model."""
    statement = sql_delete(Pricing).where(Pricing.model_key == model_key)
    if effective_at is not None:
        statement = statement.where(Pricing.effective_at == effective_at)
    deleted = session.execute(statement).rowcount  # type: ignore[attr-defined]
    if not deleted:
        raise NotFound(
            f"No pricing for model '{model_key}'"
            + (f" effective at {effective_at.isoformat()}" if effective_at else "")
        )
    session.commit()
    runtime.changed()
    return Response(status_code=204)

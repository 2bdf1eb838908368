"""The price cache: LRU with TTL, unknown models kept apart, a change never undone by a load,
one read per model at a time, prices refreshed ahead of their expiry."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from otari_server.accounting.prices import PriceBook
from otari_server.storage.db import create_db_engine, migrate, session_factory
from otari_server.storage.tables import Pricing

WHEN = datetime(2026, 6, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def book(tmp_path: Path, clock: Clock) -> tuple[PriceBook, Session]:
    url = f"sqlite:///{tmp_path / 'prices.db'}"
    migrate(url)
    sessions = session_factory(create_db_engine(url))
    session = sessions()
    session.add(
        Pricing(
            model_key="p:m",
            effective_at=datetime(2026, 1, 1, tzinfo=UTC),
            input_price_per_million=Decimal("2"),
            output_price_per_million=Decimal("8"),
        )
    )
    session.commit()
    return PriceBook(sessions, ttl=10, clock=clock), session


def test_prices_are_cached_for_the_ttl_and_read_again_after_it(tmp_path: Path) -> None:
    clock = Clock()
    prices, session = book(tmp_path, clock)
    first = asyncio.run(prices.at("p:m", WHEN))
    assert first is not None and first.input_per_million == Decimal("2")
    session.query(Pricing).update({"input_price_per_million": Decimal("3")})
    session.commit()
    clock.now += 9
    cached = asyncio.run(prices.at("p:m", WHEN))
    assert cached is not None and cached.input_per_million == Decimal("2")
    clock.now += 2
    fresh = asyncio.run(prices.at("p:m", WHEN))
    assert fresh is not None and fresh.input_per_million == Decimal("3")


def test_a_flood_of_unknown_models_keeps_the_real_prices(tmp_path: Path) -> None:
    clock = Clock()
    prices, session = book(tmp_path, clock)
    assert asyncio.run(prices.at("p:m", WHEN)) is not None
    # Delete the row: a price still found afterwards can only come from the cache.
    session.query(Pricing).delete()
    session.commit()

    async def flood() -> None:
        for i in range(12_000):  # more than the cache holds
            assert await prices.at(f"p:unknown-{i}", WHEN) is None

    asyncio.run(flood())
    kept = asyncio.run(prices.at("p:m", WHEN))
    assert kept is not None and kept.input_per_million == Decimal("2")


def test_clear_forgets_prices_and_unknown_models(tmp_path: Path) -> None:
    clock = Clock()
    prices, session = book(tmp_path, clock)
    assert asyncio.run(prices.at("p:new", WHEN)) is None
    session.add(
        Pricing(
            model_key="p:new",
            effective_at=datetime(2026, 1, 1, tzinfo=UTC),
            input_price_per_million=Decimal("1"),
            output_price_per_million=Decimal("1"),
        )
    )
    session.commit()
    assert asyncio.run(prices.at("p:new", WHEN)) is None  # still the cached "unpriced"
    prices.clear()
    found = asyncio.run(prices.at("p:new", WHEN))
    assert found is not None and found.input_per_million == Decimal("1")


def test_a_price_past_half_its_ttl_is_read_again_in_the_background(tmp_path: Path) -> None:
    clock = Clock()
    prices, session = book(tmp_path, clock)  # ttl 10 s

    async def run() -> Decimal:
        first = await prices.at("p:m", WHEN)
        assert first is not None and first.input_per_million == Decimal("2")
        session.query(Pricing).update({"input_price_per_million": Decimal("3")})
        session.commit()
        clock.now += 6  # past half the ttl, before its end
        served = await prices.at("p:m", WHEN)  # from the cache; the refresh starts
        assert served is not None and served.input_per_million == Decimal("2")
        for _ in range(1000):  # the refresh lands with no request waiting for it
            current = await prices.at("p:m", WHEN)
            assert current is not None
            if current.input_per_million != Decimal("2"):
                return current.input_per_million
            await asyncio.sleep(0.01)
        return Decimal("2")

    assert asyncio.run(run()) == Decimal("3")
    assert clock.now < 50 + 10  # read anew before the entry expired


def test_concurrent_misses_of_one_model_read_the_database_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'prices.db'}"
    migrate(url)
    engine = create_db_engine(url)
    reads: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def count(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if "FROM pricing" in statement:
            reads.append(statement)

    prices = PriceBook(session_factory(engine), ttl=10, clock=Clock())

    async def run() -> list[Any]:
        return await asyncio.gather(*(prices.at("p:none", WHEN) for _ in range(32)))

    assert asyncio.run(run()) == [None] * 32
    assert len(reads) == 1

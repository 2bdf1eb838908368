"""The usage writer: a row the database refuses never holds back the others, a writer that
falls behind takes the instance out of readiness, and rows that cannot be written at
shutdown are spooled and replayed exactly once. Real SQLite and PostgreSQL throughout."""

from __future__ import annotations

import asyncio
import stat
import threading
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, insert, select, text, update

from otari_server.accounting import spool
from otari_server.accounting.ledger import SETTLE_CHUNK, Ledger
from otari_server.accounting.reservations import NO_HOLD, Hold, hold_id
from otari_server.accounting.settlements import Settlement
from otari_server.storage import db
from otari_server.storage.tables import APIKey, Reservation, UsageLog, User, utcnow
from tests.support.gateway import Gateway
from tests.support.procs import wait_until

CENT = Decimal("0.01")


def _row(row_id: str, cost: Decimal, user_id: str = "u") -> Settlement:
    return Settlement(
        hold=NO_HOLD,
        user_id=user_id,
        api_key_id=None,
        model="fake:m",
        provider="fake",
        endpoint="/v1/chat/completions",
        status="success",
        prompt_tokens=1,
        completion_tokens=5,
        cost=cost,
        id=row_id,
        request_id=row_id,
        status_code=200,
    )


def _engine_with_user(database_url: str) -> object:
    db.migrate(database_url)
    engine = db.create_db_engine(database_url)
    with engine.begin() as conn:
        conn.execute(insert(User).values(user_id="u", spend=0, reserved=0, metadata_={}))
    return engine


def _write(engine: object, rows: list[Settlement]) -> Ledger:
    async def run() -> Ledger:
        writer = Ledger(engine, "test-instance", 3600, 0.01)  # type: ignore[arg-type]
        for row in rows:
            writer.record(row)
        writer.start()
        await asyncio.to_thread(writer.stop, 30)
        return writer

    return asyncio.run(run())


def test_a_refused_row_is_isolated_and_the_rest_lands(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = _engine_with_user(database_url)
    good = [_row(f"g{i}", CENT) for i in range(10)]
    # Out of the money column's range on both databases, and a second write of g3's id.
    overflow = _row("overflow", Decimal(10) ** 21)
    duplicate = _row("g3", Decimal("0.5"))
    writer = _write(engine, [*good[:5], overflow, *good[5:], duplicate])
    assert writer.rejected == 2 and writer.depth == 0
    with engine.connect() as conn:  # type: ignore[attr-defined]
        ids = sorted(conn.execute(select(UsageLog.id)).scalars())
        spend = conn.execute(select(User.spend).where(User.user_id == "u")).scalar_one()
        g3 = conn.execute(select(UsageLog.cost).where(UsageLog.id == "g3")).scalar_one()
    assert ids == sorted(f"g{i}" for i in range(10))
    assert spend == Decimal("0.1") and g3 == CENT  # the duplicate was not billed twice
    refused = [r.getMessage() for r in caplog.records if "refused by the database" in r.message]
    assert len(refused) == 2
    assert any("id=overflow" in message for message in refused)
    engine.dispose()  # type: ignore[attr-defined]


def test_token_columns_hold_64_bit_counts(database_url: str) -> None:
    engine = _engine_with_user(database_url)
    big = _row("big", CENT)
    big.prompt_tokens = 3_000_000_000  # over PostgreSQL's 32-bit INTEGER
    writer = _write(engine, [big])
    assert writer.rejected == 0
    with engine.connect() as conn:  # type: ignore[attr-defined]
        stored = conn.execute(select(UsageLog.prompt_tokens, UsageLog.total_tokens)).one()
    assert tuple(stored) == (3_000_000_000, 3_000_000_005)
    engine.dispose()  # type: ignore[attr-defined]


def test_spooled_rows_are_replayed_exactly_once(database_url: str, tmp_path: Path) -> None:
    engine = _engine_with_user(database_url)
    path = spool.spool_path("host:8000")
    rows = [_row("s1", CENT), _row("s2", Decimal("0.02"))]
    spool.spool(path, rows)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert spool.replay_spool(engine, "host:8000", "host:8000") == 2  # type: ignore[arg-type]
    assert not path.exists()
    assert spool.replay_spool(engine, "host:8000", "host:8000") == 0  # type: ignore[arg-type]
    # A replay interrupted after its commit (file still there) bills nothing twice.
    spool.spool(path, rows)
    spool.replay_spool(engine, "host:8000", "host:8000")  # type: ignore[arg-type]
    with engine.connect() as conn:  # type: ignore[attr-defined]
        count = conn.execute(select(func.count()).select_from(UsageLog)).scalar_one()
        spend = conn.execute(select(User.spend).where(User.user_id == "u")).scalar_one()
    assert count == 2 and spend == Decimal("0.03")
    engine.dispose()  # type: ignore[attr-defined]


class _UsageTableLock:
    """Another session holding the usage table (PostgreSQL): usage rows cannot be written
    while everything else (keys, prices, the readiness ping) keeps working. SQLite has no
    table locks: its one write lock would stop the whole gateway, not only usage."""

    def __init__(self, database_url: str) -> None:
        self.engine = create_engine(db.normalize_url(database_url))

    def __enter__(self) -> _UsageTableLock:
        self.conn = self.engine.connect()
        self.transaction = self.conn.begin()
        self.conn.execute(text("LOCK TABLE usage_logs IN ACCESS EXCLUSIVE MODE"))
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.transaction.rollback()
        self.conn.close()
        self.engine.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_readiness_says_503_while_usage_cannot_be_written_and_recovers(
    gateway_factory: Callable[..., Gateway], database_url: str
) -> None:
    gateway = gateway_factory(usage_max_lag=0.5)
    gateway.price("fake:gpt-4o-mini", "0", "2000")
    client = gateway.client(gateway.key())
    ready = f"{gateway.url}/health/readiness"
    assert httpx.get(ready).status_code == 200
    with _UsageTableLock(database_url):
        client.chat.completions.create(
            model="fake:gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )

        def not_ready() -> bool:
            return httpx.get(ready, timeout=10).status_code == 503

        wait_until(not_ready, 15, "readiness to report the usage lag")
        answer = httpx.get(ready, timeout=10).json()
        assert answer["status"] == "not ready" and answer["database"] == "ok"
        assert answer["usage"].startswith("usage not written for ")
        assert "usage_max_lag is 0.5s" in answer["usage"]
    wait_until(
        lambda: httpx.get(ready, timeout=10).status_code == 200,
        15,
        "readiness to recover by itself",
    )
    [row] = gateway.usage(1)
    assert row["cost"] == CENT and row["status_code"] == 200


def test_one_batch_settles_spend_counts_releases_and_key_spend_together(
    database_url: str,
) -> None:
    """A batch's users, holds and user-less keys are settled in one round: spend and request
    and token counts added, holds released but never below what they still hold (part of
    this one was reclaimed meanwhile), a failure before any token uses nothing up."""
    engine = _engine_with_user(database_url)
    now = utcnow()
    with engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(
            update(User)
            .where(User.user_id == "u")
            .values(reserved=Decimal("0.05"), reserved_requests=2, reserved_tokens=300)
        )
        conn.execute(
            insert(APIKey).values(
                id="k-solo", key_hash="h" * 64, key_prefix="sk-", spend=0, metadata_={}
            )
        )
        # What this instance still holds for "u": less than the batch releases.
        conn.execute(
            insert(Reservation).values(
                id=hold_id("test-instance", "u"),
                user_id="u",
                amount=Decimal("0.05"),
                requests=2,
                tokens=300,
                instance_id="test-instance",
                created_at=now,
                expires_at=now + timedelta(hours=1),
            )
        )
    served = _row("a", Decimal("0.0123456789"))
    served.hold = Hold("u", Decimal("0.04"), 1, 200)
    failed = _row("b", Decimal(0))
    failed.status, failed.prompt_tokens, failed.completion_tokens = "error", None, None
    failed.hold = Hold("u", Decimal("0.03"), 1, 200)
    solo = _row("c", Decimal("0.002"), user_id=None)  # type: ignore[arg-type]
    solo.api_key_id = "k-solo"
    _write(engine, [served, failed, solo])
    with engine.connect() as conn:  # type: ignore[attr-defined]
        user = conn.execute(
            select(
                User.spend,
                User.reserved,
                User.requests,
                User.tokens,
                User.reserved_requests,
                User.reserved_tokens,
            ).where(User.user_id == "u")
        ).one()
        hold = conn.execute(
            select(Reservation.amount, Reservation.requests, Reservation.tokens)
        ).one()
        key_spend = conn.execute(select(APIKey.spend).where(APIKey.id == "k-solo")).scalar_one()
    # 0.07 and 400 tokens released, but only 0.05 and 300 were still held.
    assert tuple(user) == (Decimal("0.0123456789"), Decimal(0), 1, 6, 0, 0)
    assert tuple(hold) == (Decimal(0), 0, 0)
    assert key_spend == Decimal("0.002")
    engine.dispose()  # type: ignore[attr-defined]


def test_a_reservation_waits_for_one_chunk_of_a_settlement_backlog_not_all_of_it(
    database_url: str,
) -> None:
    """A backlog of settlements is written SETTLE_CHUNK rows per transaction, and a
    reservation queued meanwhile is answered between chunks: the writer is held inside its
    first and third chunks, and the reservation comes back while the fourth is still
    queued. Written in one piece, the backlog would have been gone before the answer."""
    engine = _engine_with_user(database_url)
    rows = [_row(f"r{i}", CENT) for i in range(4 * SETTLE_CHUNK)]
    in_first, release_first, release_third = threading.Event(), threading.Event(), threading.Event()
    chunks = 0

    def settled(users: set[str]) -> None:
        nonlocal chunks
        chunks += 1
        if chunks == 1:
            in_first.set()
            release_first.wait(30)
        elif chunks == 3:
            release_third.wait(30)

    async def run() -> tuple[Hold, int, Ledger]:
        writer = Ledger(engine, "test-instance", 3600, 0.01)  # type: ignore[arg-type]
        writer.on_settled = settled
        for row in rows:
            writer.record(row)
        writer.start()
        assert await asyncio.to_thread(in_first.wait, 30)
        reservation = asyncio.ensure_future(writer.reserve("u", CENT))
        await asyncio.sleep(0)  # one turn of the loop: the ask is queued
        release_first.set()
        hold = await asyncio.wait_for(reservation, 30)
        queued = writer.depth
        release_third.set()
        await asyncio.to_thread(writer.stop, 30)
        return hold, queued, writer

    hold, queued, writer = asyncio.run(run())
    assert isinstance(hold, Hold)  # answered (a user without a budget holds nothing)
    assert queued >= SETTLE_CHUNK
    assert chunks == 4 and writer.depth == 0 and writer.rejected == 0
    with engine.connect() as conn:  # type: ignore[attr-defined]
        written = conn.execute(select(func.count()).select_from(UsageLog)).scalar_one()
        spend = conn.execute(select(User.spend).where(User.user_id == "u")).scalar_one()
    assert written == len(rows)
    assert spend == CENT * len(rows)
    engine.dispose()  # type: ignore[attr-defined]

"""Reads never take SQLite's write lock: GET routes and cache loads use deferred transactions."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.routing import APIRoute
from sqlalchemy import select
from sqlalchemy.engine import make_url

from otari_server.app import create_app
from otari_server.deps import get_read_session, get_session
from otari_server.jsonio import loads
from otari_server.storage import db
from otari_server.storage.tables import UsageLog
from tests.support.gateway import Gateway
from tests.support.servers import make_settings

# GET routes that write on purpose: reading a user renews its budget period when it is due.
WRITING_GETS = {"/v1/users", "/v1/users/{user_id}"}


def _insert_with_no_wait(path: str) -> None:
    """Write from another connection that refuses to wait for the lock (busy timeout 0)."""
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute(
            "INSERT INTO rate_counters (subject, window_start, requests, tokens) "
            "VALUES (?, 1, 1, 1)",
            (uuid.uuid4().hex,),
        )
        other.execute("COMMIT")
    finally:
        other.close()


def test_a_read_session_leaves_the_write_lock_free(sqlite_url: str) -> None:
    db.migrate(sqlite_url)
    engine = db.create_db_engine(sqlite_url)
    path = str(make_url(sqlite_url).database)
    try:
        with db.read_session_factory(engine)() as reader:
            # The read transaction is open (a snapshot is held) while the other client writes.
            assert list(reader.scalars(select(UsageLog))) == []
            assert reader.in_transaction()
            _insert_with_no_wait(path)
            assert db.ping(engine) == db.schema_head()
        with db.session_factory(engine)() as writer:
            writer.scalars(select(UsageLog)).all()
            # A writing session still holds the lock from its first statement.
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                _insert_with_no_wait(path)
    finally:
        engine.dispose()


def test_every_get_route_reads_through_a_read_session(sqlite_url: str) -> None:
    app = create_app(make_settings(sqlite_url))
    checked = 0
    routes = [
        inner
        for outer in app.routes
        for inner in getattr(getattr(outer, "original_router", None), "routes", [outer])
    ]
    for route in routes:
        if not isinstance(route, APIRoute) or "GET" not in route.methods:
            continue
        calls = {dep.call for dep in route.dependant.dependencies}
        if route.path in WRITING_GETS:
            assert get_session in calls, route.path
            continue
        assert get_session not in calls, f"GET {route.path} takes a writing session"
        checked += get_read_session in calls
    assert checked >= 10  # budgets, keys, models, pricing, usage, users' usage, summary


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """The lock is SQLite's: the gateway in this module runs on a SQLite file only."""
    return sqlite_url


def _usage_of(gateway: Gateway, user_id: str, count: int) -> list[dict[str, Any]]:
    """The user's usage rows once all `count` are written (the writer is write-behind)."""
    deadline = time.monotonic() + 10
    while True:
        rows: list[dict[str, Any]] = loads(gateway.admin.get(f"/v1/users/{user_id}/usage").text)
        if len(rows) >= count or time.monotonic() > deadline:
            assert len(rows) == count
            return rows
        time.sleep(0.02)


def _seed(database_url: str, count: int) -> None:
    engine = db.create_db_engine(database_url)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    try:
        with db.session_factory(engine).begin() as session:
            session.add_all(
                UsageLog(
                    id=f"seed-{i:06d}",
                    user_id=f"u{i % 7}",
                    api_key_id=None,
                    timestamp=start + timedelta(seconds=i),
                    model="fake:gpt-4o-mini",
                    provider="fake",
                    endpoint="/v1/chat/completions",
                    prompt_tokens=1,
                    completion_tokens=1,
                    total_tokens=2,
                    cost=Decimal("0.000001"),
                    status="success",
                )
                for i in range(count)
            )
    finally:
        engine.dispose()


def test_budgeted_chat_keeps_working_while_deep_usage_reads_loop(
    gateway: Gateway, sqlite_url: str
) -> None:
    _seed(sqlite_url, 3000)
    gateway.user("alice", max_budget="10")
    client = gateway.client(gateway.key(user_id="alice"))
    reads: list[int] = []
    first_read = threading.Event()
    stop = threading.Event()

    def read_deep_pages() -> None:
        paths = [
            "/v1/usage?skip=2900&limit=1000",
            "/v1/users/alice/usage?skip=0",
            "/v1/usage/summary?group_by=user",
            "/health/readiness",
        ]
        while not stop.is_set():
            for path in paths:
                reads.append(gateway.admin.get(path).status_code)
            first_read.set()

    reader = threading.Thread(target=read_deep_pages)
    reader.start()
    try:
        assert first_read.wait(30)
        reads_before = len(reads)
        replies = [
            client.chat.completions.create(
                model="fake:gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
            for _ in range(20)
        ]
        reads_during = len(reads) - reads_before
        # Every chat request finished before the reader stopped: they ran while reads did.
        assert reader.is_alive()
    finally:
        stop.set()
        reader.join(30)
    assert [r.choices[0].message.content for r in replies] == ["Hello from the fake provider"] * 20
    assert reads_during > 0
    assert set(reads) == {200}
    rows = _usage_of(gateway, "alice", 20)
    assert {row["status"] for row in rows} == {"success"}
    # 1 input token at $1/M plus 5 output tokens at $2/M, twenty times, all on the budget.
    assert sum(row["cost"] for row in rows) == Decimal("0.00022")
    assert gateway.get_user("alice")["spend"] == Decimal("0.00022")

"""Summaries read from usage_totals equal the sums of the raw rows, on both databases.

Every query here is answered by the gateway and compared with the same sums computed in
Python from the rows inserted (exact Decimals): whole days from the totals, partial days at
mid-day bounds from the raw rows, before and after pruning; and the totals the ledger keeps
as requests are served equal those rebuilt from the rows.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import func, select
from starlette.testclient import TestClient

from otari_server.accounting import usage_totals
from otari_server.jsonio import loads
from otari_server.storage.db import alembic_config, create_db_engine, migrate, session_factory
from otari_server.storage.tables import UsageDaily, UsageLog, UsageTotal
from tests.support.factories import MASTER
from tests.support.gateway import Gateway
from tests.support.usage_rows import insert, row

DAY0 = datetime(2026, 5, 1, tzinfo=UTC)
FIELD = {"user": "user_id", "key": "api_key_id", "model": "model", "provider": "provider"}


def _rows(count: int, seed: int = 11) -> list[dict[str, Any]]:
    """Rows over six days: users and keys sometimes missing, errors, unpriced rows, costs
    with ten decimal places, a few exactly at midnight."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        when = DAY0 + timedelta(seconds=rng.randrange(6 * 86400))
        if i % 25 == 0:
            when = DAY0 + timedelta(days=rng.randrange(6))
        model = rng.choice(["openai:gpt-4o", "openai:gpt-4o-mini", "claude:sonnet"])
        fields = row(
            f"r{i:04d}",
            when,
            user_id=rng.choice(["alice", "bob", "carol", None]),
            api_key_id=rng.choice(["key-a", "key-b", None]),
            model=model,
            status=rng.choice(["success"] * 6 + ["error"]),
            prompt=rng.randrange(0, 500),
            completion=rng.randrange(0, 200),
            cost=str(Decimal(rng.randrange(0, 10**12)).scaleb(-10)),
        )
        if i % 17 == 0:
            fields["provider"] = None
        if i % 13 == 0:
            fields["cost"] = None
            fields["prompt_tokens"] = None
        rows.append(fields)
    return rows


def _group_value(dimension: str, fields: dict[str, Any]) -> Any:
    if dimension == "day":
        return fields["timestamp"].strftime("%Y-%m-%d")
    if dimension == "hour":
        return fields["timestamp"].replace(minute=0, second=0, microsecond=0).isoformat()
    return fields[FIELD[dimension]]


def _expected(
    rows: Iterable[dict[str, Any]], group_by: list[str], params: dict[str, Any]
) -> dict[str, Any]:
    """The summary computed from the rows themselves."""
    start, end = params.get("start_date"), params.get("end_date")
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for fields in rows:
        if start is not None and fields["timestamp"] < start:
            continue
        if end is not None and fields["timestamp"] >= end:
            continue
        if any(
            name in params and fields[name] not in params[name]
            for name in ("user_id", "api_key_id", "model", "status")
        ):
            continue
        key = tuple(_group_value(d, fields) for d in group_by)
        sums = groups.setdefault(
            key,
            {
                "requests": 0,
                "errors": 0,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "cost": Decimal(0),
            },
        )
        sums["requests"] += 1
        sums["errors"] += fields["status"] != "success"
        sums["prompt_tokens"] += fields["prompt_tokens"] or 0
        sums["completion_tokens"] += fields["completion_tokens"] or 0
        sums["cost"] += fields["cost"] or Decimal(0)
    total = {
        "requests": 0,
        "errors": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost": Decimal(0),
    }
    answer = []
    for key in sorted(groups, key=lambda k: tuple((v is None, str(v or "")) for v in k)):
        for name, value in groups[key].items():
            total[name] += value
        names = {
            d: ("day" if d == "day" else "hour" if d == "hour" else FIELD[d]) for d in group_by
        }
        answer.append({**{names[d]: v for d, v in zip(group_by, key, strict=True)}, **groups[key]})
    return {"group_by": group_by, "groups": answer, "total": total}


def _summary(client: TestClient, group_by: list[str], params: dict[str, Any]) -> Any:
    query = [("group_by", g) for g in group_by]
    for name, value in params.items():
        if isinstance(value, datetime):
            query.append((name, value.isoformat()))
        else:
            query.extend((name, v) for v in value)
    response = client.get(f"/v1/usage/summary?{urlencode(query)}", headers=MASTER)
    assert response.status_code == 200, response.text
    return loads(response.text)


GROUPINGS = [
    ["user"],
    ["key"],
    ["model"],
    ["provider"],
    ["day"],
    ["user", "day"],
    ["day", "model"],
    ["key", "day"],
    ["model", "key"],
]


def _periods(pruned_until: datetime | None = None) -> list[dict[str, Any]]:
    """Whole-day, mid-day and open periods (none with a bound inside a pruned day)."""
    day = timedelta(days=1)
    periods: list[dict[str, Any]] = [
        {},
        {"start_date": DAY0 + 2 * day},
        {"end_date": DAY0 + 4 * day},
        {"start_date": DAY0 + day, "end_date": DAY0 + 5 * day},
        {"start_date": DAY0 + 3 * day + timedelta(hours=7, minutes=13)},
        {"end_date": DAY0 + 4 * day + timedelta(hours=15, seconds=1)},
        {
            "start_date": DAY0 + 2 * day + timedelta(hours=20),
            "end_date": DAY0 + 5 * day + timedelta(hours=3, microseconds=5),
        },
        # Within one day, and across one midnight with no whole day between.
        {
            "start_date": DAY0 + 3 * day + timedelta(hours=2),
            "end_date": DAY0 + 3 * day + timedelta(hours=19),
        },
        {
            "start_date": DAY0 + 4 * day + timedelta(hours=22),
            "end_date": DAY0 + 5 * day + timedelta(hours=1),
        },
    ]
    if pruned_until is None:
        periods.append(
            {
                "start_date": DAY0 + timedelta(hours=5),
                "end_date": DAY0 + 2 * day + timedelta(hours=12),
            }
        )
    return periods


FILTERS: list[dict[str, Any]] = [
    {},
    {"user_id": ["alice"]},
    {"status": ["error"]},
    {"model": ["claude:sonnet", "openai:gpt-4o"]},
    {"api_key_id": ["key-b"], "status": ["success"]},
]


def _check_all(
    client: TestClient, rows: list[dict[str, Any]], periods: list[dict[str, Any]]
) -> int:
    checked = 0
    for period in periods:
        for extra in FILTERS:
            for group_by in GROUPINGS:
                params = {**period, **extra}
                got = _summary(client, group_by, params)
                assert got == _expected(rows, group_by, params), (group_by, params)
                checked += 1
    return checked


def test_summaries_equal_the_raw_rows_before_and_after_pruning(
    client: TestClient, database_url: str
) -> None:
    rows = _rows(600)
    # Several transactions, so totals rows are added to, not only created.
    for part in range(0, len(rows), 100):
        insert(database_url, rows[part : part + 100])
    assert _check_all(client, rows, _periods()) == 10 * 5 * 9
    hourly = {
        "start_date": DAY0 + timedelta(days=1, hours=3),
        "end_date": DAY0 + timedelta(days=3, hours=1),
    }
    assert _summary(client, ["hour"], hourly) == _expected(rows, ["hour"], hourly)
    pruned = client.post("/v1/usage/prune", json={"before": "2026-05-03T00:00:00Z"}, headers=MASTER)
    assert pruned.status_code == 200, pruned.text
    gone = [r for r in rows if r["timestamp"] < DAY0 + timedelta(days=2)]
    assert loads(pruned.text)["rows"] == len(gone) > 0
    # The same answers from what is left: totals for whole days, raw rows at the edges.
    assert _check_all(client, rows, _periods(pruned_until=DAY0 + timedelta(days=2))) > 0
    # A late row in a pruned day is counted once, whichever way the summary is answered.
    late = row("late", DAY0 + timedelta(hours=6), user_id="alice", cost="0.0000000007")
    insert(database_url, [late])
    rows.append(late)
    for group_by in (["user"], ["user", "model"]):
        assert _summary(client, group_by, {}) == _expected(rows, group_by, {})


def test_totals_keep_each_rows_cost_as_stored(client: TestClient, database_url: str) -> None:
    # Costs below the tenth place are stored as 0 each; their totals must say 0 too (not
    # the 0.0000000001 their sum rounds to).
    insert(
        database_url,
        [row(f"t{i}", DAY0 + timedelta(hours=i), cost="0.00000000004") for i in range(3)],
    )
    listed = {r["id"]: r["cost"] for r in loads(client.get("/v1/usage", headers=MASTER).text)}
    assert listed == {"t0": 0, "t1": 0, "t2": 0}
    got = _summary(client, ["day"], {})
    assert got["total"]["cost"] == 0 and got["total"]["requests"] == 3


def _totals(database_url: str) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as conn:
            keys = (UsageTotal.dimension, UsageTotal.day, UsageTotal.value, UsageTotal.status)
            found = conn.execute(
                select(
                    *keys,
                    func.sum(UsageTotal.requests),
                    func.sum(UsageTotal.prompt_tokens),
                    func.sum(UsageTotal.completion_tokens),
                    func.sum(UsageTotal.cost),
                ).group_by(*keys)
            )
            return {tuple(r[:4]): tuple(r[4:]) for r in found}
    finally:
        engine.dispose()


def _rebuild(database_url: str) -> int:
    engine = create_db_engine(database_url)
    try:
        with engine.begin() as conn:
            return usage_totals.rebuild(conn)
    finally:
        engine.dispose()


@pytest.mark.usefixtures("client")
def test_rebuild_from_rows_equals_the_totals_kept(database_url: str) -> None:
    rows = _rows(300, seed=5)
    insert(database_url, rows[:150])
    insert(database_url, rows[150:])
    kept = _totals(database_url)
    assert len(kept) > 20
    assert _rebuild(database_url) == len(kept)
    assert _totals(database_url) == kept


def test_the_ledger_keeps_totals_as_requests_are_served(gateway: Gateway) -> None:
    gateway.user("alice")
    alice = gateway.client(gateway.key(user_id="alice"))
    anyone = gateway.client(gateway.key())
    for client, model in (
        (alice, "fake:gpt-4o-mini"),
        (anyone, "fake:gpt-4o-mini"),
        (alice, "claude:claude-sonnet"),
        (alice, "fake:gpt-4o-mini"),
    ):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    rows = gateway.usage(4)
    for fields in rows:
        fields["timestamp"] = datetime.fromisoformat(fields["timestamp"])
    for group_by in (["user"], ["key"], ["model"], ["provider"], ["day"]):
        response = gateway.admin.get("/v1/usage/summary", params={"group_by": group_by})
        assert response.status_code == 200, response.text
        answer = loads(response.text)
        assert answer == _expected(rows, group_by, {}), group_by
        assert answer["total"]["requests"] == 4
    assert answer["total"]["cost"] == sum(r["cost"] for r in rows) > 0


def test_migration_counts_existing_rows_live_and_pruned(database_url: str) -> None:
    # The revision before usage_totals, whatever the chain is called after merges.
    before = ScriptDirectory.from_config(alembic_config(database_url)).get_revision("0010")
    migrate(database_url, str(before.down_revision))
    rows = _rows(200, seed=3)
    engine = create_db_engine(database_url)
    try:
        with session_factory(engine).begin() as session:
            session.add_all(UsageLog(**fields) for fields in rows)
            session.add(
                UsageDaily(
                    day=date(2026, 4, 30),
                    user_id="alice",
                    api_key_id=None,
                    model="openai:gpt-4o",
                    provider=None,
                    status="error",
                    requests=3,
                    prompt_tokens=30,
                    completion_tokens=0,
                    total_tokens=30,
                    cost=Decimal("0.0000000123"),
                )
            )
    finally:
        engine.dispose()
    migrate(database_url)
    migrated = _totals(database_url)
    assert migrated[("user", date(2026, 4, 30), "alice", "error")] == (
        3,
        30,
        0,
        Decimal("0.0000000123"),
    )
    assert migrated[("provider", date(2026, 4, 30), "", "error")][0] == 3
    assert sum(v[0] for k, v in migrated.items() if k[0] == "model") == len(rows) + 3
    _rebuild(database_url)
    assert _totals(database_url) == migrated

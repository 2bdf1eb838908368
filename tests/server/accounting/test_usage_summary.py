"""GET /v1/usage/summary and POST /v1/usage/prune: exact sums over live rows and roll-ups."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from starlette.testclient import TestClient

from otari_server.app import create_app
from otari_server.jsonio import loads
from otari_server.storage.db import migrate
from tests.support.factories import MASTER, make_key
from tests.support.servers import make_settings
from tests.support.usage_rows import insert, row

D1 = datetime(2026, 3, 1, 9, 15, tzinfo=UTC)
D2 = datetime(2026, 3, 2, 17, 40, tzinfo=UTC)
D3 = datetime(2026, 3, 3, 8, 5, tzinfo=UTC)


def _seed(database_url: str) -> None:
    insert(
        database_url,
        [
            row("a1", D1, cost="0.0000000375", prompt=1, completion=0),
            row(
                "a2",
                D1 + timedelta(hours=1),
                cost="1.1",
                model="claude:sonnet",
                status="error",
                prompt=7,
                completion=0,
            ),
            row("b1", D1 + timedelta(minutes=5), user_id="bob", api_key_id="key-b", cost="0.2"),
            row("a3", D2, cost="2.25", prompt=100, completion=50),
            row(
                "b2",
                D2 + timedelta(minutes=1),
                user_id="bob",
                api_key_id="key-b",
                model="claude:sonnet",
                cost="0.0000000001",
            ),
            row("n1", D3, user_id=None, api_key_id="key-n", cost="3"),
        ],
    )


def _summary(client: TestClient, query: str) -> dict[str, Any]:
    response = client.get(f"/v1/usage/summary?{query}", headers=MASTER)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = loads(response.text)
    return body


TOTAL = {
    "requests": 6,
    "errors": 1,
    "prompt_tokens": 138,
    "completion_tokens": 65,
    "cost": Decimal("6.5500000376"),
}


def _by_user() -> list[dict[str, Any]]:
    return [
        {
            "user_id": "alice",
            "requests": 3,
            "errors": 1,
            "prompt_tokens": 108,
            "completion_tokens": 50,
            "cost": Decimal("3.3500000375"),
        },
        {
            "user_id": "bob",
            "requests": 2,
            "errors": 0,
            "prompt_tokens": 20,
            "completion_tokens": 10,
            "cost": Decimal("0.2000000001"),
        },
        {
            "user_id": None,
            "requests": 1,
            "errors": 0,
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "cost": Decimal("3"),
        },
    ]


def test_summary_by_user_and_by_day_is_exact(client: TestClient, database_url: str) -> None:
    _seed(database_url)
    by_user = _summary(client, "group_by=user")
    assert by_user["group_by"] == ["user"]
    assert by_user["groups"] == _by_user()
    assert by_user["total"] == TOTAL
    by_day = _summary(client, "group_by=day")["groups"]
    assert [(g["day"], g["requests"], g["cost"]) for g in by_day] == [
        ("2026-03-01", 3, Decimal("1.3000000375")),
        ("2026-03-02", 2, Decimal("2.2500000001")),
        ("2026-03-03", 1, Decimal("3")),
    ]
    # The wire form is plain decimal notation, never an exponent.
    raw = client.get("/v1/usage/summary?group_by=user", headers=MASTER).text
    assert '"cost":3.3500000375' in raw and '"cost":6.5500000376' in raw and "E-" not in raw


def test_summary_two_dimensions_hour_provider_and_filters(
    client: TestClient, database_url: str
) -> None:
    _seed(database_url)
    pairs = _summary(client, "group_by=model&group_by=key")["groups"]
    assert [(g["model"], g["api_key_id"], g["requests"]) for g in pairs] == [
        ("claude:sonnet", "key-a", 1),
        ("claude:sonnet", "key-b", 1),
        ("openai:gpt-4o", "key-a", 2),
        ("openai:gpt-4o", "key-b", 1),
        ("openai:gpt-4o", "key-n", 1),
    ]
    assert set(pairs[0]) == {
        "model",
        "api_key_id",
        "requests",
        "errors",
        "prompt_tokens",
        "completion_tokens",
        "cost",
    }
    hours = _summary(client, "group_by=hour&user_id=alice&end_date=2026-03-02T00:00:00Z")
    assert [(g["hour"], g["requests"]) for g in hours["groups"]] == [
        ("2026-03-01T09:00:00+00:00", 1),
        ("2026-03-01T10:00:00+00:00", 1),
    ]
    providers = _summary(client, "group_by=provider&status=success")
    assert [(g["provider"], g["requests"], g["cost"]) for g in providers["groups"]] == [
        ("claude", 1, Decimal("0.0000000001")),
        ("openai", 4, Decimal("5.4500000375")),
    ]
    window = _summary(
        client,
        "group_by=user&start_date=2026-03-02T00:00:00Z"
        "&api_key_id=key-a&api_key_id=key-b&model=openai:gpt-4o",
    )
    assert [(g["user_id"], g["cost"]) for g in window["groups"]] == [("alice", Decimal("2.25"))]
    empty = _summary(client, "group_by=day&user_id=nobody")
    assert empty["groups"] == [] and empty["total"]["cost"] == 0


def test_summary_rejects_bad_group_by_and_is_master_only(client: TestClient) -> None:
    for query in (
        "",
        "group_by=team",
        "group_by=user&group_by=user",
        "group_by=user&group_by=day&group_by=model",
    ):
        response = client.get(f"/v1/usage/summary?{query}", headers=MASTER)
        assert response.status_code in (400, 422), (query, response.text)
    key = make_key(client)["key"]
    assert (
        client.get(
            "/v1/usage/summary?group_by=user", headers={"Authorization": f"Bearer {key}"}
        ).status_code
        == 403
    )


def test_prune_rolls_up_so_summaries_stay_exact(client: TestClient, database_url: str) -> None:
    _seed(database_url)
    before = {
        q: _summary(client, q)
        for q in (
            "group_by=user",
            "group_by=day",
            "group_by=model&group_by=key",
            "group_by=provider&status=error",
            "group_by=user&start_date=2026-03-02T00:00:00Z",
            "group_by=day&end_date=2026-03-02T00:00:00Z&user_id=bob",
        )
    }
    dry = client.post(
        "/v1/usage/prune", json={"before": "2026-03-02T23:00:00Z", "dry_run": True}, headers=MASTER
    )
    assert dry.status_code == 200, dry.text
    # Rounded down to midnight: only 1 March's three rows would go.
    assert loads(dry.text) == {
        "before": "2026-03-02T00:00:00+00:00",
        "rows": 3,
        "cost": Decimal("1.3000000375"),
        "dry_run": True,
    }
    assert len(client.get("/v1/usage", headers=MASTER).json()) == 6
    pruned = client.post("/v1/usage/prune", json={"before": "2026-03-03T00:00:00Z"}, headers=MASTER)
    assert loads(pruned.text) == {
        "before": "2026-03-03T00:00:00+00:00",
        "rows": 5,
        "cost": Decimal("3.5500000376"),
        "dry_run": False,
    }
    assert [r["id"] for r in client.get("/v1/usage", headers=MASTER).json()] == ["n1"]
    for query, answer in before.items():
        assert _summary(client, query) == answer, query
    # Hours of a pruned day are gone: asking for them is a clear 400, not a wrong answer.
    hourly = client.get("/v1/usage/summary?group_by=hour", headers=MASTER)
    assert hourly.status_code == 400 and "pruned" in hourly.text
    assert _summary(client, "group_by=hour&start_date=2026-03-03T00:00:00Z")["groups"] == [
        {
            "hour": "2026-03-03T08:00:00+00:00",
            "requests": 1,
            "errors": 0,
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "cost": Decimal("3"),
        }
    ]
    # A bound inside a pruned day would count it wholly or not at all: a 400, not a wrong sum.
    for bound in ("start_date=2026-03-01T02:00:00Z", "end_date=2026-03-02T12:00:00Z"):
        split = client.get(f"/v1/usage/summary?group_by=day&{bound}", headers=MASTER)
        assert split.status_code == 400 and "midnight UTC" in split.text, bound
    # Pruning again finds nothing; rows of an already rolled-up day add to its roll-up.
    insert(database_url, [row("late", D1 + timedelta(hours=3), cost="0.5")])
    again = client.post("/v1/usage/prune", json={"before": "2026-03-03T00:00:00Z"}, headers=MASTER)
    assert loads(again.text)["rows"] == 1
    alice = _summary(client, "group_by=user&user_id=alice")["groups"]
    assert alice[0]["requests"] == 4 and alice[0]["cost"] == Decimal("3.8500000375")


def test_prune_rejects_bad_bodies(client: TestClient) -> None:
    for body in ({}, {"before": "soon"}, {"before": "2026-03-01", "dryrun": True}):
        assert client.post("/v1/usage/prune", json=body, headers=MASTER).status_code == 422


def test_prune_takes_a_bare_date_as_utc_midnight(client: TestClient, database_url: str) -> None:
    _seed(database_url)
    dry = client.post(
        "/v1/usage/prune", json={"before": "2026-03-02", "dry_run": True}, headers=MASTER
    )
    assert loads(dry.text)["before"] == "2026-03-02T00:00:00+00:00"
    assert loads(dry.text)["rows"] == 3


def test_retention_job_rolls_up_old_rows_in_the_background(database_url: str) -> None:
    now = datetime.now(UTC)
    old = now - timedelta(days=10)
    recent = now - timedelta(hours=1)
    migrate(database_url)
    insert(
        database_url,
        [
            row("old1", old, cost="0.0000000375"),
            row("old2", old + timedelta(seconds=1), user_id="bob", cost="1"),
            row("new1", recent, cost="2"),
        ],
    )
    settings = make_settings(database_url, usage_retention_days=3)
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 30
        while len(client.get("/v1/usage", headers=MASTER).json()) > 1:
            assert time.monotonic() < deadline, "retention job did not prune"
            time.sleep(0.05)
        assert [r["id"] for r in client.get("/v1/usage", headers=MASTER).json()] == ["new1"]
        by_user = _summary(client, "group_by=user")
        assert [(g["user_id"], g["requests"], g["cost"]) for g in by_user["groups"]] == [
            ("alice", 2, Decimal("2.0000000375")),
            ("bob", 1, Decimal("1")),
        ]
        by_day = _summary(client, "group_by=day")["groups"]
        assert [(g["day"], g["requests"]) for g in by_day] == [
            (old.strftime("%Y-%m-%d"), 2),
            (recent.strftime("%Y-%m-%d"), 1),
        ]


def test_instants_out_of_range_are_400(client: TestClient) -> None:
    for path in (
        "/v1/usage?start_date=0001-01-01T00:00:00%2B01:00",
        "/v1/usage/summary?group_by=day&end_date=9999-12-31T23:00:00Z",
        "/v1/usage/summary?group_by=user&start_date=0001-01-01T00:00:00Z",
    ):
        response = client.get(path, headers=MASTER)
        assert response.status_code == 400 and "out of range" in response.text, path
    response = client.post(
        "/v1/usage/prune", json={"before": "0001-01-01T00:30:00+01:00"}, headers=MASTER
    )
    assert response.status_code == 400 and "before" in response.text

"""User management: soft delete keeps history, restore on re-create, budget attachment."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from starlette.testclient import TestClient

from otari_server.storage.db import create_db_engine, session_factory
from otari_server.storage.tables import UsageLog
from tests.support.factories import MASTER, make_budget, make_key, make_user


def add_usage(database_url: str, user_id: str, when: datetime, cost: str = "0.5") -> str:
    """Insert a usage row directly (there is no generation endpoint in these tests)."""
    engine = create_db_engine(database_url)
    row_id = str(uuid.uuid4())
    with session_factory(engine).begin() as session:
        session.add(
            UsageLog(
                id=row_id,
                user_id=user_id,
                api_key_id=None,
                timestamp=when,
                model="openai:gpt-4o",
                provider="openai",
                endpoint="/v1/chat/completions",
                prompt_tokens=10,
                completion_tokens=5,
                total_tokens=15,
                cost=Decimal(cost),
                status="success",
            )
        )
    engine.dispose()
    return row_id


def test_create_get_list(client: TestClient) -> None:
    created = make_user(client, "alice", alias="Alice", metadata={"team": "a"})
    assert created["spend"] == 0 and created["blocked"] is False
    assert client.get("/v1/users/alice", headers=MASTER).json()["alias"] == "Alice"
    make_user(client, "bob")
    assert [u["user_id"] for u in client.get("/v1/users", headers=MASTER).json()] == [
        "alice",
        "bob",
    ]


def test_duplicate_is_409_and_unknown_is_404(client: TestClient) -> None:
    make_user(client, "alice")
    duplicate = client.post("/v1/users", json={"user_id": "alice"}, headers=MASTER)
    assert duplicate.status_code == 409 and "already exists" in duplicate.json()["detail"]
    assert client.get("/v1/users/ghost", headers=MASTER).status_code == 404
    assert client.patch("/v1/users/ghost", json={}, headers=MASTER).status_code == 404
    assert client.delete("/v1/users/ghost", headers=MASTER).status_code == 404


def test_unknown_budget_is_404(client: TestClient) -> None:
    response = client.post("/v1/users", json={"user_id": "a", "budget_id": "nope"}, headers=MASTER)
    assert response.status_code == 404
    assert client.get("/v1/users", headers=MASTER).json() == []


def test_patch_changes_only_sent_fields(client: TestClient) -> None:
    make_user(client, "alice", alias="A", metadata={"k": "v"})
    patched = client.patch("/v1/users/alice", json={"blocked": True}, headers=MASTER).json()
    assert patched["blocked"] is True and patched["alias"] == "A"
    assert patched["metadata"] == {"k": "v"}


def test_blocked_user_keys_are_refused_with_reason(client: TestClient) -> None:
    make_user(client, "alice")
    secret = make_key(client, user_id="alice")["key"]
    client.patch("/v1/users/alice", json={"blocked": True}, headers=MASTER)
    response = client.get("/v1/models", headers={"Otari-Key": secret})
    assert response.status_code == 401 and "blocked" in response.json()["error"]["message"]
    client.patch("/v1/users/alice", json={"blocked": False}, headers=MASTER)
    assert client.get("/v1/models", headers={"Otari-Key": secret}).status_code == 200


def test_delete_soft_deletes_keeps_usage_and_deactivates_keys(
    client: TestClient, database_url: str
) -> None:
    make_user(client, "alice")
    key = make_key(client, user_id="alice")
    add_usage(database_url, "alice", datetime.now(UTC))
    assert client.delete("/v1/users/alice", headers=MASTER).status_code == 204
    assert client.get("/v1/users/alice", headers=MASTER).status_code == 404
    assert client.get("/v1/users", headers=MASTER).json() == []
    assert client.get(f"/v1/keys/{key['id']}", headers=MASTER).json()["is_active"] is False
    refused = client.get("/v1/models", headers={"Otari-Key": key["key"]})
    assert refused.status_code == 401
    assert len(client.get("/v1/users/alice/usage", headers=MASTER).json()) == 1
    assert len(client.get("/v1/usage?user_id=alice", headers=MASTER).json()) == 1


def test_recreating_a_deleted_user_restores_it_cleanly(
    client: TestClient, database_url: str
) -> None:
    budget = make_budget(client, max_budget=10)
    make_user(client, "alice", alias="old", blocked=True, budget_id=budget["budget_id"])
    add_usage(database_url, "alice", datetime.now(UTC))
    client.delete("/v1/users/alice", headers=MASTER)
    restored = make_user(client, "alice", alias="new")
    assert restored["alias"] == "new" and restored["blocked"] is False
    assert restored["budget_id"] is None and restored["spend"] == 0
    assert restored["deleted_at"] is None
    assert len(client.get("/v1/users/alice/usage", headers=MASTER).json()) == 1


def test_user_usage_is_newest_first_and_paginated(client: TestClient, database_url: str) -> None:
    make_user(client, "alice")
    older = add_usage(database_url, "alice", datetime(2026, 1, 1, tzinfo=UTC))
    newer = add_usage(database_url, "alice", datetime(2026, 2, 1, tzinfo=UTC), cost="0.25")
    rows = client.get("/v1/users/alice/usage", headers=MASTER).json()
    assert [r["id"] for r in rows] == [newer, older]
    assert rows[0]["cost"] == 0.25
    assert [
        r["id"] for r in client.get("/v1/users/alice/usage?skip=1&limit=1", headers=MASTER).json()
    ] == [older]

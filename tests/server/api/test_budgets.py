"""Budgets: exact money, periods that roll over without a cron job, delete refused in use."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import update
from starlette.testclient import TestClient

from otari_server.accounting import budget_rules, estimates
from otari_server.jsonio import loads
from otari_server.storage.db import create_db_engine, session_factory
from otari_server.storage.tables import User
from tests.support.factories import MASTER, make_budget, make_user


def test_money_is_exact_through_the_api(client: TestClient) -> None:
    body = '{"max_budget": 0.1000000003, "budget_duration_sec": 86400}'
    response = client.post(
        "/v1/budgets", content=body, headers={**MASTER, "content-type": "application/json"}
    )
    assert response.status_code == 200
    assert '"max_budget":0.1000000003' in response.text
    assert loads(response.text)["max_budget"] == Decimal("0.1000000003")


def test_crud(client: TestClient) -> None:
    created = make_budget(client, max_budget=25, budget_duration_sec=3600)
    budget_id = created["budget_id"]
    assert client.get(f"/v1/budgets/{budget_id}", headers=MASTER).json()["max_budget"] == 25
    patched = client.patch(
        f"/v1/budgets/{budget_id}", json={"max_budget": 30}, headers=MASTER
    ).json()
    assert patched["max_budget"] == 30 and patched["budget_duration_sec"] == 3600
    assert len(client.get("/v1/budgets", headers=MASTER).json()) == 1
    assert client.delete(f"/v1/budgets/{budget_id}", headers=MASTER).status_code == 204
    assert client.get(f"/v1/budgets/{budget_id}", headers=MASTER).status_code == 404


def test_invalid_values_are_422(client: TestClient) -> None:
    assert client.post("/v1/budgets", json={"max_budget": -1}, headers=MASTER).status_code == 422
    assert (
        client.post("/v1/budgets", json={"budget_duration_sec": 0}, headers=MASTER).status_code
        == 422
    )
    assert (
        client.post("/v1/budgets", json={"max_budget": "lots"}, headers=MASTER).status_code == 422
    )
    assert client.get("/v1/budgets", headers=MASTER).json() == []


def test_counts_refuse_booleans(sqlite_client: TestClient) -> None:
    client = sqlite_client
    refused = client.post(
        "/v1/budgets", json={"max_budget": 1, "budget_duration_sec": True}, headers=MASTER
    )
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "budget_duration_sec"]
    assert "not a boolean" in refused.json()["detail"][0]["msg"]
    assert client.post("/v1/budgets", json={"max_budget": True}, headers=MASTER).status_code == 422
    for path, field in (
        ("/v1/keys", "rpm_limit"),
        ("/v1/keys", "tpm_limit"),
        ("/v1/users", "rpm_limit"),
        ("/v1/users", "tpm_limit"),
    ):
        body = {field: True} | ({"user_id": "u-bool"} if path == "/v1/users" else {})
        answer = client.post(path, json=body, headers=MASTER)
        assert answer.status_code == 422, (path, field)
        assert answer.json()["detail"][0]["loc"] == ["body", field]
    assert client.get("/v1/budgets", headers=MASTER).json() == []
    assert client.get("/v1/keys", headers=MASTER).json() == []
    budget = make_budget(client, max_budget=1, budget_duration_sec=60)
    patched = client.patch(
        f"/v1/budgets/{budget['budget_id']}", json={"budget_duration_sec": False}, headers=MASTER
    )
    assert patched.status_code == 422
    assert (
        client.get(f"/v1/budgets/{budget['budget_id']}", headers=MASTER).json()[
            "budget_duration_sec"
        ]
        == 60
    )


def test_a_boolean_token_limit_never_shrinks_the_reservation() -> None:
    assert estimates.output_tokens({"max_tokens": True}, 4096, "max_tokens") == 4096
    assert estimates.output_tokens({"max_tokens": 10, "n": True}, 4096, "max_tokens") == 10
    assert estimates.output_tokens({"max_tokens": 10, "n": 3}, 4096, "max_tokens") == 30


def test_delete_in_use_is_409_until_users_move(client: TestClient) -> None:
    budget_id = make_budget(client, max_budget=5)["budget_id"]
    make_user(client, "alice", budget_id=budget_id)
    refused = client.delete(f"/v1/budgets/{budget_id}", headers=MASTER)
    assert refused.status_code == 409 and "1 user" in refused.json()["detail"]
    client.patch("/v1/users/alice", json={"budget_id": None}, headers=MASTER)
    assert client.delete(f"/v1/budgets/{budget_id}", headers=MASTER).status_code == 204


def test_deleted_users_do_not_pin_a_budget(client: TestClient) -> None:
    budget_id = make_budget(client, max_budget=5)["budget_id"]
    make_user(client, "alice", budget_id=budget_id)
    client.delete("/v1/users/alice", headers=MASTER)
    assert client.delete(f"/v1/budgets/{budget_id}", headers=MASTER).status_code == 204


def test_attaching_a_budget_starts_a_period(client: TestClient) -> None:
    budget_id = make_budget(client, max_budget=5, budget_duration_sec=86400)["budget_id"]
    user = make_user(client, "alice", budget_id=budget_id)
    started = datetime.fromisoformat(user["budget_started_at"])
    resets = datetime.fromisoformat(user["next_budget_reset_at"])
    assert resets - started == timedelta(days=1)


def test_period_rolls_over_on_read(client: TestClient, database_url: str) -> None:
    budget_id = make_budget(client, max_budget=5, budget_duration_sec=3600)["budget_id"]
    make_user(client, "alice", budget_id=budget_id)
    # Pretend the user spent 2.5 in a period that started 2.5 hours ago.
    start = datetime.now(UTC) - timedelta(hours=2, minutes=30)
    engine = create_db_engine(database_url)
    with session_factory(engine).begin() as session:
        session.execute(
            update(User)
            .where(User.user_id == "alice")
            .values(
                spend=Decimal("2.5"),
                budget_started_at=start,
                next_budget_reset_at=start + timedelta(hours=1),
            )
        )
    engine.dispose()
    user = client.get("/v1/users/alice", headers=MASTER).json()
    assert user["spend"] == 0
    assert datetime.fromisoformat(user["budget_started_at"]) == start + timedelta(hours=2)
    assert datetime.fromisoformat(user["next_budget_reset_at"]) == start + timedelta(hours=3)


def test_current_period_is_aligned_to_the_start() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    period = budget_rules.current_period(start, 86400, start + timedelta(days=3, hours=5))
    assert period.started_at == start + timedelta(days=3)
    assert period.resets_at == start + timedelta(days=4)
    same = budget_rules.current_period(start, 86400, start + timedelta(hours=23))
    assert same.started_at == start
    assert budget_rules.current_period(start, None, start + timedelta(days=400)).resets_at is None


def test_budget_reports_its_users(client: TestClient) -> None:
    budget_id = make_budget(client, max_budget=5)["budget_id"]
    make_user(client, "a", budget_id=budget_id)
    make_user(client, "b", budget_id=budget_id)
    assert client.get(f"/v1/budgets/{budget_id}", headers=MASTER).json()["user_count"] == 2

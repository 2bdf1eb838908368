"""/v1/usage filters, /v1/models from pricing, health probes, /api/v1 alias, error shapes."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.testclient import TestClient

from otari_server.app import create_app
from tests.server.api.test_users import add_usage
from tests.support.factories import MASTER, make_key, make_price, make_user
from tests.support.servers import make_settings


def test_usage_filters_order_and_bounds(client: TestClient, database_url: str) -> None:
    make_user(client, "alice")
    make_user(client, "bob")
    jan = add_usage(database_url, "alice", datetime(2026, 1, 10, tzinfo=UTC))
    feb = add_usage(database_url, "alice", datetime(2026, 2, 10, tzinfo=UTC))
    bob = add_usage(database_url, "bob", datetime(2026, 2, 11, tzinfo=UTC))
    every = client.get("/v1/usage", headers=MASTER).json()
    assert [r["id"] for r in every] == [bob, feb, jan]
    alice = client.get("/v1/usage?user_id=alice", headers=MASTER).json()
    assert [r["id"] for r in alice] == [feb, jan]
    window = client.get(
        "/v1/usage?start_date=2026-02-01T00:00:00Z&end_date=2026-02-11T00:00:00Z", headers=MASTER
    ).json()
    assert [r["id"] for r in window] == [feb]
    assert [r["id"] for r in client.get("/v1/usage?skip=1&limit=1", headers=MASTER).json()] == [feb]
    assert client.get("/v1/usage?limit=1001", headers=MASTER).status_code == 422
    assert client.get("/v1/usage?start_date=yesterday", headers=MASTER).status_code == 422
    assert (
        client.get("/v1/usage", headers={"Otari-Key": make_key(client)["key"]}).status_code == 403
    )


def test_models_come_from_pricing(client: TestClient) -> None:
    make_price(client, "openai:gpt-4o", "2.5", "10", effective_at="2026-01-01T00:00:00Z")
    make_price(client, "openrouter:meta-llama/llama-3-70b", "0.1", "0.2")
    make_price(client, "openai:future", "1", "1", effective_at="2999-01-01T00:00:00Z")
    headers = {"Otari-Key": make_key(client)["key"]}
    listed = client.get("/v1/models", headers=headers).json()
    assert listed["object"] == "list"
    assert [m["id"] for m in listed["data"]] == [
        "openai:gpt-4o",
        "openrouter:meta-llama/llama-3-70b",
    ]
    one = client.get("/v1/models/openrouter:meta-llama/llama-3-70b", headers=headers).json()
    assert one == {
        "id": "openrouter:meta-llama/llama-3-70b",
        "object": "model",
        "created": one["created"],
        "owned_by": "openrouter",
    }
    missing = client.get("/v1/models/openai:nope", headers=headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_a_model_is_found_by_either_spelling_chat_accepts(sqlite_url: str) -> None:
    providers = {
        "openrouter": {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "k"},
        "openai": {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "k"},
    }
    with TestClient(create_app(make_settings(sqlite_url, providers=providers))) as client:
        make_price(client, "openrouter:meta-llama/llama-3-70b", "0.1", "0.2")
        make_price(client, "openai:gpt-4o", "2.5", "10")
        headers = {"Otari-Key": make_key(client)["key"]}
        for asked, key in (
            ("openrouter/meta-llama/llama-3-70b", "openrouter:meta-llama/llama-3-70b"),
            ("openrouter:meta-llama/llama-3-70b", "openrouter:meta-llama/llama-3-70b"),
            ("openai/gpt-4o", "openai:gpt-4o"),
            ("openai:gpt-4o", "openai:gpt-4o"),
        ):
            found = client.get(f"/v1/models/{asked}", headers=headers)
            assert found.status_code == 200, asked
            assert found.json()["id"] == key and found.json()["owned_by"] == key.split(":")[0]
        for missing in ("openai/nope", "unknown/gpt-4o", "meta-llama/llama-3-70b"):
            answer = client.get(f"/v1/models/{missing}", headers=headers)
            assert answer.status_code == 404, missing
            assert answer.json()["error"]["code"] == "model_not_found"


def test_health_probes(client: TestClient) -> None:
    health = client.get("/health").json()
    assert health["status"] == "healthy" and all(isinstance(v, str) for v in health.values())
    assert client.get("/health/liveness").json() == "alive"
    assert client.get("/health/readiness").status_code == 200


def test_api_v1_alias_serves_management(client: TestClient) -> None:
    make_user(client, "alice")
    assert client.get("/api/v1/users/alice", headers=MASTER).json()["user_id"] == "alice"
    assert client.get("/api/v1/keys").status_code == 401


def test_unknown_path_is_404(client: TestClient) -> None:
    assert client.get("/v1/nothing-here", headers=MASTER).status_code == 404


def test_values_the_database_cannot_store_are_4xx_not_500(client: TestClient) -> None:
    stored = client.post("/v1/users", json={"user_id": "nul\u0000inside"}, headers=MASTER)
    assert stored.status_code in (200, 422), stored.text  # SQLite stores NUL; PostgreSQL can't
    assert client.get("/v1/users/a%00b", headers=MASTER).status_code == 400
    assert client.get("/v1/usage?user_id=%00", headers=MASTER).status_code == 400

"""/v1/routes on SQLite and PostgreSQL: create, list, get, replace, delete, explain; config
routes are read-only; route names appear in /v1/models."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from starlette.testclient import TestClient

from otari_server.app import create_app
from otari_server.jsonio import loads
from tests.support.factories import MASTER, make_key, make_price
from tests.support.servers import make_settings

PROVIDERS = {
    "openai": {"api_key": "sk-o"},
    "anthropic": {"api_key": "sk-a"},
    "groq": {"api_key": "sk-g"},
}
CONFIG_ROUTES = {
    "smart": {"strategy": "fallback", "targets": ["openai:gpt-4o", "anthropic:claude-sonnet-4-5"]}
}
DEFAULTS = {
    "retries": 0,
    "backoff": 0.5,
    "retry_after_cap": 30.0,
    "timeout": None,
    "context_window_fallbacks": False,
    "cooldown_failures": 3,
    "cooldown_window": 60.0,
    "cooldown_seconds": 30.0,
}


@pytest.fixture
def routes_client(database_url: str) -> Iterator[TestClient]:
    settings = make_settings(database_url, providers=PROVIDERS, routes=CONFIG_ROUTES)
    with TestClient(create_app(settings)) as client:
        yield client


def test_create_get_list_replace_delete(routes_client: TestClient) -> None:
    client = routes_client
    body = {
        "name": "spread",
        "strategy": "loadbalance",
        "targets": [{"model": "openai:gpt-4o-mini", "weight": 3}, "groq:llama-3.3-70b"],
        "retries": 2,
        "timeout": 20,
    }
    created = client.post("/v1/routes", json=body, headers=MASTER)
    assert created.status_code == 201, created.text
    shown = created.json()
    assert {k: v for k, v in shown.items() if not k.endswith("_at")} == {
        "name": "spread",
        "strategy": "loadbalance",
        "targets": [
            {"model": "openai:gpt-4o-mini", "weight": 3},
            {"model": "groq:llama-3.3-70b", "weight": 1},
        ],
        **DEFAULTS,
        "retries": 2,
        "timeout": 20.0,
        "source": "api",
        "read_only": False,
    }
    assert client.get("/v1/routes/spread", headers=MASTER).json() == shown
    again = client.post("/v1/routes", json=body, headers=MASTER)
    assert again.status_code == 409 and again.json()["error"]["code"] == "route_exists"

    listed = client.get("/v1/routes", headers=MASTER).json()
    assert [(r["name"], r["source"], r["read_only"]) for r in listed] == [
        ("smart", "config", True),
        ("spread", "api", False),
    ]

    replaced = client.put(
        "/v1/routes/spread", json={"targets": ["groq:llama-3.3-70b"]}, headers=MASTER
    )
    assert replaced.status_code == 200, replaced.text
    after = client.get("/v1/routes/spread", headers=MASTER).json()
    assert after["strategy"] == "fallback" and after["retries"] == 0
    assert after["targets"] == [{"model": "groq:llama-3.3-70b", "weight": 1}]
    assert after["created_at"] == shown["created_at"]

    assert client.delete("/v1/routes/spread", headers=MASTER).status_code == 204
    assert client.get("/v1/routes/spread", headers=MASTER).status_code == 404
    assert client.delete("/v1/routes/spread", headers=MASTER).status_code == 404


def test_put_creates_a_route_that_requests_can_see_at_once(routes_client: TestClient) -> None:
    put = routes_client.put(
        "/v1/routes/cheap", json={"targets": ["groq:llama-3.3-70b"]}, headers=MASTER
    )
    assert put.status_code == 200, put.text
    runtime = routes_client.app.state.runtime  # type: ignore[attr-defined]
    assert runtime.routes.get("cheap").targets[0].model == "groq:llama-3.3-70b"
    routes_client.delete("/v1/routes/cheap", headers=MASTER)
    assert runtime.routes.get("cheap") is None


def test_config_routes_are_read_only(routes_client: TestClient) -> None:
    shown = routes_client.get("/v1/routes/smart", headers=MASTER).json()
    assert shown["source"] == "config" and shown["read_only"] is True
    assert shown["created_at"] is None
    for response in (
        routes_client.put("/v1/routes/smart", json={"targets": ["groq:x"]}, headers=MASTER),
        routes_client.post(
            "/v1/routes", json={"name": "smart", "targets": ["groq:x"]}, headers=MASTER
        ),
        routes_client.delete("/v1/routes/smart", headers=MASTER),
    ):
        assert response.status_code == 409
        error = response.json()["error"]
        assert error["code"] == "route_read_only"
        assert "defined in the config file and is read-only here" in error["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"name": "openai:gpt-4o", "targets": ["openai:gpt-4o"]}, "name"),
        ({"name": "a/b", "targets": ["openai:gpt-4o"]}, "name"),
        ({"name": "x", "targets": []}, "targets"),
        ({"name": "x", "targets": ["gpt-4o"]}, "targets[0]"),
        ({"name": "x", "targets": ["nope:gpt-4o"]}, "targets[0]"),
        ({"name": "x", "targets": [{"model": "openai:a", "weight": 0}]}, "targets[0].weight"),
        ({"name": "x", "targets": ["openai:a"], "retries": 50}, "retries"),
        ({"name": "x", "targets": ["openai:a"], "timeout": 0}, "timeout"),
    ],
)
def test_bad_routes_are_refused_and_nothing_is_stored(
    routes_client: TestClient, body: dict[str, object], param: str
) -> None:
    response = routes_client.post("/v1/routes", json=body, headers=MASTER)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert [r["name"] for r in routes_client.get("/v1/routes", headers=MASTER).json()] == ["smart"]


def test_unknown_fields_and_types_are_422(routes_client: TestClient) -> None:
    for body in (
        {"name": "x", "targets": ["openai:a"], "fallbacks": []},
        {"name": "x", "targets": ["openai:a"], "strategy": "random"},
    ):
        assert routes_client.post("/v1/routes", json=body, headers=MASTER).status_code == 422


def test_master_key_only(routes_client: TestClient) -> None:
    headers = {"Otari-Key": make_key(routes_client)["key"]}
    assert routes_client.get("/v1/routes", headers=headers).status_code == 403
    assert routes_client.get("/v1/routes/smart/explain", headers=headers).status_code == 403
    assert (
        routes_client.put(
            "/v1/routes/x", json={"targets": ["openai:a"]}, headers=headers
        ).status_code
        == 403
    )
    assert routes_client.get("/v1/routes").status_code == 401


def test_explain_prices_skips_and_cooldowns(routes_client: TestClient) -> None:
    make_price(routes_client, "openai:gpt-4o", "2.5", "10")
    response = routes_client.get("/v1/routes/smart/explain", headers=MASTER)
    assert response.status_code == 200
    shown = loads(response.text)
    assert shown["route"] == "smart" and shown["source"] == "config"
    first, second = shown["targets"]
    assert first["model"] == "openai:gpt-4o" and first["order"] == 1
    assert first["status"] == "eligible"
    assert first["price"] == {
        "input_price_per_million": Decimal("2.5"),
        "output_price_per_million": Decimal("10"),
        "unit": "tokens",
    }
    assert second == {
        "order": None,
        "model": "anthropic:claude-sonnet-4-5",
        "weight": 1,
        "share": None,
        "price": None,
        "cooldown_remaining": None,
        "status": "skipped",
        "reason": "no price, and require_pricing is on",
    }
    assert routes_client.get("/v1/routes/none/explain", headers=MASTER).status_code == 404


def test_models_endpoint_knows_route_names(routes_client: TestClient) -> None:
    routes_client.put("/v1/routes/cheap", json={"targets": ["groq:llama-3.3-70b"]}, headers=MASTER)
    for name in ("smart", "cheap"):
        model = routes_client.get(f"/v1/models/{name}", headers=MASTER)
        assert model.status_code == 200, model.text
        assert model.json()["id"] == name and model.json()["owned_by"] == "otari-route"
    listed = [m["id"] for m in routes_client.get("/v1/models", headers=MASTER).json()["data"]]
    assert listed == ["cheap", "smart"]
    assert routes_client.get("/v1/models/nothing", headers=MASTER).status_code == 404


def test_a_config_route_naming_an_unknown_provider_stops_start_up(sqlite_url: str) -> None:
    from otari_server.runtime import open_runtime
    from otari_server.settings import ConfigError

    settings = make_settings(
        sqlite_url, providers=PROVIDERS, routes={"bad": {"targets": ["nope:model"]}}
    )
    with pytest.raises(ConfigError, match=r"routes\.bad\.targets\[0\]: unknown provider 'nope'"):
        open_runtime(settings)
    settings = make_settings(
        sqlite_url, providers=PROVIDERS, routes={"openai:x": {"targets": ["openai:model"]}}
    )
    with pytest.raises(ConfigError, match=r"routes\.openai:x\.name: "):
        open_runtime(settings)


def test_another_instance_sees_api_routes_after_its_reload(database_url: str) -> None:
    from otari_server.runtime import load_routes

    settings = make_settings(database_url, providers=PROVIDERS)
    with TestClient(create_app(settings)) as first, TestClient(create_app(settings)) as second:
        put = first.put(
            "/v1/routes/shared", json={"targets": ["groq:llama-3.3-70b"]}, headers=MASTER
        )
        assert put.status_code == 200, put.text
        runtime = second.app.state.runtime  # type: ignore[attr-defined]
        assert runtime.routes.get("shared") is None  # until its periodic reload
        load_routes(runtime)
        assert runtime.routes.get("shared").targets[0].model == "groq:llama-3.3-70b"
        first.delete("/v1/routes/shared", headers=MASTER)
        load_routes(runtime)
        assert runtime.routes.get("shared") is None

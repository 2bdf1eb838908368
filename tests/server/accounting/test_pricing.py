"""Pricing with history, as_of lookups, model keys with ':' and '/' in paths."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import quote

from starlette.testclient import TestClient

from otari_server.accounting.prices import Consumption, Price
from otari_server.jsonio import loads
from tests.support.factories import MASTER, make_key, make_price

MODEL = "openrouter:meta-llama/llama-3-70b"


def test_set_and_get_with_slash_and_colon_plain_or_encoded(client: TestClient) -> None:
    make_price(client, MODEL, "0.15", "0.6")
    for path in (MODEL, quote(MODEL, safe=""), quote(MODEL, safe="/")):
        response = client.get(f"/v1/pricing/{path}", headers=MASTER)
        assert response.status_code == 200, path
        assert loads(response.text)["input_price_per_million"] == Decimal("0.15")


def test_history_and_as_of(client: TestClient) -> None:
    make_price(client, "openai:gpt-4o", "2.5", "10", effective_at="2026-01-01T00:00:00Z")
    make_price(client, "openai:gpt-4o", "2", "8", effective_at="2026-03-01T00:00:00Z")
    history = client.get("/v1/pricing/openai:gpt-4o/history", headers=MASTER).json()
    assert [h["input_price_per_million"] for h in history] == [2, 2.5]
    january = client.get(
        "/v1/pricing/openai:gpt-4o?as_of=2026-02-01T00:00:00Z", headers=MASTER
    ).json()
    assert january["output_price_per_million"] == 10
    assert (
        client.get("/v1/pricing/openai:gpt-4o", headers=MASTER).json()["output_price_per_million"]
        == 8
    )
    before = client.get("/v1/pricing/openai:gpt-4o?as_of=2025-06-01T00:00:00Z", headers=MASTER)
    assert before.status_code == 404


def test_same_instant_replaces_the_entry(client: TestClient) -> None:
    make_price(client, "openai:gpt-4o", "1", "2", effective_at="2026-01-01T00:00:00Z")
    make_price(client, "openai:gpt-4o", "3", "4", effective_at="2026-01-01T00:00:00Z")
    history = client.get("/v1/pricing/openai:gpt-4o/history", headers=MASTER).json()
    assert len(history) == 1 and history[0]["input_price_per_million"] == 3


def test_list_shows_current_price_per_model(client: TestClient) -> None:
    make_price(client, "openai:gpt-4o", "2.5", "10", effective_at="2026-01-01T00:00:00Z")
    make_price(client, "openai:gpt-4o", "2", "8", effective_at="2026-03-01T00:00:00Z")
    make_price(client, MODEL, "0.15", "0.6")
    listed = client.get("/v1/pricing", headers=MASTER).json()
    assert [(p["model_key"], p["input_price_per_million"]) for p in listed] == [
        ("openai:gpt-4o", 2),
        (MODEL, 0.15),
    ]


def test_delete_one_entry_or_all(client: TestClient) -> None:
    make_price(client, "openai:gpt-4o", "2.5", "10", effective_at="2026-01-01T00:00:00Z")
    make_price(client, "openai:gpt-4o", "2", "8", effective_at="2026-03-01T00:00:00Z")
    one = client.delete(
        "/v1/pricing/openai:gpt-4o?effective_at=2026-03-01T00:00:00Z", headers=MASTER
    )
    assert one.status_code == 204
    assert len(client.get("/v1/pricing/openai:gpt-4o/history", headers=MASTER).json()) == 1
    assert (
        client.delete(f"/v1/pricing/{quote('openai:gpt-4o', safe='')}", headers=MASTER).status_code
        == 204
    )
    assert client.get("/v1/pricing/openai:gpt-4o/history", headers=MASTER).status_code == 404
    assert client.delete("/v1/pricing/openai:gpt-4o", headers=MASTER).status_code == 404


def test_api_keys_may_read_but_not_write(client: TestClient) -> None:
    make_price(client, MODEL, "0.15", "0.6")
    headers = {"Otari-Key": make_key(client)["key"]}
    assert client.get("/v1/pricing", headers=headers).status_code == 200
    assert client.get(f"/v1/pricing/{MODEL}/history", headers=headers).status_code == 200
    write = client.post(
        "/v1/pricing",
        json={"model_key": "a:b", "input_price_per_million": 1, "output_price_per_million": 1},
        headers=headers,
    )
    assert write.status_code == 403
    assert client.delete(f"/v1/pricing/{MODEL}", headers=headers).status_code == 403


def test_invalid_prices_are_refused(client: TestClient) -> None:
    for body in (
        {"model_key": "a:b", "input_price_per_million": -1, "output_price_per_million": 1},
        {"model_key": "a:b", "input_price_per_million": 1},
        {"model_key": "a:b", "input_price_per_million": "x", "output_price_per_million": 1},
    ):
        assert client.post("/v1/pricing", json=body, headers=MASTER).status_code == 422
    no_provider = client.post(
        "/v1/pricing",
        json={"model_key": "gpt-4o", "input_price_per_million": 1, "output_price_per_million": 1},
        headers=MASTER,
    )
    assert no_provider.status_code == 400
    assert client.get("/v1/pricing", headers=MASTER).json() == []


def test_a_price_finer_than_the_store_keeps_is_refused(sqlite_client: TestClient) -> None:
    # Money keeps ten decimal places: 0.00000000001 would be stored, and billed, as 0.
    for price in ("0.00000000001", "1.5E-10", "0.12345678901", '"0.00000000001"'):
        body = (
            '{"model_key": "a:b", "input_price_per_million": 1, '
            f'"output_price_per_million": {price}}}'
        )
        refused = sqlite_client.post(
            "/v1/pricing", content=body, headers={**MASTER, "content-type": "application/json"}
        )
        assert refused.status_code == 422, price
        [problem] = refused.json()["detail"]
        assert problem["loc"] == ["body", "output_price_per_million"]
        assert problem["msg"] == "Decimal input should have no more than 10 decimal places"
    assert sqlite_client.get("/v1/pricing", headers=MASTER).json() == []
    make_price(sqlite_client, "a:b", "1", "0.0000000001")
    kept = loads(sqlite_client.get("/v1/pricing/a:b", headers=MASTER).text)
    assert kept["output_price_per_million"] == Decimal("0.0000000001")


def token_cost(
    input_price: Decimal, output_price: Decimal, prompt: int, completion: int
) -> Decimal:
    price = Price("a:b", datetime.now(UTC), input_price, output_price)
    return price.cost(Consumption(prompt_tokens=prompt, completion_tokens=completion))


def test_token_cost_is_exact() -> None:
    assert token_cost(Decimal("0.15"), Decimal("0.6"), 1, 1) == Decimal("0.00000075")
    assert token_cost(Decimal("2.5"), Decimal("10"), 1_000_000, 500_000) == Decimal("7.5")
    total = sum((token_cost(Decimal("0.1"), Decimal("0.2"), 1, 2) for _ in range(10)), Decimal(0))
    assert total == Decimal("0.000005")

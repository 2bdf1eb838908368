"""Prices imported from genai-prices, and the [pricing] fallback on a chat request."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from starlette.testclient import TestClient

from otari_server.accounting.price_import import exact
from otari_server.jsonio import loads
from tests.support.factories import MASTER, make_key, make_price
from tests.support.fakes import FakeOpenAI
from tests.support.servers import make_settings, running

UPSTREAM_KEY = "sk-upstream-secret-value-123"


def _import(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/pricing/import", json=body, headers=MASTER)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = loads(response.text)
    return result


def _change(result: dict[str, Any], model_key: str) -> dict[str, Any]:
    (change,) = [c for c in result["changes"] if c["model_key"] == model_key]
    return change


def _history(client: TestClient, model_key: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/pricing/{model_key}/history", headers=MASTER)
    if response.status_code == 404:
        return []
    rows: list[dict[str, Any]] = loads(response.text)
    return rows


def test_dry_run_reports_exact_prices_and_writes_nothing(client: TestClient) -> None:
    result = _import(client, providers=["openai"], model="gpt-4o-mini", dry_run=True)
    assert result["dry_run"] is True and result["written"] == 0
    change = _change(result, "openai:gpt-4o-mini")
    assert change["action"] == "add"
    assert change["input_price_per_million"] == Decimal("0.15")
    assert change["output_price_per_million"] == Decimal("0.6")
    assert change["cache_read_price_per_million"] == Decimal("0.075")
    assert change["cache_write_price_per_million"] is None
    assert _history(client, "openai:gpt-4o-mini") == []
    assert client.get("/v1/pricing", headers=MASTER).json() == []


def test_import_writes_exact_prices_and_a_second_import_is_a_no_op(client: TestClient) -> None:
    first = _import(client, providers=["openai", "anthropic"], model="*-mini")
    written = [c["model_key"] for c in first["changes"] if c["action"] == "add"]
    assert "openai:gpt-4o-mini" in written and first["written"] == len(written)
    assert all(key.endswith("-mini") for key in written)
    (entry,) = _history(client, "openai:gpt-4o-mini")
    assert entry["input_price_per_million"] == Decimal("0.15")
    assert entry["output_price_per_million"] == Decimal("0.6")
    assert entry["cache_read_price_per_million"] == Decimal("0.075")
    assert entry["origin"] == "genai-prices"

    second = _import(client, providers=["openai", "anthropic"], model="*-mini")
    assert second["written"] == 0
    assert {c["action"] for c in second["changes"]} == {"unchanged"}
    assert len(_history(client, "openai:gpt-4o-mini")) == 1


def test_anthropic_cache_prices_come_out_exact(client: TestClient) -> None:
    _import(client, providers=["anthropic"], model="claude-3-5-haiku-latest")
    (entry,) = _history(client, "anthropic:claude-3-5-haiku-latest")
    assert [
        entry[f"{name}_price_per_million"]
        for name in ("input", "output", "cache_read", "cache_write")
    ] == [Decimal("0.8"), Decimal("4"), Decimal("0.08"), Decimal("1")]


def test_operator_prices_are_kept_unless_overwrite_and_history_stays(client: TestClient) -> None:
    make_price(client, "openai:gpt-4o-mini", "1", "2", effective_at="2026-01-01T00:00:00Z")
    kept = _import(client, providers=["openai"], model="gpt-4o-mini")
    change = _change(kept, "openai:gpt-4o-mini")
    assert (change["action"], kept["written"]) == ("kept", 0)
    assert change["current"]["input_price_per_million"] == Decimal("1")
    assert len(_history(client, "openai:gpt-4o-mini")) == 1

    replaced = _import(client, providers=["openai"], model="gpt-4o-mini", overwrite=True)
    assert (_change(replaced, "openai:gpt-4o-mini")["action"], replaced["written"]) == ("change", 1)
    newest, older = _history(client, "openai:gpt-4o-mini")
    assert (newest["input_price_per_million"], newest["output_price_per_million"]) == (
        Decimal("0.15"),
        Decimal("0.6"),
    )
    assert (older["input_price_per_million"], older["output_price_per_million"]) == (
        Decimal("1"),
        Decimal("2"),
    )
    assert (newest["origin"], older["origin"]) == ("genai-prices", "api")


def test_unknown_provider_is_a_400_and_writes_nothing(client: TestClient) -> None:
    response = client.post(
        "/v1/pricing/import", json={"providers": ["openai", "ollama"]}, headers=MASTER
    )
    assert response.status_code == 400
    assert "ollama" in response.json()["detail"]
    assert client.get("/v1/pricing", headers=MASTER).json() == []


def test_import_needs_the_master_key(client: TestClient) -> None:
    key = make_key(client)["key"]
    response = client.post(
        "/v1/pricing/import", json={"dry_run": True}, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 403
    assert client.get("/v1/pricing", headers=MASTER).json() == []


def test_package_prices_are_taken_exactly_never_through_float() -> None:
    assert exact(Decimal("0.15")) == Decimal("0.15")
    assert exact("0.075") == Decimal("0.075") and exact(3) == Decimal(3)
    with pytest.raises(ValueError):
        exact(0.15)
    with pytest.raises(ValueError):
        exact(Decimal("-1"))
    assert exact(None) is None


@pytest.fixture
def openai_gateway(database_url: str) -> Iterator[Any]:
    """Start a gateway whose provider is named 'openai' (a fake server on loopback)."""
    with ExitStack() as stack:

        def start(**overrides: Any) -> tuple[str, httpx.Client]:
            fake = stack.enter_context(FakeOpenAI(api_key=UPSTREAM_KEY))
            providers = {
                "openai": {"type": "openai", "base_url": fake.base_url, "api_key": UPSTREAM_KEY}
            }
            url = stack.enter_context(
                running(
                    make_settings(
                        database_url, providers=providers, usage_flush_interval=0.05, **overrides
                    )
                )
            )
            admin = stack.enter_context(httpx.Client(base_url=url, headers=MASTER, timeout=30))
            return url, admin

        yield start


def _usage_rows(admin: httpx.Client, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        rows: list[dict[str, Any]] = loads(admin.get("/v1/usage").text)
        if len(rows) >= count or time.monotonic() > deadline:
            assert len(rows) == count, rows
            return rows
        time.sleep(0.02)


def test_fallback_prices_an_unpriced_model_and_the_usage_row_says_so(openai_gateway: Any) -> None:
    url, admin = openai_gateway(pricing={"fallback": "genai-prices"})
    key = admin.post("/v1/keys", json={}).json()["key"]
    with openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0) as client:
        answer = client.chat.completions.create(
            model="openai:gpt-4o-mini", messages=[{"role": "user", "content": "hello there"}]
        )
    assert answer.usage is not None
    (row,) = _usage_rows(admin, 1)
    expected = (
        Decimal("0.15") * answer.usage.prompt_tokens
        + Decimal("0.6") * answer.usage.completion_tokens
    ) / Decimal(1_000_000)
    assert row["cost"] == expected.quantize(Decimal("1E-10"))
    assert row["price_source"] == "genai-prices"
    # The fallback prices the request; it writes no pricing entry.
    assert admin.get("/v1/pricing/openai:gpt-4o-mini/history").status_code == 404


def test_without_fallback_the_model_is_unpriced_and_table_prices_say_pricing(
    openai_gateway: Any,
) -> None:
    url, admin = openai_gateway()
    key = admin.post("/v1/keys", json={}).json()["key"]
    with openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(
                model="openai:gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
        assert refused.value.code == "model_not_priced"
        admin.post(
            "/v1/pricing",
            content='{"model_key": "openai:gpt-4o-mini", '
            '"input_price_per_million": 1, "output_price_per_million": 2}',
            headers={"content-type": "application/json"},
        )
        answer = client.chat.completions.create(
            model="openai:gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert answer.usage is not None
    rows = _usage_rows(admin, 2)  # the refusal is recorded too, unpriced
    (row,) = [r for r in rows if r["status"] == "success"]
    (refusal,) = [r for r in rows if r["status"] != "success"]
    assert refusal["price_source"] is None and refusal["cost"] is None
    assert row["price_source"] == "pricing"
    assert row["cost"] == (
        Decimal(answer.usage.prompt_tokens) + 2 * Decimal(answer.usage.completion_tokens)
    ) / Decimal(1_000_000)


def test_long_context_tiers_are_imported_exactly_and_compare_on_repeat(client: TestClient) -> None:
    planned = _import(client, providers=["anthropic"], model="claude-sonnet-4-5", dry_run=True)
    assert _change(planned, "anthropic:claude-sonnet-4-5")["pricing_tiers"] == [
        {
            "min_input_tokens": 200001,
            "input_price_per_million": Decimal("6"),
            "output_price_per_million": Decimal("22.5"),
            "cache_read_price_per_million": Decimal("0.6"),
            "cache_write_price_per_million": Decimal("7.5"),
        }
    ]
    assert _import(client, providers=["anthropic"], model="claude-sonnet-4-5")["written"] == 1
    (entry,) = _history(client, "anthropic:claude-sonnet-4-5")
    assert (entry["input_price_per_million"], entry["output_price_per_million"]) == (
        Decimal("3"),
        Decimal("15"),
    )
    (tier,) = entry["pricing_tiers"]
    assert tier["min_input_tokens"] == 200001
    assert (
        tier["input_price_per_million"],
        tier["output_price_per_million"],
        tier["cache_read_price_per_million"],
        tier["cache_write_price_per_million"],
    ) == (Decimal("6"), Decimal("22.5"), Decimal("0.6"), Decimal("7.5"))
    again = _import(client, providers=["anthropic"], model="claude-sonnet-4-5")
    assert again["written"] == 0
    assert _change(again, "anthropic:claude-sonnet-4-5")["action"] == "unchanged"


def test_importing_everything_twice_writes_nothing_the_second_time(client: TestClient) -> None:
    first = _import(client)
    assert first["written"] == len(first["changes"]) > 1000
    # A published third (0.08333...) is kept to otari's ten places, so it compares equal.
    flash = _change(first, "openrouter:google/gemini-2.5-flash")
    assert flash["cache_write_price_per_million"] == Decimal("0.0833333333")
    second = _import(client)
    assert second["written"] == 0
    assert {c["action"] for c in second["changes"]} == {"unchanged"}

"""A running gateway in front of fake OpenAI and Anthropic servers, for end-to-end tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx
import openai

from otari_server.jsonio import loads
from tests.support.fakes import FakeAnthropic, FakeOpenAI
from tests.support.servers import MASTER_KEY, make_settings, running

MASTER = {"Authorization": f"Bearer {MASTER_KEY}"}
UPSTREAM_KEY = "sk-upstream-secret-value-123"
ANTHROPIC_KEY = "sk-ant-upstream-secret-456"


@dataclass
class Gateway:
    """A running gateway in front of fake OpenAI and Anthropic servers."""

    url: str
    openai_fake: FakeOpenAI
    anthropic_fake: FakeAnthropic
    admin: httpx.Client
    clients: list[openai.OpenAI | anthropic.Anthropic] = field(default_factory=list)

    def client(self, key: str, **kwargs: Any) -> openai.OpenAI:
        """An official SDK client for the gateway (closed when the test ends)."""
        client = openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, **kwargs)
        self.clients.append(client)
        return client

    def anthropic(self, key: str) -> anthropic.Anthropic:
        """The official anthropic SDK for the gateway (closed when the test ends)."""
        client = anthropic.Anthropic(base_url=self.url, api_key=key, max_retries=0)
        self.clients.append(client)
        return client

    def close(self) -> None:
        """Close every SDK client handed out."""
        for client in self.clients:
            client.close()

    def key(self, **fields: Any) -> str:
        response = self.admin.post("/v1/keys", json=fields)
        assert response.status_code == 200, response.text
        return str(response.json()["key"])

    def user(self, user_id: str, max_budget: str | None = None) -> None:
        budget_id = None
        if max_budget is not None:
            budget = self.admin.post(
                "/v1/budgets",
                content=f'{{"max_budget": {max_budget}}}',
                headers={"content-type": "application/json"},
            )
            budget_id = budget.json()["budget_id"]
        response = self.admin.post("/v1/users", json={"user_id": user_id, "budget_id": budget_id})
        assert response.status_code == 200, response.text

    def price(self, model_key: str, input_price: str, output_price: str) -> None:
        body = (
            f'{{"model_key": "{model_key}", "input_price_per_million": {input_price}, '
            f'"output_price_per_million": {output_price}}}'
        )
        response = self.admin.post(
            "/v1/pricing", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 200, response.text

    def usage(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until `count` usage rows are written (write-behind), then return them."""
        deadline = time.monotonic() + timeout
        while True:
            rows: list[dict[str, Any]] = loads(self.admin.get("/v1/usage").text)
            if len(rows) >= count or time.monotonic() > deadline:
                assert len(rows) == count, rows
                return rows
            time.sleep(0.02)

    def get_user(self, user_id: str) -> dict[str, Any]:
        result: dict[str, Any] = loads(self.admin.get(f"/v1/users/{user_id}").text)
        return result


def gateway_factory_fixture(
    database_url: str,
    openai_fake: type[FakeOpenAI] = FakeOpenAI,
) -> Iterator[Callable[..., Gateway]]:
    """Start gateways (each with its own fakes) on the test's database; stop them after."""
    with ExitStack() as stack:

        def start(fake_host: str = "127.0.0.1", **overrides: Any) -> Gateway:
            # fake_host: the name the gateway uses for the OpenAI-type fake ("localhost":
            # a host name, where an IP address would switch off cookie handling).
            fake = stack.enter_context(openai_fake(api_key=UPSTREAM_KEY))
            claude = stack.enter_context(FakeAnthropic(api_key=ANTHROPIC_KEY))
            providers = {
                "fake": {
                    "type": "openai",
                    "base_url": fake.base_url.replace("127.0.0.1", fake_host),
                    "api_key": UPSTREAM_KEY,
                },
                "claude": {
                    "type": "anthropic",
                    "base_url": claude.base_url,
                    "api_key": ANTHROPIC_KEY,
                },
            }
            settings = make_settings(
                database_url, providers=providers, **{"usage_flush_interval": 0.05, **overrides}
            )
            url = stack.enter_context(running(settings))
            admin = stack.enter_context(httpx.Client(base_url=url, headers=MASTER, timeout=30))
            gateway = Gateway(url, fake, claude, admin)
            stack.callback(gateway.close)
            return gateway

        yield start


def gateway_fixture(gateway_factory: Callable[..., Gateway]) -> Gateway:
    gw = gateway_factory()
    gw.price("fake:gpt-4o-mini", "1", "2")
    gw.price("claude:claude-sonnet", "3", "15")
    return gw

"""Prepare a benchmark database: schema, a budget, a user on it, prices, and an API key.

Prints the API key. The budget is large enough never to run out, so every request takes the
full hot path: key lookup, budget reservation, provider call, settlement and usage row.

    python bench/prepare.py sqlite:////tmp/otari-bench/otari.db mock [mock2 ...]

Every provider named gets the same price for gpt-4o-mini (route targets need one).
"""

from __future__ import annotations

import sys

from starlette.testclient import TestClient

from otari_server import settings
from otari_server.app import create_app

MASTER = "sk-bench-master"


def main(database_url: str, *providers: str) -> None:
    """Create what the benchmark needs through the management API, in-process."""
    resolved = settings.load(
        None,
        {"database_url": database_url, "master_key": MASTER, "bootstrap_api_key": False},
        environ={},
    )
    headers = {"Authorization": f"Bearer {MASTER}"}
    with TestClient(create_app(resolved)) as client:
        client.post(
            "/v1/budgets", json={"budget_id": "bench", "max_budget": 100_000_000}, headers=headers
        )
        client.post("/v1/users", json={"user_id": "bench", "budget_id": "bench"}, headers=headers)
        for provider in providers:
            client.post(
                "/v1/pricing",
                json={
                    "model_key": f"{provider}:gpt-4o-mini",
                    "input_price_per_million": 0.15,
                    "output_price_per_million": 0.6,
                },
                headers=headers,
            )
        key = client.post(
            "/v1/keys", json={"user_id": "bench", "key_name": "bench"}, headers=headers
        ).json()["key"]
    print(key)


if __name__ == "__main__":
    main(sys.argv[1], *(sys.argv[2:] or ["mock"]))

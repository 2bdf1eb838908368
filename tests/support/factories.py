"""Plain factory functions that create resources through the management API."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from tests.support.servers import MASTER_KEY

MASTER = {"Authorization": f"Bearer {MASTER_KEY}"}


def make_budget(client: TestClient, **fields: Any) -> dict[str, Any]:
    """POST /v1/budgets and return the created budget."""
    response = client.post("/v1/budgets", json=fields, headers=MASTER)
    assert response.status_code == 200, response.text
    return dict(response.json())


def make_user(client: TestClient, user_id: str, **fields: Any) -> dict[str, Any]:
    """POST /v1/users and return the created user."""
    response = client.post("/v1/users", json={"user_id": user_id, **fields}, headers=MASTER)
    assert response.status_code == 200, response.text
    return dict(response.json())


def make_key(client: TestClient, **fields: Any) -> dict[str, Any]:
    """POST /v1/keys and return the created key, secret included."""
    response = client.post("/v1/keys", json=fields, headers=MASTER)
    assert response.status_code == 200, response.text
    return dict(response.json())


def make_price(
    client: TestClient, model_key: str, input_price: str, output_price: str, **fields: Any
) -> dict[str, Any]:
    """POST /v1/pricing with exact decimal prices (sent as JSON numbers)."""
    body = (
        f'{{"model_key": "{model_key}", "input_price_per_million": {input_price}, '
        f'"output_price_per_million": {output_price}'
        + "".join(f', "{k}": "{v}"' for k, v in fields.items())
        + "}"
    )
    response = client.post(
        "/v1/pricing", content=body, headers={**MASTER, "content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    return dict(response.json())

"""Hostile input: malformed, deeply nested, mis-typed or injected requests get a 4xx and
change nothing."""

from __future__ import annotations

from starlette.testclient import TestClient

from tests.support.factories import MASTER, make_user

JSON = {**MASTER, "content-type": "application/json"}


def test_deep_nesting_and_invalid_utf8_are_4xx_everywhere(client: TestClient) -> None:
    deep = b'{"a":' * 5000 + b"1" + b"}" * 5000
    for path in (
        "/v1/users",
        "/v1/keys",
        "/v1/budgets",
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/messages",
    ):
        for body in (deep, b"[" * 100_000, b'{"user_id": "\xff\xfe"}', b"\x00\x01"):
            response = client.post(path, content=body, headers=JSON)
            assert 400 <= response.status_code < 500, (path, body[:20], response.text[:200])
    assert client.get("/v1/users", headers=MASTER).json() == []


def test_wrong_types_are_422_with_the_field(client: TestClient) -> None:
    for path, body in (
        ("/v1/users", {"user_id": 5}),
        ("/v1/budgets", {"max_budget": "lots"}),
        ("/v1/keys", {"expires_at": "tomorrow"}),
        (
            "/v1/pricing",
            {"model_key": ["a"], "input_price_per_million": 1, "output_price_per_million": 1},
        ),
    ):
        response = client.post(path, json=body, headers=MASTER)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["detail"][0]["loc"][0] == "body"


def test_injection_attempts_are_plain_data(client: TestClient) -> None:
    sneaky = "x'; DROP TABLE users; --"
    make_user(client, sneaky)
    assert client.get(f"/v1/users/{sneaky}", headers=MASTER).json()["user_id"] == sneaky
    assert [u["user_id"] for u in client.get("/v1/users", headers=MASTER).json()] == [sneaky]
    # Path tricks reach no other resource.
    assert client.get("/v1/users/..%2Fkeys", headers=MASTER).status_code == 404
    assert client.get("/v1/users/../keys", headers=MASTER).status_code in (200, 404)
    assert client.delete("/v1/budgets/%2E%2E", headers=MASTER).status_code == 404
    # A forged header cannot smuggle a second credential or a request id.
    forged = f"Bearer nope, {MASTER['Authorization']}"
    response = client.get("/v1/keys", headers={"Authorization": forged})
    assert response.status_code == 401
    echoed = client.get("/health", headers={"X-Request-ID": "attacker-chosen"})
    assert echoed.headers["x-request-id"] != "attacker-chosen"
    assert len(client.get("/v1/users", headers=MASTER).json()) == 1

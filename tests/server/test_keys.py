"""Key management: secret shown once, hashed at rest, revocation, PATCH semantics."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine, text
from starlette.testclient import TestClient

from otari_server.db import normalize_url
from tests.factories import MASTER, make_key, make_user


def test_create_returns_secret_once_and_stores_only_its_hash(
        client: TestClient, database_url: str) -> None:
    created = make_key(client, key_name="ci", metadata={"team": "infra"})
    assert created["key"].startswith("gw-") and len(created["key"]) >= 40
    assert created["key_name"] == "ci" and created["metadata"] == {"team": "infra"}
    fetched = client.get(f"/v1/keys/{created['id']}", headers=MASTER).json()
    assert "key" not in fetched
    listed = client.get("/v1/keys", headers=MASTER).json()
    assert created["key"] not in str(listed)
    engine = create_engine(normalize_url(database_url))
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT key_hash FROM api_keys")).scalar_one()
    engine.dispose()
    assert stored == hashlib.sha256(created["key"].encode()).hexdigest()


def test_key_authenticates_on_api_endpoints_with_every_header(client: TestClient) -> None:
    secret = make_key(client)["key"]
    for headers in ({"Otari-Key": f"Bearer {secret}"}, {"Otari-Key": secret},
                    {"AnyLLM-Key": f"Bearer {secret}"}, {"X-AnyLLM-Key": secret},
                    {"Authorization": f"Bearer {secret}"}):
        assert client.get("/v1/models", headers=headers).status_code == 200, headers


def test_api_key_is_forbidden_on_management(client: TestClient) -> None:
    secret = make_key(client)["key"]
    response = client.get("/v1/keys", headers={"Otari-Key": f"Bearer {secret}"})
    assert response.status_code == 403
    assert "master key" in response.json()["detail"]


def test_missing_and_unknown_credentials_are_401(client: TestClient) -> None:
    assert client.get("/v1/keys").status_code == 401
    assert client.get("/v1/keys", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/v1/models", headers={"Otari-Key": "gw-unknown"}).status_code == 401


def test_a_basic_authorization_header_does_not_hide_a_valid_x_api_key(
        sqlite_client: TestClient) -> None:
    secret = make_key(sqlite_client)["key"]
    both = {"Authorization": "Basic dXNlcjpwYXNz", "x-api-key": secret}
    assert sqlite_client.get("/v1/models", headers=both).status_code == 200
    alone = sqlite_client.get("/v1/models", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert alone.status_code == 401
    assert alone.json()["error"]["message"] == (
        "The Authorization header was rejected: only 'Authorization: Bearer <key>' is "
        "accepted (or send the key in 'x-api-key' or 'Otari-Key')")
    wrong = sqlite_client.get("/v1/models", headers={"Authorization": "Basic dXNlcjpwYXNz",
                                                     "x-api-key": "gw-unknown"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["message"] == "Invalid API key (in the x-api-key header)"
    bearer = sqlite_client.get("/v1/models", headers={"Authorization": "Bearer gw-unknown"})
    assert bearer.json()["error"]["message"] == "Invalid API key (in the authorization header)"


def test_revoked_key_is_refused_at_once(client: TestClient) -> None:
    created = make_key(client)
    headers = {"Otari-Key": created["key"]}
    assert client.get("/v1/models", headers=headers).status_code == 200
    assert client.delete(f"/v1/keys/{created['id']}", headers=MASTER).status_code == 204
    response = client.get("/v1/models", headers=headers)
    assert response.status_code == 401
    assert "inactive" in response.json()["error"]["message"]
    assert client.get(f"/v1/keys/{created['id']}", headers=MASTER).json()["is_active"] is False


def test_expired_key_is_refused_with_reason(client: TestClient) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    created = make_key(client, expires_at=past)
    response = client.get("/v1/models", headers={"Otari-Key": created["key"]})
    assert response.status_code == 401
    assert "expired" in response.json()["error"]["message"]


def test_patch_changes_only_sent_fields(client: TestClient) -> None:
    created = make_key(client, key_name="a", metadata={"x": 1})
    response = client.patch(f"/v1/keys/{created['id']}", json={"is_active": False},
                            headers=MASTER)
    assert response.status_code == 200
    body = response.json()
    assert body["is_active"] is False
    assert body["key_name"] == "a" and body["metadata"] == {"x": 1}
    renamed = client.patch(f"/v1/keys/{created['id']}", json={"key_name": "b",
                                                               "is_active": True},
                           headers=MASTER).json()
    assert renamed["key_name"] == "b" and renamed["is_active"] is True
    assert client.get("/v1/models", headers={"Otari-Key": created["key"]}).status_code == 200


def test_key_for_user_and_unknown_user(client: TestClient) -> None:
    make_user(client, "alice")
    assert make_key(client, user_id="alice")["user_id"] == "alice"
    response = client.post("/v1/keys", json={"user_id": "ghost"}, headers=MASTER)
    assert response.status_code == 404
    assert client.get("/v1/keys", headers=MASTER).json()[0]["user_id"] == "alice"


def test_unknown_key_id_is_404(client: TestClient) -> None:
    for method in ("get", "delete"):
        assert getattr(client, method)("/v1/keys/nope", headers=MASTER).status_code == 404
    assert client.patch("/v1/keys/nope", json={}, headers=MASTER).status_code == 404


def test_list_paginates_and_bounds_limit(client: TestClient) -> None:
    ids = [make_key(client, key_name=f"k{i}")["id"] for i in range(5)]
    page = client.get("/v1/keys?skip=1&limit=2", headers=MASTER).json()
    assert [k["id"] for k in page] == ids[1:3]
    assert client.get("/v1/keys?limit=100000", headers=MASTER).status_code == 422


def test_malformed_body_is_422_and_writes_nothing(client: TestClient) -> None:
    bad = client.post("/v1/keys", content=b'{"key_name": ', headers={
        **MASTER, "content-type": "application/json"})
    assert bad.status_code == 422
    wrong_type = client.post("/v1/keys", json={"metadata": "not-an-object"}, headers=MASTER)
    assert wrong_type.status_code == 422
    assert wrong_type.json()["detail"][0]["loc"][-1] == "metadata"
    assert client.get("/v1/keys", headers=MASTER).json() == []


def test_last_used_at_is_recorded_without_a_write_per_request(sqlite_client: TestClient) -> None:
    created = make_key(sqlite_client)
    for _ in range(3):
        sqlite_client.get("/v1/models", headers={"Otari-Key": created["key"]})
    runtime = sqlite_client.app.state.runtime  # type: ignore[attr-defined]
    assert list(runtime.activity.pending) == [created["id"]]  # one pending write, not three
    from otari_server.runtime import flush_activity

    flush_activity(runtime)
    fetched = sqlite_client.get(f"/v1/keys/{created['id']}", headers=MASTER).json()
    assert fetched["last_used_at"] is not None

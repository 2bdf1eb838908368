"""Key management: secret shown once, hashed at rest, revocation, PATCH semantics."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import create_engine, text
from starlette.testclient import TestClient

from otari_server.jsonio import loads
from otari_server.storage.db import normalize_url
from tests.support.factories import MASTER, make_key, make_user
from tests.support.gateway import Gateway


def test_create_returns_secret_once_and_stores_only_its_hash(
    client: TestClient, database_url: str
) -> None:
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
    for headers in (
        {"Otari-Key": f"Bearer {secret}"},
        {"Otari-Key": secret},
        {"AnyLLM-Key": f"Bearer {secret}"},
        {"X-AnyLLM-Key": secret},
        {"Authorization": f"Bearer {secret}"},
    ):
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
    sqlite_client: TestClient,
) -> None:
    secret = make_key(sqlite_client)["key"]
    both = {"Authorization": "Basic dXNlcjpwYXNz", "x-api-key": secret}
    assert sqlite_client.get("/v1/models", headers=both).status_code == 200
    alone = sqlite_client.get("/v1/models", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert alone.status_code == 401
    assert alone.json()["error"]["message"] == (
        "The Authorization header was rejected: only 'Authorization: Bearer <key>' is "
        "accepted (or send the key in 'x-api-key' or 'Otari-Key')"
    )
    wrong = sqlite_client.get(
        "/v1/models", headers={"Authorization": "Basic dXNlcjpwYXNz", "x-api-key": "gw-unknown"}
    )
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
    assert response.json()["error"]["message"] == "Invalid API key (in the otari-key header)"


def test_a_deleted_key_is_gone_for_clients_but_its_usage_keeps_its_id(gateway: Gateway) -> None:
    admin = gateway.admin
    kept = admin.post("/v1/keys", json={"key_name": "kept"}).json()
    paused = admin.post("/v1/keys", json={"key_name": "paused"}).json()
    doomed = admin.post("/v1/keys", json={"key_name": "doomed"}).json()
    gateway.client(doomed["key"]).chat.completions.create(
        model="fake:gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    [row] = gateway.usage(1)
    assert row["api_key_id"] == doomed["id"]
    assert admin.patch(f"/v1/keys/{paused['id']}", json={"is_active": False}).status_code == 200

    assert admin.delete(f"/v1/keys/{doomed['id']}").status_code == 204
    gone = admin.get(f"/v1/keys/{doomed['id']}")
    assert gone.status_code == 404 and gone.json() == {"detail": f"Key '{doomed['id']}' not found"}
    assert admin.patch(f"/v1/keys/{doomed['id']}", json={"is_active": True}).status_code == 404
    assert admin.delete(f"/v1/keys/{doomed['id']}").status_code == 404
    # A deactivated key is still listed; a revoked one only when asked for.
    assert [key["id"] for key in admin.get("/v1/keys").json()] == [kept["id"], paused["id"]]
    listed = admin.get("/v1/keys", params={"include_revoked": "true"}).json()
    assert [(key["id"], key["is_active"]) for key in listed] == [
        (kept["id"], True),
        (paused["id"], False),
        (doomed["id"], False),
    ]
    refused = httpx.get(
        f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {doomed['key']}"}
    )
    assert refused.status_code == 401
    [row] = loads(admin.get("/v1/usage").text)
    assert row["api_key_id"] == doomed["id"]


def test_expired_key_is_refused_with_reason(client: TestClient) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    created = make_key(client, expires_at=past)
    response = client.get("/v1/models", headers={"Otari-Key": created["key"]})
    assert response.status_code == 401
    assert "expired" in response.json()["error"]["message"]


def test_patch_changes_only_sent_fields(client: TestClient) -> None:
    created = make_key(client, key_name="a", metadata={"x": 1})
    response = client.patch(f"/v1/keys/{created['id']}", json={"is_active": False}, headers=MASTER)
    assert response.status_code == 200
    body = response.json()
    assert body["is_active"] is False
    assert body["key_name"] == "a" and body["metadata"] == {"x": 1}
    renamed = client.patch(
        f"/v1/keys/{created['id']}", json={"key_name": "b", "is_active": True}, headers=MASTER
    ).json()
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
    bad = client.post(
        "/v1/keys", content=b'{"key_name": ', headers={**MASTER, "content-type": "application/json"}
    )
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

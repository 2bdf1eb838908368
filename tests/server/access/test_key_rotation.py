"""Key rotation: a new secret for the same key, the old one honoured for a grace period only,
on every instance sharing the database."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import create_engine, select

from otari_server.jsonio import loads
from otari_server.storage.db import normalize_url
from otari_server.storage.tables import APIKey, utcnow
from tests.support.gateway import MASTER, Gateway
from tests.support.procs import wait_until
from tests.support.servers import make_settings, running

# Other instances follow a change within auth_cache_ttl (set to 0.5 s here).
CACHE_TTL = 0.5
GRACE = 4


def _models(url: str, secret: str) -> httpx.Response:
    return httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {secret}"}, timeout=30)


def test_rotation_keeps_the_key_and_its_usage_and_the_old_secret_stops_at_once(
    gateway: Gateway, database_url: str
) -> None:
    gateway.user("alice")
    created = gateway.admin.post(
        "/v1/keys",
        json={
            "key_name": "ci",
            "user_id": "alice",
            "rpm_limit": 50,
            "tpm_limit": 9000,
            "allowed_models": ["fake:*"],
            "metadata": {"team": "ml"},
        },
    ).json()
    old = created["key"]
    gateway.client(old).chat.completions.create(
        model="fake:gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    gateway.usage(1)

    response = gateway.admin.post(f"/v1/keys/{created['id']}/rotate")
    assert response.status_code == 200, response.text
    rotated = loads(response.text)
    new = rotated["key"]
    assert new != old and new.startswith("gw-") and rotated["key_prefix"] == new[:7]
    for field in (
        "id",
        "key_name",
        "user_id",
        "rpm_limit",
        "tpm_limit",
        "allowed_models",
        "metadata",
        "created_at",
        "spend",
        "is_active",
    ):
        assert (
            rotated[field]
            == loads(gateway.admin.get(f"/v1/keys/{created['id']}").text)[field]
            == (created[field] if field != "spend" else rotated["spend"])
        )
    assert rotated["previous_key_expires_at"] is None

    refused = _models(gateway.url, old)
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "Invalid API key (in the authorization header)"
    gateway.client(new).chat.completions.create(
        model="fake:gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    rows = gateway.usage(2)
    assert {row["api_key_id"] for row in rows} == {created["id"]}
    # Usage from before and after the rotation counts for the same user.
    spent = sum((row["cost"] for row in rows), Decimal(0))
    assert spent > 0 and gateway.get_user("alice")["spend"] == spent

    # Only the new secret's hash is stored; the old one is gone (grace 0).
    engine = create_engine(normalize_url(database_url))
    with engine.connect() as conn:
        stored = conn.execute(
            select(APIKey.key_hash, APIKey.previous_key_hash).where(APIKey.id == created["id"])
        ).one()
    engine.dispose()
    assert tuple(stored) == (hashlib.sha256(new.encode()).hexdigest(), None)


def test_rotate_refuses_bad_input_and_non_master(gateway: Gateway) -> None:
    created = gateway.admin.post("/v1/keys", json={}).json()
    assert gateway.admin.post("/v1/keys/nope/rotate").status_code == 404
    negative = gateway.admin.post(f"/v1/keys/{created['id']}/rotate", json={"grace_period_sec": -1})
    assert negative.status_code in (400, 422)
    as_key = httpx.post(
        f"{gateway.url}/v1/keys/{created['id']}/rotate",
        headers={"Authorization": f"Bearer {created['key']}"},
    )
    assert as_key.status_code == 403
    assert _models(gateway.url, created["key"]).status_code == 200  # nothing changed

    # A revoked key stays revoked: rotating it is a 404 and mints nothing.
    assert gateway.admin.delete(f"/v1/keys/{created['id']}").status_code == 204
    assert gateway.admin.post(f"/v1/keys/{created['id']}/rotate").status_code == 404
    assert _models(gateway.url, created["key"]).status_code == 401


@pytest.fixture
def two_apps(postgres_url: str) -> Iterator[tuple[str, str]]:
    """Two gateway apps (instances) sharing one PostgreSQL database."""
    with ExitStack() as stack:
        urls = [
            stack.enter_context(
                running(
                    make_settings(postgres_url, auth_cache_ttl=CACHE_TTL, auto_migrate=index == 0)
                )
            )
            for index in range(2)
        ]
        yield urls[0], urls[1]


def test_grace_period_on_two_instances(two_apps: tuple[str, str]) -> None:
    a, b = two_apps
    with httpx.Client(base_url=a, headers=MASTER, timeout=30) as admin:
        created = admin.post("/v1/keys", json={"key_name": "rotating"}).json()
        old = created["key"]
        assert _models(b, old).status_code == 200  # B has the old secret cached

        rotated = loads(
            admin.post(f"/v1/keys/{created['id']}/rotate", json={"grace_period_sec": GRACE}).text
        )
        new = rotated["key"]
        ends = datetime.fromisoformat(rotated["previous_key_expires_at"])
        # During the grace period both secrets work on both instances.
        for url in (a, b):
            for secret in (old, new):
                assert _models(url, secret).status_code == 200, (url, secret == new)
        assert utcnow() < ends  # the checks above ran inside the grace period

        # After it, only the new one, on both; never before the grace period ended.
        for url in (a, b):

            def old_refused(url: str = url) -> bool:
                return _models(url, old).status_code == 401

            wait_until(
                old_refused,
                GRACE + CACHE_TTL + 10,
                f"{url} to refuse the old secret",
                interval=0.05,
            )
            assert utcnow() >= ends
            refusal = _models(url, old).json()["error"]
            assert refusal["code"] == "key_expired"
            assert _models(url, new).status_code == 200

        # A rotation without grace: the secret just replaced stops at once on A, and on B
        # within auth_cache_ttl.
        newest = admin.post(f"/v1/keys/{created['id']}/rotate").json()["key"]
        assert _models(b, new).status_code == 200  # cached on B before the change reaches it
        assert _models(a, new).status_code == 401
        took = wait_until(
            lambda: _models(b, new).status_code == 401,
            CACHE_TTL + 10,
            "B to refuse the replaced secret",
            interval=0.05,
        )
        assert took <= CACHE_TTL + 2
        for url in (a, b):
            assert _models(url, newest).status_code == 200
            assert _models(url, old).status_code == 401

"""Private answers are never cached by a shared cache (issue 21 item 2); browsers may call the
gateway when the operator allows their origin (issue 21 item 5)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import anthropic
import httpx
import pytest
from starlette.testclient import TestClient

from otari_server.app import create_app
from tests.support.gateway import MASTER, Gateway, gateway_factory_fixture
from tests.support.servers import make_settings, running

MESSAGES = [{"role": "user", "content": "hi"}]
VARY = "Authorization, x-api-key, Otari-Key, AnyLLM-Key, X-AnyLLM-Key"


@pytest.fixture
def lite_factory(sqlite_url: str) -> Iterator[Callable[..., Gateway]]:
    yield from gateway_factory_fixture(sqlite_url)


@pytest.fixture
def gw(lite_factory: Callable[..., Gateway]) -> Gateway:
    gateway = lite_factory()
    gateway.price("fake:gpt-4o-mini", "1", "2")
    gateway.price("claude:claude-sonnet", "3", "15")
    return gateway


def assert_private(response: httpx.Response | object) -> None:
    headers = response.headers  # type: ignore[attr-defined]
    assert headers["cache-control"] == "no-store, private"
    assert headers["vary"] == VARY


def test_every_authenticated_answer_is_private(gw: Gateway) -> None:
    key = gw.key()
    raw = gw.client(key).chat.completions.with_raw_response.create(
        model="fake:gpt-4o-mini", messages=MESSAGES
    )  # type: ignore[arg-type]
    assert_private(raw)
    with gw.client(key).chat.completions.with_streaming_response.create(
        model="fake:gpt-4o-mini", messages=MESSAGES, stream=True
    ) as streamed:  # type: ignore[arg-type]
        assert_private(streamed)
    with anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0) as messages:
        assert_private(
            messages.messages.with_raw_response.create(
                model="claude:claude-sonnet", max_tokens=5, messages=MESSAGES
            )
        )  # type: ignore[arg-type]
    for path in (
        "/v1/keys",
        "/v1/usage",
        "/v1/users",
        "/v1/budgets",
        "/v1/pricing",
        "/v1/models",
        "/api/v1/keys",
    ):
        assert_private(gw.admin.get(path))
    user = {"Authorization": f"Bearer {key}"}
    assert_private(httpx.get(gw.url + "/v1/models", headers=user))
    # Refusals too: they say which credential failed.
    assert_private(httpx.get(gw.url + "/v1/keys"))
    assert_private(httpx.get(gw.url + "/v1/keys", headers=user))


def test_health_may_be_cached_for_a_few_seconds(gw: Gateway) -> None:
    for path in ("/health", "/health/liveness", "/health/readiness"):
        response = httpx.get(gw.url + path)
        assert response.status_code == 200, path
        assert response.headers["cache-control"] == "public, max-age=5"
        assert "vary" not in response.headers


def test_a_failed_health_answer_is_never_cached(sqlite_url: str) -> None:
    # A crash's 500 passes through the edge too (it is in front of FastAPI's error page):
    # no shared cache may keep it and answer the next caller with it.
    app = create_app(make_settings(sqlite_url))

    @app.get("/health/boom")
    def boom() -> None:
        raise RuntimeError("boom")

    with TestClient(app, raise_server_exceptions=False) as client:
        failed = client.get("/health/boom")
        healthy = client.get("/health/liveness")
    assert failed.status_code == 500
    assert failed.headers["cache-control"] == "no-store"
    assert failed.headers["x-request-id"]
    assert healthy.headers["cache-control"] == "public, max-age=5"


def test_cors_is_off_by_default(gw: Gateway) -> None:
    origin = {"Origin": "https://app.example.com"}
    answer = httpx.get(gw.url + "/v1/models", headers={**MASTER, **origin})
    assert answer.status_code == 200
    assert "access-control-allow-origin" not in answer.headers
    preflight = httpx.options(
        gw.url + "/v1/chat/completions", headers={**origin, "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers


@pytest.fixture
def cors_url(sqlite_url: str) -> Iterator[str]:
    settings = make_settings(sqlite_url, cors_allow_origins=["https://app.example.com"])
    with running(settings) as url:
        yield url


def test_an_allowed_origin_gets_a_preflight_and_a_real_answer(cors_url: str) -> None:
    origin = "https://app.example.com"
    preflight = httpx.options(
        cors_url + "/v1/chat/completions",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == origin
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == "authorization, content-type"
    assert preflight.headers["access-control-max-age"] == "600"

    key = httpx.post(cors_url + "/v1/keys", json={}, headers=MASTER).json()["key"]
    real = httpx.get(
        cors_url + "/v1/models", headers={"Origin": origin, "Authorization": f"Bearer {key}"}
    )
    assert real.status_code == 200
    assert real.headers["access-control-allow-origin"] == origin
    assert "x-request-id" in real.headers["access-control-expose-headers"]
    assert "retry-after" in real.headers["access-control-expose-headers"]
    vary = [item.strip() for item in real.headers["vary"].split(",")]
    assert sorted(vary) == sorted(["Origin", *VARY.split(", ")])
    assert real.headers["cache-control"] == "no-store, private"

    other = httpx.options(
        cors_url + "/v1/chat/completions",
        headers={"Origin": "https://evil.example.net", "Access-Control-Request-Method": "POST"},
    )
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers
    stray = httpx.get(
        cors_url + "/v1/models",
        headers={"Origin": "https://evil.example.net", "Authorization": f"Bearer {key}"},
    )
    assert "access-control-allow-origin" not in stray.headers

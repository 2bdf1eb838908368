"""Connected mode against a hostile platform, hostile providers and odd clients: redirects are
not followed, provider addresses are checked, the platform's answer is bounded and validated,
and small leaks stay closed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import openai
import pytest
from aiohttp import web

from otari_server.connected.config import redacted
from tests.support.fakes import DEFAULT_TEXT, FakeOpenAI
from tests.support.loopback import LoopbackServer
from tests.support.platform_fake import (
    GATEWAY_TOKEN,
    USER_TOKEN,
    FakePlatform,
    attempt,
    connected_settings,
)
from tests.support.platform_fake import PROVIDER_KEY as KEY
from tests.support.servers import MASTER_KEY, make_settings, running

BACKUP_KEY = "sk-platform-backup-key-987654321"
MESSAGES: Any = [{"role": "user", "content": "Say hello"}]


class Recorder(LoopbackServer):
    """Answers anything with 200 and records the headers it got: the 'other origin'."""

    name = "recorder"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[str, str]] = []

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._any)
        return app

    async def _any(self, request: web.Request) -> web.Response:
        self.seen.append(dict(request.headers))
        return web.json_response({"stolen": True})


class Redirector(LoopbackServer):
    """A provider that answers every call with a 307 to the recorder."""

    name = "redirector"

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self.calls = 0

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._any)
        return app

    async def _any(self, request: web.Request) -> web.Response:
        self.calls += 1
        raise web.HTTPTemporaryRedirect(self.target + request.path)


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


# Unlike the shared platform and provider fixtures (tests/server/conftest.py), these live in
# the test's stack, so the gateways `serve` starts later are closed before them.
@pytest.fixture
def platform(stack: ExitStack) -> FakePlatform:
    return stack.enter_context(FakePlatform())


@pytest.fixture
def provider(stack: ExitStack, platform: FakePlatform) -> FakeOpenAI:
    fake = stack.enter_context(FakeOpenAI(api_key=KEY))
    platform.route(attempt(fake, "att-1", api_key=KEY))
    return fake


@pytest.fixture
def backup(stack: ExitStack) -> FakeOpenAI:
    return stack.enter_context(FakeOpenAI(api_key=BACKUP_KEY))


@pytest.fixture
def recorder(stack: ExitStack) -> Recorder:
    return stack.enter_context(Recorder())


@pytest.fixture
def serve(stack: ExitStack, platform: FakePlatform) -> Callable[..., str]:
    def start(overrides: dict[str, Any] | None = None, **keys: Any) -> str:
        return stack.enter_context(running(connected_settings(platform, overrides, **keys)))

    return start


def chat(url: str, token: str = USER_TOKEN) -> Any:
    with openai.OpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0) as client:
        return client.chat.completions.with_raw_response.create(
            model="openai:gpt-4o-mini", messages=MESSAGES
        )


def errors_of(platform: FakePlatform, count: int) -> dict[str, str | None]:
    return {r["correlation_id"]: r.get("error_class") for r in platform.wait_usage(count)}


# -- 20.5 secrets stay with their origin -----------------------------------------------------------


def test_a_resolve_redirect_is_not_followed(
    platform: FakePlatform, provider: FakeOpenAI, recorder: Recorder, serve: Callable[..., str]
) -> None:
    url = serve()
    platform.push_resolve(
        status=307, body={}, headers={"Location": f"{recorder.url}/gateway/provider-keys/resolve"}
    )
    with pytest.raises(openai.APIStatusError) as info:
        chat(url)
    assert info.value.status_code == 502
    assert info.value.response.json()["error"]["message"] == "Authorization service unavailable"
    assert recorder.seen == [] and provider.requests == []


def test_a_usage_redirect_is_not_followed_and_the_report_is_kept(
    platform: FakePlatform, provider: FakeOpenAI, recorder: Recorder, serve: Callable[..., str]
) -> None:
    url = serve()
    platform.fail_usage(1, status=308, headers={"Location": f"{recorder.url}/gateway/usage"})
    chat(url)
    assert errors_of(platform, 1) == {"att-1": None}
    assert len(platform.usage_requests) == 2
    assert recorder.seen == []


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_a_provider_redirect_is_not_followed(
    platform: FakePlatform,
    backup: FakeOpenAI,
    recorder: Recorder,
    serve: Callable[..., str],
    stack: ExitStack,
    kind: str,
) -> None:
    redirector = stack.enter_context(Redirector(recorder.url))
    platform.route(
        attempt(None, "att-redirect", name=kind, api_key=KEY, api_base=redirector.url),
        attempt(backup, "att-backup", api_key=BACKUP_KEY),
    )
    raw = chat(serve())
    assert raw.parse().choices[0].message.content == DEFAULT_TEXT
    assert raw.headers["x-correlation-id"] == "att-backup"
    assert redirector.calls == 1 and recorder.seen == []
    assert errors_of(platform, 2) == {"att-redirect": "conn_err", "att-backup": None}


def test_standalone_provider_redirects_are_not_followed(
    database_url: str, recorder: Recorder, stack: ExitStack
) -> None:
    redirector = stack.enter_context(Redirector(recorder.url))
    providers = {"claude": {"type": "anthropic", "base_url": redirector.url, "api_key": KEY}}
    url = stack.enter_context(
        running(make_settings(database_url, providers=providers, require_pricing=False))
    )
    made = httpx.post(f"{url}/v1/keys", json={}, headers={"Authorization": f"Bearer {MASTER_KEY}"})
    assert made.status_code == 200, made.text
    with (
        openai.OpenAI(base_url=f"{url}/v1", api_key=made.json()["key"], max_retries=0) as client,
        pytest.raises(openai.APIStatusError) as info,
    ):
        client.chat.completions.create(model="claude:claude-x", messages=MESSAGES)
    assert info.value.status_code == 502
    assert "redirect" in info.value.message and KEY not in info.value.message
    assert redirector.calls == 1 and recorder.seen == []


# -- 20.6 provider addresses from the platform are checked -----------------------------------------


@pytest.mark.parametrize(
    "base",
    [
        "http://169.254.169.254/v1",
        "http://10.0.0.7/v1",
        "http://[fe80::1]/v1",
        "http://[::ffff:169.254.169.254]/v1",
    ],
)
def test_metadata_link_local_and_private_addresses_are_not_called(
    platform: FakePlatform, backup: FakeOpenAI, serve: Callable[..., str], base: str
) -> None:
    platform.route(
        attempt(None, "att-bad", api_key=KEY, api_base=base),
        attempt(backup, "att-backup", api_key=BACKUP_KEY),
    )
    raw = chat(serve(allow_private_networks=True) if "10.0" not in base else serve())
    assert raw.headers["x-correlation-id"] == "att-backup"
    assert errors_of(platform, 2) == {"att-bad": "address_refused", "att-backup": None}


def test_a_listed_private_network_is_allowed(
    platform: FakePlatform, backup: FakeOpenAI, serve: Callable[..., str]
) -> None:
    # 192.0.2.0/24 is TEST-NET-1: allowed here, and nobody answers there.
    platform.route(
        attempt(None, "att-private", api_key=KEY, api_base="http://192.0.2.1/v1"),
        attempt(backup, "att-backup", api_key=BACKUP_KEY),
    )
    raw = chat(serve({"request_timeout": 0.5}, allow_private_networks=["192.0.2.0/24"]))
    assert raw.headers["x-correlation-id"] == "att-backup"
    errors = errors_of(platform, 2)
    assert errors["att-private"] in ("conn_err", "timeout")


def test_a_name_resolving_to_a_refused_address_is_not_called(
    platform: FakePlatform, provider: FakeOpenAI, serve: Callable[..., str]
) -> None:
    port = provider.base_url.rsplit(":", 1)[1]
    platform.route(attempt(None, "att-local", api_key=KEY, api_base=f"http://localhost:{port}"))
    with pytest.raises(openai.APIStatusError) as info:
        chat(serve(allow_loopback=False))
    assert info.value.status_code == 502
    assert provider.requests == []
    assert errors_of(platform, 1) == {"att-local": "conn_err"}


def test_a_name_resolving_to_an_allowed_address_is_called(
    platform: FakePlatform, provider: FakeOpenAI, serve: Callable[..., str]
) -> None:
    port = provider.base_url.rsplit(":", 1)[1]
    platform.route(attempt(None, "att-local", api_key=KEY, api_base=f"http://localhost:{port}"))
    raw = chat(serve(allow_loopback=True))
    assert raw.parse().choices[0].message.content == DEFAULT_TEXT
    assert len(provider.requests) == 1


# -- 20.7 the platform's instructions are obeyed and bounded ---------------------------------------


def test_fallback_disabled_means_one_attempt(
    platform: FakePlatform, provider: FakeOpenAI, backup: FakeOpenAI, serve: Callable[..., str]
) -> None:
    url = serve()
    provider.fail(503, "down")
    platform.push_resolve(
        body={
            "request_id": "req-1",
            "fallback_enabled": False,
            "attempts": [
                attempt(provider, "att-1", api_key=KEY, position=0),
                attempt(backup, "att-2", api_key=BACKUP_KEY, position=1),
            ],
        }
    )
    with pytest.raises(openai.APIStatusError) as info:
        chat(url)
    assert info.value.status_code == 502
    assert backup.requests == []
    assert errors_of(platform, 1) == {"att-1": "http_503"}


def test_the_number_of_attempts_is_capped(
    platform: FakePlatform, provider: FakeOpenAI, serve: Callable[..., str]
) -> None:
    url = serve(max_attempts=3)
    for _ in range(3):
        provider.fail(503, "down")
    platform.route(*[attempt(provider, f"att-{n}", api_key=KEY) for n in range(1000)])
    with pytest.raises(openai.APIStatusError) as info:
        chat(url)
    assert "All 3 provider attempts failed" in info.value.message
    assert len(provider.requests) == 3
    assert set(errors_of(platform, 3)) == {"att-0", "att-1", "att-2"}
    platform.settle()
    assert len(platform.usage_requests) == 3


@pytest.mark.parametrize(
    "field",
    ["request_id", "attempt_id", "api_key", "provider", "model", "api_base", "fallback_enabled"],
)
def test_unsafe_values_from_the_platform_are_refused(
    platform: FakePlatform, provider: FakeOpenAI, serve: Callable[..., str], field: str
) -> None:
    url = serve()
    answer: dict[str, Any] = {
        "request_id": "req-1",
        "fallback_enabled": True,
        "attempts": [attempt(provider, "att-1", api_key=KEY)],
    }
    bad = {
        "request_id": "req\r\nX-Evil: 1",
        "attempt_id": "att\n1",
        "api_key": "sk-\r\nX: y",
        "provider": "open ai",
        "model": "gpt\x00",
        "api_base": "http://a b/v1",
        "fallback_enabled": "no",
    }[field]
    if field in ("request_id", "fallback_enabled"):
        answer[field] = bad
    else:
        answer["attempts"][0][field] = bad
    platform.push_resolve(body=answer)
    with pytest.raises(openai.APIStatusError) as info:
        chat(url)
    assert info.value.status_code == 502
    assert info.value.response.json()["error"]["message"] == "Authorization service unavailable"
    assert provider.requests == []
    platform.settle()
    assert platform.usage_requests == []


def test_a_flat_answer_with_a_crlf_correlation_id_is_refused(
    platform: FakePlatform, provider: FakeOpenAI, serve: Callable[..., str]
) -> None:
    url = serve()
    platform.push_resolve(
        body={
            "provider": "openai",
            "model": "gpt-4o-mini",
            "api_key": KEY,
            "api_base": provider.base_url,
            "correlation_id": "c\r\n7",
        }
    )
    with pytest.raises(openai.APIStatusError) as info:
        chat(url)
    assert info.value.status_code == 502 and provider.requests == []


# -- 20.8 small leaks and rough edges --------------------------------------------------------------


def test_health_and_logs_redact_credentials_in_the_platform_url(
    platform: FakePlatform,
    provider: FakeOpenAI,
    recorder: Recorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    base = platform.url.replace("http://", "http://admin:hunter2@")
    with running(connected_settings(platform, base_url=base)) as url:
        health = httpx.get(f"{url}/health")
        platform.push_resolve(status=307, body={}, headers={"Location": recorder.url})
        with pytest.raises(openai.APIStatusError):
            chat(url)
    assert health.status_code == 200
    assert "hunter2" not in health.text and "admin" not in health.text
    assert health.json()["platform_url"] == platform.url.replace("http://", "http://[redacted]@")
    assert "redirect (HTTP 307)" in caplog.text and "hunter2" not in caplog.text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://plat.example/v1?api_key=hunter2&region=eu",
            "https://plat.example/v1?api_key=[redacted]&region=eu",
        ),
        ("https://a:hunter2@h/p?token=hunter2", "https://[redacted]@h/p?token=[redacted]"),
        (
            "https://h/o?X-Amz-Signature=hunter2&X-Amz-Credential=hunter2&n=1",
            "https://h/o?X-Amz-Signature=[redacted]&X-Amz-Credential=[redacted]&n=1",
        ),
        ("https://h/v1?api-version=2024-10-21", "https://h/v1?api-version=2024-10-21"),
    ],
)
def test_credentials_in_a_url_query_are_redacted_too(url: str, shown: str) -> None:
    # Provider addresses come from the platform and are logged when refused.
    assert redacted(url) == shown and "hunter2" not in redacted(url)


def test_max_header_bytes_applies(
    serve: Callable[..., str], platform: FakePlatform, provider: FakeOpenAI
) -> None:
    url = serve({"max_header_bytes": 2048})
    response = httpx.post(
        f"{url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {USER_TOKEN}", "X-Pad": "p" * 4096},
        json={"model": "openai:gpt-4o-mini", "messages": MESSAGES},
    )
    assert response.status_code == 431
    assert platform.resolves == []


@pytest.mark.parametrize("token", [b"t" * 5000, "tok\u00e9n".encode()], ids=["long", "non-ascii"])
def test_a_malformed_token_is_401(
    serve: Callable[..., str], platform: FakePlatform, provider: FakeOpenAI, token: bytes
) -> None:
    url = serve()
    response = httpx.post(
        f"{url}/v1/chat/completions",
        headers={b"Authorization": b"Bearer " + token},
        json={"model": "openai:gpt-4o-mini", "messages": MESSAGES},
    )
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert "printable ASCII of at most 4096 characters" in response.json()["error"]["message"]
    assert platform.resolves == []


def test_a_token_with_control_characters_is_400(
    serve: Callable[..., str], platform: FakePlatform
) -> None:
    # The HTTP server refuses such a header line itself, before the gateway sees it.
    response = httpx.post(
        f"{serve()}/v1/chat/completions",
        headers={b"Authorization": b"Bearer tok\x01en"},
        json={"model": "openai:gpt-4o-mini", "messages": MESSAGES},
    )
    assert response.status_code == 400
    assert platform.resolves == []


def test_a_token_of_the_longest_allowed_length_is_asked_about(
    serve: Callable[..., str], platform: FakePlatform, provider: FakeOpenAI
) -> None:
    assert chat(serve(), token="t" * 4096).parse().choices[0].message.content == DEFAULT_TEXT
    assert platform.last_resolve.headers["x-user-token"] == "t" * 4096
    assert platform.last_resolve.headers["x-gateway-token"] == GATEWAY_TOKEN


@pytest.mark.parametrize("path", ["/v1", "/api/v1"])
def test_the_bare_v1_prefix_is_404_not_a_redirect(serve: Callable[..., str], path: str) -> None:
    url = serve()
    response = httpx.get(f"{url}{path}", follow_redirects=False)
    assert response.status_code == 404
    assert "not available in connected mode" in response.json()["error"]["message"]

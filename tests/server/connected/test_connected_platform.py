"""Connected mode's dealings with the platform: refusals, outages, usage reports, health,
configuration, and `otari serve` in this mode."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from otari_server import settings as settings_module
from otari_server.app import create_app
from otari_server.connected.config import PlatformConfig
from otari_server.settings import ConfigError
from tests.support.fakes import DEFAULT_TEXT, FakeOpenAI
from tests.support.platform_fake import (
    GATEWAY_TOKEN,
    USER_TOKEN,
    FakePlatform,
    Reply,
    connected_settings,
)
from tests.support.servers import free_port, running

MESSAGES: Any = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
def url(platform: FakePlatform, provider: FakeOpenAI) -> Iterator[str]:
    with running(connected_settings(platform, resolve_timeout=1.0, health_cache=0)) as served:
        yield served


def chat(url: str, **kwargs: Any) -> Any:
    with openai.OpenAI(base_url=f"{url}/v1", api_key=USER_TOKEN, max_retries=0) as client:
        return client.chat.completions.create(
            model="openai:gpt-4o-mini", messages=MESSAGES, **kwargs
        )


def message_of(error: openai.APIStatusError) -> str:
    message: str = error.response.json()["error"]["message"]
    return message


def poll(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# -- the platform refuses or fails -----------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 402, 403, 404, 429])
def test_platform_refusals_reach_the_client_with_their_detail(
    platform: FakePlatform, provider: FakeOpenAI, url: str, status: int
) -> None:
    platform.reject(status, f"platform says no ({status})", retry_after="7")
    with pytest.raises(openai.APIStatusError) as info:
        chat(url)
    assert info.value.status_code == status
    assert message_of(info.value) == f"platform says no ({status})"
    retry_after = info.value.response.headers.get("retry-after")
    assert retry_after == ("7" if status == 429 else None)
    assert provider.requests == []
    assert platform.usage_requests == []


def test_a_refusal_without_detail_gets_a_generic_message(platform: FakePlatform, url: str) -> None:
    platform.push_resolve(status=403, body={"detail": [{"msg": "structured"}]})
    with pytest.raises(openai.PermissionDeniedError) as info:
        chat(url)
    assert message_of(info.value) == "Authorization request rejected"


@pytest.mark.parametrize(
    "reply",
    [
        Reply(422, {"detail": [{"loc": ["body", "model"], "msg": "field required"}]}),
        Reply(500, {"detail": "boom"}),
        Reply(503, "not json"),
        Reply(400, {"detail": "odd"}),
        Reply(200, b"{not json"),
        Reply(200, {"request_id": "r", "attempts": [{"provider": "openai"}]}),
        Reply(200, {"request_id": "r", "fallback_enabled": False, "attempts": []}),
        Reply(delay=5),
        Reply(drop=True),
    ],
    ids=["422", "500", "503", "400", "malformed", "incomplete", "empty", "timeout", "dropped"],
)
def test_platform_failures_are_502(
    platform: FakePlatform, provider: FakeOpenAI, url: str, reply: Reply
) -> None:
    platform.push_resolve(reply)
    with pytest.raises(openai.APIStatusError) as info:
        chat(url)
    assert info.value.status_code == 502
    assert "Authorization service" in info.value.message
    assert provider.requests == []


def test_an_unreachable_platform_is_502(provider: FakeOpenAI) -> None:
    with FakePlatform() as gone:
        settings = connected_settings(gone)
    with running(settings) as url, pytest.raises(openai.APIStatusError) as info:
        chat(url)
    assert info.value.status_code == 502
    assert message_of(info.value) == "Authorization service unavailable"


# -- usage reports ---------------------------------------------------------------------------------


def test_usage_reports_are_retried_until_delivered(platform: FakePlatform, url: str) -> None:
    platform.fail_usage(2, status=503)
    assert chat(url).choices[0].message.content == DEFAULT_TEXT
    [report] = platform.wait_usage(1)
    assert report["correlation_id"] == "att-1" and report["status"] == "success"
    assert len(platform.usage_requests) == 3


def test_usage_reports_retry_timeouts_and_dropped_connections(
    platform: FakePlatform, provider: FakeOpenAI
) -> None:
    with running(connected_settings(platform, usage_timeout=0.3)) as url:
        platform.fail_usage(1, status=200, delay=5)
        platform.fail_usage(1, status=200, drop=True)
        chat(url)
        assert platform.wait_usage(1)[0]["correlation_id"] == "att-1"
    assert len(platform.usage_requests) == 3


def test_usage_retries_are_bounded(platform: FakePlatform, provider: FakeOpenAI) -> None:
    with running(connected_settings(platform, usage_max_tries=2)) as url:
        platform.fail_usage(5, status=500)
        chat(url)
        platform.wait_usage_tries(2)
        platform.settle()
    assert len(platform.usage_requests) == 2 and platform.usage == []


def test_a_refused_usage_report_is_not_retried(platform: FakePlatform, url: str) -> None:
    platform.fail_usage(1, status=422)
    chat(url)
    platform.wait_usage_tries(1)
    platform.settle()
    assert len(platform.usage_requests) == 1


def test_a_slow_usage_report_never_delays_the_response(
    platform: FakePlatform, provider: FakeOpenAI
) -> None:
    with running(connected_settings(platform, usage_timeout=30)) as url:
        platform.fail_usage(1, status=200, delay=1)
        assert chat(url).choices[0].message.content == DEFAULT_TEXT
        # The answer came back while the platform still holds the report.
        assert platform.usage == []
        platform.wait_usage(1)


def test_pending_usage_reports_are_drained_on_shutdown(
    platform: FakePlatform, provider: FakeOpenAI
) -> None:
    with running(connected_settings(platform)) as url:
        platform.fail_usage(1, status=200, delay=0.5)
        chat(url)
        assert platform.usage == []
    # Leaving `running` shut the gateway down, which waited for the report.
    assert [r["correlation_id"] for r in platform.usage] == ["att-1"]


# -- health and the rest of /v1 --------------------------------------------------------------------


def test_readiness_follows_the_platform(platform: FakePlatform, url: str) -> None:
    ready = httpx.get(f"{url}/health/readiness")
    assert ready.status_code == 200 and ready.json()["platform"] == "reachable"
    health = httpx.get(f"{url}/health").json()
    assert health["mode"] == "connected" and health["platform"] == "reachable"
    assert health["platform_url"] == platform.url
    platform.healthy = False
    assert httpx.get(f"{url}/health/readiness").status_code == 503
    assert httpx.get(f"{url}/health").json()["platform"] == "unreachable"
    assert httpx.get(f"{url}/health/liveness").json() == "alive"
    platform.healthy = True
    assert httpx.get(f"{url}/health/readiness").status_code == 200


def test_readiness_is_503_when_the_platform_is_down(provider: FakeOpenAI) -> None:
    with FakePlatform() as gone:
        settings = connected_settings(gone)
    with running(settings) as url:
        response = httpx.get(f"{url}/health/readiness")
    assert response.status_code == 503
    assert response.json() == {"status": "not ready", "platform": "unreachable"}


def test_readiness_probes_are_cached(platform: FakePlatform, provider: FakeOpenAI) -> None:
    with running(connected_settings(platform, health_cache=60)) as url:
        assert httpx.get(f"{url}/health/readiness").status_code == 200
        platform.healthy = False
        assert httpx.get(f"{url}/health/readiness").status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/models"),
        ("POST", "/v1/embeddings"),
        ("POST", "/v1/messages"),
        ("GET", "/v1/keys"),
        ("POST", "/v1/users"),
        ("GET", "/v1/usage"),
        ("POST", "/api/v1/responses"),
        ("GET", "/v1/anything/else"),
    ],
)
def test_other_v1_paths_are_not_available(url: str, method: str, path: str) -> None:
    response = httpx.request(
        method, f"{url}{path}", headers={"Authorization": f"Bearer {USER_TOKEN}"}
    )
    assert response.status_code == 404
    error = response.json()["error"]
    assert "not available in connected mode" in error["message"]
    assert error["type"] == "not_found_error"


def test_chat_completions_only_answers_post(url: str) -> None:
    response = httpx.get(f"{url}/v1/chat/completions")
    assert response.status_code == 405 and response.headers["allow"] == "POST"


def test_chat_is_served_under_api_too(url: str) -> None:
    response = httpx.post(
        f"{url}/api/v1/chat/completions",
        headers={"Authorization": f"Bearer {USER_TOKEN}"},
        json={"model": "openai:gpt-4o-mini", "messages": MESSAGES},
    )
    assert response.status_code == 200 and response.headers["x-correlation-id"] == "att-1"


def test_openapi_describes_the_connected_surface(url: str) -> None:
    document = httpx.get(f"{url}/openapi.json").json()
    assert set(document["paths"]) == {
        "/v1/chat/completions",
        "/health",
        "/health/liveness",
        "/health/readiness",
    }
    assert "ChatCompletionRequest" in document["components"]["schemas"]


# -- configuration ---------------------------------------------------------------------------------


def load(environ: dict[str, str] | None = None, **overrides: Any) -> Any:
    return settings_module.load(None, overrides, environ=environ or {})


def test_local_providers_and_a_platform_token_do_not_mix() -> None:
    settings = load(
        {
            "OTARI_PLATFORM_TOKEN": GATEWAY_TOKEN,
            "OTARI_PLATFORM_BASE_URL": "https://platform.example",
        },
        providers={"openai": {"api_key": "sk-local"}},
    )
    with pytest.raises(ConfigError, match=r"^providers: not allowed in connected mode"):
        create_app(settings)


def test_a_platform_token_needs_a_base_url() -> None:
    settings = load({"OTARI_PLATFORM_TOKEN": GATEWAY_TOKEN})
    assert settings.connected
    with pytest.raises(ConfigError, match=r"^platform\.base_url: required"):
        create_app(settings)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("base_url", "platform.example", r"^platform\.base_url: must be an http"),
        ("usage_max_tries", -1, r"^platform\.usage_max_tries: expected an integer of 0 or more"),
        ("usage_concurrency", 0, r"^platform\.usage_concurrency: expected an integer of 1 or more"),
        ("max_attempts", True, r"^platform\.max_attempts: expected an integer of 1 or more"),
        (
            "usage_queue_max_bytes",
            0,
            r"^platform\.usage_queue_max_bytes: expected an integer of 1 or more",
        ),
        ("usage_max_age", 0, r"^platform\.usage_max_age: must be positive"),
        ("allow_loopback", "yes", r"^platform\.allow_loopback: expected true or false"),
        (
            "allow_private_networks",
            ["10.0.0.0/8", "nowhere"],
            r"^platform\.allow_private_networks: expected true, false or a list of networks "
            r"such as \"10\.0\.0\.0/8\"; 'nowhere' is not a network$",
        ),
        ("allow_private_networks", [10], r"^platform\.allow_private_networks: .*; 10 is not a"),
        (
            "allow_private_networks",
            "some",
            r"^platform\.allow_private_networks: expected true or false or a list of networks",
        ),
        ("first_chunk_timeout", 0, r"^platform\.first_chunk_timeout: must be positive"),
        ("resolve_timeout", "fast", r"^platform\.resolve_timeout: expected a number"),
        ("health_path", "health", r"^platform\.health_path: must start with '/'"),
        ("colour", "blue", r"^platform\.colour: unknown setting"),
    ],
)
def test_platform_settings_are_validated(key: str, value: Any, message: str) -> None:
    table = {"token": GATEWAY_TOKEN, "base_url": "https://platform.example", key: value}
    with pytest.raises(ConfigError, match=message):
        create_app(load(platform=table))


def test_the_platform_table_can_come_from_the_config_file(
    tmp_path: Path, platform: FakePlatform, provider: FakeOpenAI
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[platform]\ntoken = "${GW_TOKEN}"\nfirst_chunk_timeout = 5\n'
        f'base_url = "{platform.url}/"\nallow_loopback = true\n'
    )
    settings = settings_module.load(config, environ={"GW_TOKEN": GATEWAY_TOKEN})
    with running(settings) as url:
        assert chat(url).choices[0].message.content == DEFAULT_TEXT
    assert platform.last_resolve.headers["x-gateway-token"] == GATEWAY_TOKEN


def test_the_example_config_documents_every_platform_key() -> None:
    text = (Path(__file__).resolve().parents[3] / "config.example.toml").read_text()
    block = text[text.index("# Connected mode") :]
    for key in PlatformConfig.__dataclass_fields__:
        if key != "private_networks":  # set through allow_private_networks
            assert f"\n# {key} " in block, key
    table = "\n".join(
        line.removeprefix("# ")
        for line in block.splitlines()
        if line.startswith(("# [platform]", "# token =", "# base_url ="))
    )
    parsed = tomllib.loads(table)["platform"]
    assert set(parsed) == {"token", "base_url"}


# -- `otari serve` ---------------------------------------------------------------------------------


def loopback_config(tmp_path: Path) -> str:
    """A config file letting the gateway call the fake provider on loopback."""
    config = tmp_path / "loopback.toml"
    config.write_text("[platform]\nallow_loopback = true\n")
    return str(config)


def test_otari_serve_runs_connected(
    platform: FakePlatform, provider: FakeOpenAI, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "OTARI_PLATFORM_TOKEN": GATEWAY_TOKEN,
        "OTARI_CONFIG": loopback_config(tmp_path),
        "OTARI_PLATFORM_BASE_URL": platform.url,
        "OPENAI_API_KEY": "sk-ignored",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "otari_cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        poll(lambda: proc.poll() is not None or _ready(url), timeout=30)
        assert proc.poll() is None, proc.communicate()[1]
        assert chat(url).choices[0].message.content == DEFAULT_TEXT
        platform.wait_usage(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert proc.returncode in (0, -signal.SIGTERM), err
    assert "Application shutdown complete" in err


def test_otari_start_and_stop_run_connected(
    platform: FakePlatform, provider: FakeOpenAI, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "OTARI_PLATFORM_TOKEN": GATEWAY_TOKEN,
        "OTARI_CONFIG": loopback_config(tmp_path),
        "OTARI_PLATFORM_BASE_URL": platform.url,
    }

    def otari(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "otari_cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    started = otari("start", "--port", str(port))
    try:
        assert started.returncode == 0, started.stderr
        assert chat(f"http://127.0.0.1:{port}").choices[0].message.content == DEFAULT_TEXT
    finally:
        stopped = otari("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert platform.wait_usage(1)[0]["status"] == "success"


def test_otari_serve_refuses_a_bad_platform_table(platform: FakePlatform) -> None:
    env = {**os.environ, "OTARI_PLATFORM_TOKEN": GATEWAY_TOKEN}
    done = subprocess.run(
        [sys.executable, "-m", "otari_cli", "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "platform.base_url: required" in done.stderr


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health/readiness", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False

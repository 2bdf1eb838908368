"""Provider refusals keep their instructions (issue 18 item 1) and a provider that rejects the
gateway's own key is the gateway's problem (issue 21 item 3)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from openai._models import FinalRequestOptions

from tests.support.gateway import Gateway, gateway_factory_fixture

MESSAGES = [{"role": "user", "content": "hi"}]
RETRY = {"Retry-After": "17", "retry-after-ms": "17000"}


@pytest.fixture
def lite_factory(sqlite_url: str) -> Iterator[Callable[..., Gateway]]:
    yield from gateway_factory_fixture(sqlite_url)


@pytest.fixture
def gw(lite_factory: Callable[..., Gateway]) -> Gateway:
    gateway = lite_factory(metrics=True)
    gateway.price("fake:gpt-4o-mini", "1", "2")
    gateway.price("claude:claude-sonnet", "3", "15")
    return gateway


def anthropic_client(gateway: Gateway, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)


# -- Retry-After on every endpoint and direction -----------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["fake:gpt-4o-mini", "claude:claude-sonnet"])
def test_a_provider_429_reaches_the_openai_sdk_with_its_retry_after(
    gw: Gateway, model: str, stream: bool
) -> None:
    fake = gw.openai_fake if model.startswith("fake") else gw.anthropic_fake
    fake.fail(429, "Rate limit reached for requests", headers=RETRY)
    client = gw.client(gw.key())
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model=model,
            messages=MESSAGES,  # type: ignore[call-overload]
            stream=stream,
        )
    response = caught.value.response
    assert response.status_code == 429
    assert response.headers["retry-after"] == "17"
    assert response.headers["retry-after-ms"] == "17000"
    assert caught.value.type == "rate_limit_error"
    assert caught.value.code == "rate_limit_exceeded"
    body: Any = caught.value.body
    assert body["message"] == f"Provider '{model.split(':')[0]}': Rate limit reached for requests"


def test_the_openai_sdk_waits_as_long_as_retry_after_says(gw: Gateway) -> None:
    # The SDK's own retry computation reads the relayed header (17 s, not its 0.5 s default).
    gw.openai_fake.fail(429, "slow down", headers={"Retry-After": "17"})
    client = gw.client(gw.key())
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="fake:gpt-4o-mini", messages=MESSAGES)
    options = FinalRequestOptions.construct(method="post", url="/chat/completions")
    wait = client._calculate_retry_timeout(0, options, caught.value.response.headers)
    assert wait == 17


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["claude:claude-sonnet", "fake:gpt-4o-mini"])
def test_a_provider_429_reaches_the_anthropic_sdk_on_messages(
    gw: Gateway, model: str, stream: bool
) -> None:
    fake = gw.openai_fake if model.startswith("fake") else gw.anthropic_fake
    fake.fail(429, "Number of requests has exceeded your rate limit", headers=RETRY)
    with (
        anthropic_client(gw, gw.key()) as client,
        pytest.raises(anthropic.RateLimitError) as caught,
    ):
        client.messages.create(
            model=model,
            max_tokens=10,
            messages=MESSAGES,  # type: ignore[call-overload]
            stream=stream,
        )
    response = caught.value.response
    assert response.headers["retry-after"] == "17"
    assert response.headers["retry-after-ms"] == "17000"
    assert caught.value.body == {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": f"Provider '{model.split(':')[0]}': Number of requests has exceeded your "
            "rate limit",
        },
    }


@pytest.mark.parametrize("status", [503, 529])
def test_overloaded_and_unavailable_keep_status_and_retry_after(gw: Gateway, status: int) -> None:
    for path, model, shape in (
        ("/v1/chat/completions", "claude:claude-sonnet", "openai"),
        ("/v1/messages", "fake:gpt-4o-mini", "anthropic"),
        ("/v1/messages", "claude:claude-sonnet", "anthropic"),
    ):
        fake = gw.openai_fake if model.startswith("fake") else gw.anthropic_fake
        fake.fail(status, "busy", headers={"Retry-After": "3"})
        reply = httpx.post(
            gw.url + path,
            headers={"Authorization": f"Bearer {gw.key()}"},
            json={"model": model, "max_tokens": 5, "messages": MESSAGES},
        )
        assert reply.status_code == status, (path, model)
        assert reply.headers["retry-after"] == "3"
        error = reply.json()["error"]
        expected = {
            503: ("service_unavailable", "api_error"),
            529: ("overloaded_error", "overloaded_error"),
        }[status]
        assert error["type"] == (expected[0] if shape == "openai" else expected[1])


def test_unusable_retry_advice_is_not_relayed(gw: Gateway) -> None:
    gw.openai_fake.fail(
        429, "busy", headers={"Retry-After": "soon; rm -rf", "retry-after-ms": "nan"}
    )
    reply = httpx.post(
        gw.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {gw.key()}"},
        json={"model": "fake:gpt-4o-mini", "messages": MESSAGES},
    )
    assert reply.status_code == 429
    assert "retry-after" not in reply.headers and "retry-after-ms" not in reply.headers


# -- Error types per status, in each wire shape ------------------------------------------------

STATUSES = [
    # provider status, client status, OpenAI-shape type, Anthropic-shape type
    (400, 400, "invalid_request_error", "invalid_request_error"),
    (404, 404, "not_found_error", "not_found_error"),
    (408, 408, "timeout_error", "timeout_error"),
    (413, 413, "invalid_request_error", "request_too_large"),
    (422, 422, "invalid_request_error", "invalid_request_error"),
    (429, 429, "rate_limit_error", "rate_limit_error"),
    (500, 502, "upstream_error", "api_error"),
    (502, 502, "upstream_error", "api_error"),
    (503, 503, "service_unavailable", "api_error"),
    (504, 504, "timeout_error", "timeout_error"),
    (529, 529, "overloaded_error", "overloaded_error"),
]


@pytest.mark.parametrize(("status", "answered", "openai_type", "anthropic_type"), STATUSES)
def test_every_provider_status_gets_its_error_type_in_each_shape(
    gw: Gateway, status: int, answered: int, openai_type: str, anthropic_type: str
) -> None:
    key = gw.key()
    for fake, model in (
        (gw.openai_fake, "fake:gpt-4o-mini"),
        (gw.anthropic_fake, "claude:claude-sonnet"),
    ):
        for path in ("/v1/chat/completions", "/v1/messages"):
            fake.fail(status, "no")
            reply = httpx.post(
                gw.url + path,
                headers={"Authorization": f"Bearer {key}"},
                json={"model": model, "max_tokens": 5, "messages": MESSAGES},
            )
            assert reply.status_code == answered, (model, path)
            body = reply.json()
            if path == "/v1/messages":
                assert body["type"] == "error" and body["error"]["type"] == anthropic_type
            else:
                assert body["error"]["type"] == openai_type, (model, path)


# -- otari's own rate limits pace the client ---------------------------------------------------


def test_own_rate_limits_send_openai_pacing_headers(gw: Gateway) -> None:
    client = gw.client(gw.key(rpm_limit=1, tpm_limit=100000))
    client.chat.completions.create(model="fake:gpt-4o-mini", messages=MESSAGES)
    gw.usage(1)  # its tokens are counted when its usage is written (write-behind)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="fake:gpt-4o-mini", messages=MESSAGES)
    headers = caught.value.response.headers
    seconds = int(headers["retry-after"])
    assert 1 <= seconds <= 60
    reset = "1m0s" if seconds == 60 else f"{seconds}s"
    assert {name: headers[name] for name in headers if name.startswith("x-ratelimit-")} == {
        "x-ratelimit-limit-requests": "1",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": reset,
        "x-ratelimit-limit-tokens": "100000",
        "x-ratelimit-remaining-tokens": str(
            100000 - int(gw.openai_fake.last.usage["total_tokens"])
        ),
        "x-ratelimit-reset-tokens": reset,
    }


# -- A provider rejecting the gateway's own key (issue 21 item 3) ------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_a_provider_rejecting_our_key_is_a_502_for_the_client(
    gw: Gateway, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    key = gw.key()
    client = gw.client(key)
    gw.openai_fake.fail(status, "Incorrect API key provided: sk-upstream-secret-value-123")
    with (
        caplog.at_level(logging.ERROR, logger="otari.errors"),
        pytest.raises(openai.APIStatusError) as caught,
    ):
        client.chat.completions.with_raw_response.create(
            model="fake:gpt-4o-mini", messages=MESSAGES
        )
    error = caught.value
    assert error.status_code == 502 and not isinstance(error, openai.AuthenticationError)
    assert error.code == "provider_credential_rejected"
    assert "provider credential rejected" in error.message
    assert "sk-upstream" not in error.message
    request_id = error.response.headers["x-request-id"]
    [logged] = [
        record.getMessage() for record in caplog.records if request_id in record.getMessage()
    ]
    assert "Provider 'fake' rejected the gateway's credential" in logged
    assert "Incorrect API key provided: [redacted]" in logged
    assert "sk-upstream" not in logged

    gw.anthropic_fake.fail(status, "invalid x-api-key")
    with (
        anthropic_client(gw, key) as claude,
        pytest.raises(anthropic.APIStatusError) as messages_error,
    ):
        claude.messages.create(model="claude:claude-sonnet", max_tokens=5, messages=MESSAGES)  # type: ignore[arg-type]
    assert messages_error.value.status_code == 502
    body: Any = messages_error.value.body
    assert body["error"]["type"] == "api_error"
    assert "provider credential rejected" in body["error"]["message"]

    metrics = httpx.get(f"{gw.url}/metrics").text
    assert re.search(
        r'^otari_provider_credential_rejections_total\{provider="fake"\} 1\.0$',
        metrics,
        re.MULTILINE,
    )
    assert re.search(
        r'^otari_provider_credential_rejections_total\{provider="claude"\} 1\.0$',
        metrics,
        re.MULTILINE,
    )


# -- a provider's cookies stay with the answer that set them -----------------------------------


def test_a_cookie_a_provider_sets_is_never_sent_with_the_next_request(
    lite_factory: Callable[..., Gateway],
) -> None:
    # A load balancer's session cookie set on one user's call must not ride along with the
    # next user's: the gateway keeps no cookie jar. (By host name: aiohttp's jar ignores
    # cookies from IP addresses, which would hide the fault.)
    gw = lite_factory(fake_host="localhost")
    gw.price("fake:gpt-4o-mini", "1", "2")
    gw.openai_fake.fail(
        429, "slow down", headers={"Set-Cookie": "__cf_bm=user-a-session; Path=/; HttpOnly"}
    )
    client = gw.client(gw.key())
    with pytest.raises(openai.RateLimitError):
        client.with_options(max_retries=0).chat.completions.create(
            model="fake:gpt-4o-mini", messages=MESSAGES
        )
    client.chat.completions.create(model="fake:gpt-4o-mini", messages=MESSAGES)
    assert len(gw.openai_fake.requests) == 2
    assert "cookie" not in gw.openai_fake.last.headers

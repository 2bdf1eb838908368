"""/v1/messages when providers fail: Anthropic error shapes, before and during a stream."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal

import anthropic
import httpx
import pytest

from otari_server.generation.messages import limit_field
from otari_server.providers import Provider
from tests.support.fakes import Behaviour, Failure, FakeServer
from tests.support.gateway import ANTHROPIC_KEY, UPSTREAM_KEY, Gateway

MODELS = {"claude": "claude:claude-sonnet", "fake": "fake:gpt-4o-mini"}
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(params=list(MODELS))
def upstream(request: pytest.FixtureRequest) -> str:
    """Which provider a test talks to: "claude" (pass-through) or "fake" (translated)."""
    return str(request.param)


@pytest.fixture
def gw(gateway: Gateway) -> Gateway:
    gateway.user("alice", max_budget="5")
    return gateway


@pytest.fixture
def alice(gw: Gateway) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=gw.url, api_key=gw.key(user_id="alice"), max_retries=0
    ) as client:
        yield client


def fake_of(gateway: Gateway, upstream: str) -> FakeServer:
    return gateway.anthropic_fake if upstream == "claude" else gateway.openai_fake


def wait_released(gateway: Gateway, user_id: str) -> None:
    deadline = time.monotonic() + 10
    while gateway.get_user(user_id)["reserved"] != 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gateway.get_user(user_id)["reserved"] == 0


@pytest.mark.parametrize(
    ("status", "error", "kind"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
    ],
)
def test_provider_4xx_keeps_status_in_anthropic_shape(
    gw: Gateway,
    alice: anthropic.Anthropic,
    upstream: str,
    status: int,
    error: type[anthropic.APIStatusError],
    kind: str,
) -> None:
    secret = ANTHROPIC_KEY if upstream == "claude" else UPSTREAM_KEY
    fake_of(gw, upstream).fail(status, f"Refused, key {secret}")
    with pytest.raises(error) as info:
        alice.messages.create(model=MODELS[upstream], max_tokens=10, messages=HELLO)
    assert info.value.status_code == status and info.value.type == kind
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert "Refused" in body["error"]["message"] and secret not in str(body)
    [row] = gw.usage(1)
    assert row["status"] == "error" and row["cost"] == 0 and secret not in str(row)
    assert gw.get_user("alice")["reserved"] == 0


def test_provider_5xx_becomes_502_api_error(
    gw: Gateway, alice: anthropic.Anthropic, upstream: str
) -> None:
    fake_of(gw, upstream).fail(500, "The server had an error")
    with pytest.raises(anthropic.InternalServerError) as info:
        alice.messages.create(model=MODELS[upstream], max_tokens=10, messages=HELLO)
    assert info.value.status_code == 502 and info.value.type == "api_error"
    assert gw.usage(1)[0]["status"] == "error"


def test_malformed_provider_answer_becomes_502(
    gw: Gateway, alice: anthropic.Anthropic, upstream: str
) -> None:
    fake_of(gw, upstream).push(malformed=True)
    with pytest.raises(anthropic.InternalServerError) as info:
        alice.messages.create(model=MODELS[upstream], max_tokens=10, messages=HELLO)
    assert info.value.status_code == 502 and "malformed" in str(info.value)


def test_provider_error_inside_a_stream_is_an_anthropic_error_event(
    gw: Gateway, alice: anthropic.Anthropic, upstream: str
) -> None:
    fake_of(gw, upstream).push(
        error=Failure(429, "overloaded mid-stream", type="rate_limit_error"), error_after=4
    )
    received = []
    with (
        pytest.raises(anthropic.APIStatusError) as info,
        alice.messages.stream(model=MODELS[upstream], max_tokens=100, messages=HELLO) as stream,
    ):
        received.extend(stream.text_stream)
    assert received  # the text before the failure reached the client
    assert info.value.type == "rate_limit_error"
    assert "overloaded mid-stream" in str(info.value)
    [row] = gw.usage(1)
    assert row["status"] == "error" and "overloaded mid-stream" in row["error_message"]
    wait_released(gw, "alice")


def test_stream_cut_midway_ends_with_an_error_event(gw: Gateway, upstream: str) -> None:
    fake_of(gw, upstream).push(cut_after=5)
    body = {"model": MODELS[upstream], "max_tokens": 100, "messages": HELLO, "stream": True}
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        response = http.post(
            "/v1/messages", json=body, headers={"x-api-key": gw.key(user_id="alice")}
        )
    assert response.status_code == 200
    blocks = [block for block in response.text.split("\n\n") if block]
    assert blocks[0].startswith("event: message_start\n")
    assert blocks[-1].startswith("event: error\ndata: ")
    assert '"type":"api_error"' in blocks[-1] and "provider" in blocks[-1].lower()
    assert all(block.startswith("event: ") for block in blocks)  # no half event relayed
    [row] = gw.usage(1)
    assert row["status"] == "error" and row["completion_tokens"] >= 1
    assert row["cost"] > 0
    wait_released(gw, "alice")


def test_client_disconnect_mid_stream_is_recorded_and_settled(gw: Gateway, upstream: str) -> None:
    fake = fake_of(gw, upstream)
    gate = fake.gate()
    fake.push(Behaviour(gate=gate, hold_after=4))
    body = {"model": MODELS[upstream], "max_tokens": 100, "messages": HELLO, "stream": True}
    with (
        httpx.Client(base_url=gw.url, timeout=30) as http,
        http.stream(
            "POST", "/v1/messages", json=body, headers={"x-api-key": gw.key(user_id="alice")}
        ) as response,
    ):
        first = next(response.iter_bytes())
        assert first.startswith(b"event: message_start")
    # No wait at the gate: the relay may stop before the provider even reaches it.
    [row] = gw.usage(1)  # written without the provider ever finishing: the relay stopped
    gate.release()
    assert row["status"] == "client_disconnected"
    wait_released(gw, "alice")


def test_unpriced_model_is_refused_before_the_call(gw: Gateway, alice: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        alice.messages.create(model="claude:unpriced", max_tokens=10, messages=HELLO)
    assert "no price" in str(info.value) and info.value.type == "invalid_request_error"
    assert gw.anthropic_fake.requests == []


def test_cache_tokens_of_an_anthropic_provider_are_priced(
    gw: Gateway, alice: anthropic.Anthropic
) -> None:
    gw.admin.post(
        "/v1/pricing",
        json={
            "model_key": "claude:claude-sonnet",
            "input_price_per_million": 10,
            "output_price_per_million": 20,
            "cache_read_price_per_million": 1,
            "cache_write_price_per_million": 12,
        },
    )
    usage = {
        "input_tokens": 40,
        "cache_read_input_tokens": 50,
        "cache_creation_input_tokens": 10,
        "output_tokens": 10,
    }
    gw.anthropic_fake.push(
        body={
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet",
            "content": [{"type": "text", "text": "ok"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }
    )
    reply = alice.messages.create(model="claude:claude-sonnet", max_tokens=10, messages=HELLO)
    assert reply.usage.cache_read_input_tokens == 50
    [row] = gw.usage(1)
    assert (row["prompt_tokens"], row["cache_read_tokens"], row["cache_write_tokens"]) == (
        100,
        50,
        10,
    )
    # 40 fresh x $10/M + 50 read x $1/M + 10 written x $12/M + 10 output x $20/M
    assert row["cost"] == Decimal("0.00077")


def test_openai_itself_takes_max_completion_tokens() -> None:
    assert limit_field(Provider("openai", "openai", "https://api.openai.com/v1")) == (
        "max_completion_tokens"
    )
    assert limit_field(Provider("local", "openai", "http://localhost:8000/v1")) == "max_tokens"

"""POST /v1/messages end to end: official anthropic SDK -> otari -> fake provider servers.

Every behaviour runs against both upstream wire formats: the anthropic fake (provider "claude",
passed through) and the OpenAI fake (provider "fake", translated both ways).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import pytest

from tests.support.fakes import DEFAULT_TEXT, FakeServer, ToolCall
from tests.support.gateway import ANTHROPIC_KEY, UPSTREAM_KEY, Gateway
from tests.support.servers import MASTER_KEY

# model address, input and output price per million (as the gateway fixture sets them)
MODELS = {"claude": ("claude:claude-sonnet", 3, 15), "fake": ("fake:gpt-4o-mini", 1, 2)}
HELLO = [{"role": "user", "content": "hello there"}]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture(params=list(MODELS))
def upstream(request: pytest.FixtureRequest) -> str:
    """Which provider a test talks to: "claude" (pass-through) or "fake" (translated)."""
    return str(request.param)


@pytest.fixture
def sdk(gateway: Gateway) -> Iterator[Callable[..., anthropic.Anthropic]]:
    """Official anthropic SDK clients for the gateway, closed after the test."""
    clients: list[anthropic.Anthropic] = []

    def make(key: str, **kwargs: Any) -> anthropic.Anthropic:
        client = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def fake_of(gateway: Gateway, upstream: str) -> FakeServer:
    return gateway.anthropic_fake if upstream == "claude" else gateway.openai_fake


def cost(upstream: str, prompt: int, completion: int) -> Decimal:
    _, input_price, output_price = MODELS[upstream]
    return Decimal(input_price * prompt + output_price * completion) / 1_000_000


def raw_events(gateway: Gateway, key: str, body: dict[str, Any]) -> list[tuple[str, Any]]:
    """(event name, decoded data) of a streamed /v1/messages answer, read without an SDK."""
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        response = http.post("/v1/messages", headers={"x-api-key": key}, json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = []
    for block in response.text.split("\n\n"):
        if block.strip():
            lines = dict(line.split(": ", 1) for line in block.split("\n"))
            events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_create_forwards_and_meters_exactly(
    gateway: Gateway, sdk: Callable[..., anthropic.Anthropic], upstream: str
) -> None:
    model = MODELS[upstream][0]
    gateway.user("alice", max_budget="10")
    client = sdk(gateway.key(user_id="alice"))
    reply = client.messages.create(
        model=model,
        max_tokens=100,
        system="be brief",
        messages=HELLO,
        stop_sequences=["END"],
        metadata={"user_id": "alice"},
        extra_body={"temperature": 0.5},
    )
    assert reply.type == "message" and reply.role == "assistant"
    assert [block.type for block in reply.content] == ["text"]
    assert reply.content[0].text == DEFAULT_TEXT  # type: ignore[union-attr]
    assert reply.stop_reason == "end_turn"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (4, 5)
    sent = fake_of(gateway, upstream).last
    if upstream == "claude":
        assert sent.path == "/v1/messages"
        assert sent.body == {
            "model": "claude-sonnet",
            "max_tokens": 100,
            "system": "be brief",
            "messages": HELLO,
            "temperature": 0.5,
            "stop_sequences": ["END"],
            "metadata": {"user_id": "alice"},
        }
        assert sent.headers["x-api-key"] == ANTHROPIC_KEY
        assert "authorization" not in sent.headers  # the client's gateway key stays here
    else:
        assert sent.path == "/v1/chat/completions"
        assert sent.body == {
            "model": "gpt-4o-mini",
            "max_tokens": 100,
            "temperature": 0.5,
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hello there"},
            ],
            "stop": ["END"],
            "user": "alice",
        }
        assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    [row] = gateway.usage(1)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (4, 5)
    assert row["cost"] == cost(upstream, 4, 5)
    assert row["user_id"] == "alice" and row["status"] == "success"
    assert row["endpoint"] == "/v1/messages" and row["model"] == model
    user = gateway.get_user("alice")
    assert user["spend"] == cost(upstream, 4, 5) and user["reserved"] == 0


def test_system_blocks_and_content_blocks(
    gateway: Gateway, sdk: Callable[..., anthropic.Anthropic], upstream: str
) -> None:
    client = sdk(gateway.key())
    system = [
        {"type": "text", "text": "be brief"},
        {"type": "text", "text": "and kind", "cache_control": {"type": "ephemeral"}},
    ]
    messages = [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}]
    reply = client.messages.create(
        model=MODELS[upstream][0], max_tokens=50, system=system, messages=messages
    )  # type: ignore[arg-type]
    assert reply.usage.input_tokens == 6
    sent = fake_of(gateway, upstream).last.body
    if upstream == "claude":
        assert sent["system"] == system and sent["messages"] == messages
    else:
        assert sent["messages"] == [
            {"role": "system", "content": "be brief\n\nand kind"},
            {"role": "user", "content": "hello there"},
        ]


def test_stream_is_the_exact_anthropic_event_sequence(gateway: Gateway, upstream: str) -> None:
    body = {"model": MODELS[upstream][0], "max_tokens": 100, "messages": HELLO, "stream": True}
    events = raw_events(gateway, gateway.key(), body)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 5,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert start["role"] == "assistant" and start["content"] == []
    # Both report the model as the provider named it: pass-through relays the provider's
    # bytes unchanged, translation takes the name from the provider's chunks.
    assert start["model"] == ("claude-sonnet" if upstream == "claude" else "gpt-4o-mini")
    text = "".join(data["delta"]["text"] for name, data in events if name == "content_block_delta")
    assert text == DEFAULT_TEXT
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "end_turn" and delta["usage"]["output_tokens"] == 5
    [row] = gateway.usage(1)
    assert (row["prompt_tokens"], row["completion_tokens"], row["status"]) == (2, 5, "success")
    assert row["cost"] == cost(upstream, 2, 5)
    if upstream == "fake":
        assert fake_of(gateway, upstream).last.body["stream_options"] == {"include_usage": True}


def test_streaming_helpers(
    gateway: Gateway, sdk: Callable[..., anthropic.Anthropic], upstream: str
) -> None:
    gateway.user("alice", max_budget="10")
    client = sdk(gateway.key(user_id="alice"))
    with client.messages.stream(
        model=MODELS[upstream][0], max_tokens=100, system="be brief", messages=HELLO
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == DEFAULT_TEXT
    assert final.content[0].text == DEFAULT_TEXT  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (4, 5)
    [row] = gateway.usage(1)
    assert row["cost"] == cost(upstream, 4, 5) and row["user_id"] == "alice"
    user = gateway.get_user("alice")
    assert user["spend"] == cost(upstream, 4, 5) and user["reserved"] == 0


def test_tool_use_round_trip(
    gateway: Gateway, sdk: Callable[..., anthropic.Anthropic], upstream: str
) -> None:
    fake = fake_of(gateway, upstream)
    client = sdk(gateway.key())
    model = MODELS[upstream][0]
    question = [{"role": "user", "content": "weather in Paris?"}]
    fake.push(tool_calls=(ToolCall("get_weather", {"city": "Paris"}, id="toolu_1"),))
    reply = client.messages.create(
        model=model,
        max_tokens=100,
        messages=question,
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice={"type": "auto"},
    )
    assert reply.stop_reason == "tool_use"
    [call] = reply.content
    assert call.type == "tool_use" and call.id == "toolu_1"
    assert (call.name, call.input) == ("get_weather", {"city": "Paris"})
    if upstream == "claude":
        assert fake.last.body["tools"] == [WEATHER_TOOL]
        assert fake.last.body["tool_choice"] == {"type": "auto"}
    else:
        function = {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": WEATHER_TOOL["input_schema"],
        }
        assert fake.last.body["tools"] == [{"type": "function", "function": function}]
        assert fake.last.body["tool_choice"] == "auto"
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny and warm"}
    follow_up = [
        *question,
        {"role": "assistant", "content": [call.model_dump()]},
        {"role": "user", "content": [result]},
    ]
    fake.push(text="It is sunny")
    answer = client.messages.create(
        model=model,
        max_tokens=100,
        messages=follow_up,  # type: ignore[arg-type]
        tools=[WEATHER_TOOL],
    )  # type: ignore[list-item]
    assert answer.content[0].text == "It is sunny"  # type: ignore[union-attr]
    assert answer.stop_reason == "end_turn"
    sent = fake.last.body["messages"]
    if upstream == "claude":
        assert sent[2] == {"role": "user", "content": [result]}
    else:
        assert sent[1]["tool_calls"][0]["function"] == {
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
        }
        assert sent[2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny and warm"}
    rows = gateway.usage(2)
    assert all(row["status"] == "success" for row in rows)


def test_streamed_tool_use(
    gateway: Gateway, sdk: Callable[..., anthropic.Anthropic], upstream: str
) -> None:
    fake_of(gateway, upstream).push(
        tool_calls=(ToolCall("get_weather", {"city": "Paris", "unit": "celsius"}),)
    )
    client = sdk(gateway.key())
    with client.messages.stream(
        model=MODELS[upstream][0],
        max_tokens=100,
        messages=[{"role": "user", "content": "weather?"}],
        tools=[WEATHER_TOOL],
    ) as stream:  # type: ignore[list-item]
        final = stream.get_final_message()
    [call] = final.content
    assert call.type == "tool_use" and call.name == "get_weather"
    assert call.input == {"city": "Paris", "unit": "celsius"}
    assert final.stop_reason == "tool_use"
    [row] = gateway.usage(1)
    assert row["completion_tokens"] == final.usage.output_tokens > 0


@pytest.mark.parametrize("stream", [False, True])
def test_stop_reasons(
    gateway: Gateway, sdk: Callable[..., anthropic.Anthropic], upstream: str, stream: bool
) -> None:
    client = sdk(gateway.key())
    model = MODELS[upstream][0]

    def ask(**kwargs: Any) -> anthropic.types.Message:
        if not stream:
            return client.messages.create(model=model, messages=HELLO, **kwargs)
        with client.messages.stream(model=model, messages=HELLO, **kwargs) as events:
            return events.get_final_message()

    cut = ask(max_tokens=2)
    assert cut.stop_reason == "max_tokens"
    assert cut.content[0].text == "Hello from"  # type: ignore[union-attr]
    stopped = ask(max_tokens=100, stop_sequences=["fake"])
    assert stopped.content[0].text == "Hello from the"  # type: ignore[union-attr]
    if upstream == "claude":
        assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", "fake")
    else:  # OpenAI reports a stop sequence as a plain stop, without naming it
        assert (stopped.stop_reason, stopped.stop_sequence) == ("end_turn", None)


def test_thinking(gateway: Gateway, sdk: Callable[..., anthropic.Anthropic], upstream: str) -> None:
    fake = fake_of(gateway, upstream)
    thinking = {"type": "enabled", "budget_tokens": 1024}
    if upstream == "fake":
        fake.push(
            body={
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {
                            "role": "assistant",
                            "content": "42",
                            "reasoning_content": "Let me think.",
                        },
                    }
                ],
                "usage": {"prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16},
            }
        )
    reply = sdk(gateway.key()).messages.create(
        model=MODELS[upstream][0], max_tokens=2048, messages=HELLO, thinking=thinking
    )  # type: ignore[arg-type]
    if upstream == "claude":
        assert fake.last.body["thinking"] == thinking  # passed through for the provider
    else:
        assert "thinking" not in fake.last.body  # generic servers refuse it
        assert [block.type for block in reply.content] == ["thinking", "text"]
        assert reply.content[0].thinking == "Let me think."  # type: ignore[union-attr]
        [row] = gateway.usage(1)
        assert (row["prompt_tokens"], row["completion_tokens"]) == (7, 9)


def test_anthropic_headers_reach_an_anthropic_provider(
    gateway: Gateway,
    sdk: Callable[..., anthropic.Anthropic],
) -> None:
    key = gateway.key()
    client = sdk(
        key,
        default_headers={
            "anthropic-beta": "context-1m-2025-08-07",
            "anthropic-version": "2099-01-01",
        },
    )
    client.messages.create(model="claude:claude-sonnet", max_tokens=10, messages=HELLO)
    sent = gateway.anthropic_fake.last.headers
    assert sent["anthropic-beta"] == "context-1m-2025-08-07"
    assert sent["anthropic-version"] == "2099-01-01"
    client.messages.create(model="fake:gpt-4o-mini", max_tokens=10, messages=HELLO)
    assert "anthropic-beta" not in gateway.openai_fake.last.headers
    body = {"model": "claude:claude-sonnet", "max_tokens": 10, "messages": HELLO}
    with httpx.Client(base_url=gateway.url, timeout=30) as http:  # a client without a version
        assert http.post("/v1/messages", headers={"x-api-key": key}, json=body).is_success
    assert gateway.anthropic_fake.last.headers["anthropic-version"] == "2023-06-01"


def test_x_api_key_and_bearer_both_authenticate(gateway: Gateway) -> None:
    key = gateway.key()
    body = {"model": "claude:claude-sonnet", "max_tokens": 10, "messages": HELLO}
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        for headers in (
            {"x-api-key": key},
            {"Authorization": f"Bearer {key}"},
            {"x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01"},
        ):
            response = http.post("/v1/messages", headers=headers, json=body)
            assert response.status_code == 200, response.text
        for headers in ({}, {"x-api-key": "gw-not-a-key"}):
            response = http.post("/v1/messages", headers=headers, json=body)
            assert response.status_code == 401
            assert response.json()["type"] == "error"
            assert response.json()["error"]["type"] == "authentication_error"
    assert len(gateway.anthropic_fake.requests) == 3


def test_attribution_by_metadata_user_id(
    gateway: Gateway, sdk: Callable[..., anthropic.Anthropic]
) -> None:
    gateway.user("alice")
    gateway.user("bob")
    master = sdk(MASTER_KEY)
    master.messages.create(
        model="fake:gpt-4o-mini", max_tokens=10, messages=HELLO, metadata={"user_id": "bob"}
    )
    # An API key's user pays whatever the client puts there (Claude Code: its session id).
    alice = sdk(gateway.key(user_id="alice"))
    alice.messages.create(
        model="claude:claude-sonnet",
        max_tokens=10,
        messages=HELLO,
        metadata={"user_id": "user_0123abcd_account__session_42"},
    )
    alice.messages.create(
        model="fake:gpt-4o-mini", max_tokens=10, messages=HELLO, metadata={"user_id": "bob"}
    )
    with pytest.raises(anthropic.NotFoundError) as info:
        master.messages.create(
            model="fake:gpt-4o-mini", max_tokens=10, messages=HELLO, metadata={"user_id": "ghost"}
        )
    assert info.value.type == "not_found_error"
    rows = gateway.usage(3)
    assert sorted(str(row["user_id"]) for row in rows) == ["alice", "alice", "bob"]
    assert len(gateway.openai_fake.requests) == 2


def test_invalid_requests_answer_in_anthropic_shape(gateway: Gateway) -> None:
    headers = {"x-api-key": gateway.key(), "content-type": "application/json"}
    base = {"model": "claude:claude-sonnet", "max_tokens": 10, "messages": HELLO}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as http:
        for body in (
            b"{not json",
            b"[]",
            json.dumps({**base, "max_tokens": None}).encode(),
            json.dumps({**base, "max_tokens": 0}).encode(),
            json.dumps({**base, "messages": []}).encode(),
            json.dumps({**base, "messages": ["hi"]}).encode(),
            json.dumps({**base, "system": 3}).encode(),
            json.dumps({**base, "metadata": {"user_id": 7}}).encode(),
            json.dumps({**base, "model": "nope:x"}).encode(),
        ):
            response = http.post("/v1/messages", content=body)
            assert response.status_code == 400, body
            assert response.json() == {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": response.json()["error"]["message"],
                },
            }
        # Server tools cannot be translated for an OpenAI-compatible provider.
        response = http.post(
            "/v1/messages",
            json={
                **base,
                "model": "fake:gpt-4o-mini",
                "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            },
        )
        assert response.status_code == 400
        assert "anthropic provider" in response.json()["error"]["message"]
    assert gateway.anthropic_fake.requests == [] and gateway.openai_fake.requests == []
    # The translation failure was admitted, then refused; the unknown model was refused
    # after authentication (its row says so, with no provider and no cost).
    translation, unknown = gateway.usage(2)
    assert translation["status"] == "error" and translation["cost"] == 0
    assert translation["status_code"] == 400
    assert unknown["status"] == "refused" and unknown["status_code"] == 400
    assert unknown["model"] == "nope:x" and unknown["provider"] is None
    assert unknown["cost"] is None and unknown["error_message"].startswith(
        "unknown provider 'nope'"
    )


def test_budget_refusal_in_anthropic_shape(
    gateway: Gateway, sdk: Callable[..., anthropic.Anthropic], upstream: str
) -> None:
    gateway.user("poor", max_budget="0.000001")
    client = sdk(gateway.key(user_id="poor"))
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(model=MODELS[upstream][0], max_tokens=100, messages=HELLO)
    assert info.value.status_code == 402
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "billing_error"
    assert "Budget exceeded for user 'poor'" in body["error"]["message"]
    assert fake_of(gateway, upstream).requests == []
    assert gateway.get_user("poor")["reserved"] == 0


def test_api_prefix(gateway: Gateway) -> None:
    client = anthropic.Anthropic(
        base_url=f"{gateway.url}/api", api_key=gateway.key(), max_retries=0
    )
    with client:
        reply = client.messages.create(model="claude:claude-sonnet", max_tokens=10, messages=HELLO)
    assert reply.content[0].text == DEFAULT_TEXT  # type: ignore[union-attr]


def test_count_tokens_is_a_free_estimate(
    gateway: Gateway, sdk: Callable[..., anthropic.Anthropic]
) -> None:
    gateway.user("alice", max_budget="10")
    client = sdk(gateway.key(user_id="alice"))
    small = client.messages.count_tokens(model="claude:claude-sonnet", messages=HELLO)
    assert 2 <= small.input_tokens <= 20
    long_text = "lorem ipsum dolor sit amet " * 400  # 10,800 bytes: about 2,700 tokens
    big = client.messages.count_tokens(
        model="fake:gpt-4o-mini",
        system="be brief",
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        messages=[{"role": "user", "content": long_text}],
    )
    assert 2700 <= big.input_tokens <= 2900
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo" * 10_000},
    }
    with_image = client.messages.count_tokens(
        model="claude:claude-sonnet",
        messages=[{"role": "user", "content": [image, {"type": "text", "text": "what?"}]}],
    )
    assert 1600 <= with_image.input_tokens <= 1700  # an image is priced, not its base64 size
    assert gateway.anthropic_fake.requests == [] and gateway.openai_fake.requests == []
    client.messages.create(model="claude:claude-sonnet", max_tokens=10, messages=HELLO)
    [row] = gateway.usage(1)  # only the real request was metered
    assert row["endpoint"] == "/v1/messages"
    assert gateway.get_user("alice")["spend"] == row["cost"]


def test_count_tokens_checks_key_and_model(gateway: Gateway) -> None:
    body = {"model": "claude:claude-sonnet", "messages": HELLO}
    limited = gateway.key(allowed_models=["fake:*"])
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        response = http.post("/v1/messages/count_tokens", json=body)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"
        response = http.post("/v1/messages/count_tokens", json=body, headers={"x-api-key": limited})
        assert response.status_code == 403
        assert response.json()["error"]["type"] == "permission_error"
        for bad in ({**body, "model": "nope:x"}, {"model": "claude:claude-sonnet"}):
            response = http.post(
                "/v1/messages/count_tokens", json=bad, headers={"x-api-key": limited}
            )
            assert response.status_code == 400
            assert response.json()["error"]["type"] == "invalid_request_error"
        response = http.post(
            "/api/v1/messages/count_tokens",
            json={**body, "model": "fake:m"},
            headers={"x-api-key": limited},
        )
        assert response.status_code == 200 and response.json()["input_tokens"] > 0

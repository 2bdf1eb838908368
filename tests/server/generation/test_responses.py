"""POST /v1/responses end to end: official openai SDK -> otari -> fake provider servers.

The OpenAI-type provider ("fake") serves the Responses API itself and is passed through; the
Anthropic one ("claude") is reached by translation (Responses -> chat -> Messages and back).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from tests.support.fakes import DEFAULT_TEXT, Behaviour, Failure, ToolCall
from tests.support.fakes_responses import FakeOpenAIResponses
from tests.support.gateway import ANTHROPIC_KEY, UPSTREAM_KEY, Gateway, gateway_factory_fixture
from tests.support.servers import MASTER_KEY

OPENAI_MODEL = "fake:gpt-4o-mini"
CLAUDE_MODEL = "claude:claude-sonnet"

TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    *["response.output_text.delta"] * 5,  # one per word of DEFAULT_TEXT
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]
CALL_EVENTS = [
    "response.output_item.added",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.output_item.done",
]
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture
def gateway_factory(database_url: str) -> Iterator[Callable[..., Gateway]]:
    """Gateways whose OpenAI-type fake also serves /v1/responses."""
    yield from gateway_factory_fixture(database_url, FakeOpenAIResponses)


@pytest.fixture
def gateway(gateway_factory: Callable[..., Gateway]) -> Gateway:
    gw = gateway_factory()
    gw.price(OPENAI_MODEL, "1", "2")
    gw.price(CLAUDE_MODEL, "3", "15")
    return gw


def fake(gateway: Gateway) -> FakeOpenAIResponses:
    assert isinstance(gateway.openai_fake, FakeOpenAIResponses)
    return gateway.openai_fake


def types(events: list[ResponseStreamEvent]) -> list[str]:
    return [event.type for event in events]


def streamed_text(events: list[ResponseStreamEvent]) -> str:
    return "".join(e.delta for e in events if e.type == "response.output_text.delta")


def wait_reserved_zero(gateway: Gateway, user_id: str) -> None:
    deadline = time.monotonic() + 10
    while gateway.get_user(user_id)["reserved"] != 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gateway.get_user(user_id)["reserved"] == 0


# -- providers that serve the Responses API: passed through ----------------------------------


def test_openai_json_passes_through_and_meters_exactly(gateway: Gateway) -> None:
    gateway.user("alice", max_budget="10")
    client = gateway.client(gateway.key(user_id="alice"))
    reply = client.responses.create(
        model=OPENAI_MODEL,
        input="say hello please",
        temperature=0.3,
        store=False,
        max_output_tokens=50,
        tools=[WEATHER],
        tool_choice="auto",  # type: ignore[list-item]
        include=["reasoning.encrypted_content"],
        extra_body={"custom_knob": {"a": 1}},
    )
    assert isinstance(reply, Response) and reply.output_text == DEFAULT_TEXT
    assert reply.status == "completed" and reply.model == "gpt-4o-mini"
    usage = reply.usage
    assert usage is not None and (usage.input_tokens, usage.output_tokens) == (3, 5)
    sent = fake(gateway).last
    assert sent.path == "/v1/responses" and sent.body["model"] == "gpt-4o-mini"
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    for field, value in (
        ("input", "say hello please"),
        ("temperature", 0.3),
        ("store", False),
        ("max_output_tokens", 50),
        ("tools", [WEATHER]),
        ("tool_choice", "auto"),
        ("custom_knob", {"a": 1}),
        ("include", ["reasoning.encrypted_content"]),
    ):
        assert sent.body[field] == value, field
    assert "stream" not in sent.body
    [row] = gateway.usage(1)
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (3, 5, 8)
    assert row["cost"] == Decimal("0.000013")  # 3 x $1/M + 5 x $2/M, exactly
    assert row["user_id"] == "alice" and row["status"] == "success"
    assert row["endpoint"] == "/v1/responses" and row["model"] == OPENAI_MODEL
    assert row["provider"] == "fake"
    user = gateway.get_user("alice")
    assert user["spend"] == Decimal("0.000013") and user["reserved"] == 0


def test_openai_stream_relays_the_typed_events_and_bills(gateway: Gateway) -> None:
    gateway.user("alice", max_budget="10")
    client = gateway.client(gateway.key(user_id="alice"))
    events = list(
        client.responses.create(
            model=OPENAI_MODEL, input="hi there", instructions="be brief", stream=True
        )
    )
    assert types(events) == TEXT_EVENTS
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert streamed_text(events) == DEFAULT_TEXT
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.output_text == DEFAULT_TEXT
    usage = completed.response.usage
    assert usage is not None and (usage.input_tokens, usage.output_tokens) == (4, 5)
    assert fake(gateway).last.body["stream"] is True
    assert "stream_options" not in fake(gateway).last.body
    [row] = gateway.usage(1)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (4, 5)
    assert row["cost"] == Decimal("0.000014") and row["status"] == "success"
    assert gateway.get_user("alice")["spend"] == Decimal("0.000014")


def test_openai_stream_keeps_event_lines_and_arrives_as_it_is_made(gateway: Gateway) -> None:
    gate = fake(gateway).gate()
    fake(gateway).push(Behaviour(gate=gate, hold_after=3))
    headers = {"Authorization": f"Bearer {gateway.key()}"}
    with (
        httpx.Client(base_url=gateway.url, timeout=30) as http,
        http.stream(
            "POST",
            "/v1/responses",
            headers=headers,
            json={"model": OPENAI_MODEL, "input": "hi", "stream": True},
        ) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        # Would block forever if the gateway buffered the stream: the provider is held.
        assert next(lines) == "event: response.created"
        assert next(lines).startswith('data: {"type":"response.created","sequence_number":0')
        gate.release()
        rest = list(lines)
    assert "event: response.completed" in rest
    assert gateway.usage(1)[0]["status"] == "success"


def test_openai_function_calls_pass_through(gateway: Gateway) -> None:
    client = gateway.client(gateway.key())
    fake(gateway).push(tool_calls=(ToolCall("get_weather", {"city": "Paris"}),))
    reply = client.responses.create(model=OPENAI_MODEL, input="weather in Paris?", tools=[WEATHER])  # type: ignore[list-item]
    [call] = reply.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.arguments == '{"city":"Paris"}' and call.call_id.startswith("call_")
    fake(gateway).push(tool_calls=(ToolCall("get_weather", {"city": "Rome"}),))
    events = list(
        client.responses.create(model=OPENAI_MODEL, input="and Rome?", tools=[WEATHER], stream=True)
    )  # type: ignore[list-item]
    names = types(events)
    assert names[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert names[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    arguments = "".join(
        e.delta for e in events if e.type == "response.function_call_arguments.delta"
    )
    assert arguments == '{"city":"Rome"}'
    rows = gateway.usage(2)
    # Output tokens of a call: the words of its name and of its JSON arguments.
    assert sorted(r["completion_tokens"] for r in rows) == [2, 2]


def test_openai_cached_input_tokens_are_billed_at_the_cache_price(
    gateway_factory: Callable[..., Gateway],
) -> None:
    gateway = gateway_factory()
    gateway.admin.post(
        "/v1/pricing",
        json={
            "model_key": OPENAI_MODEL,
            "input_price_per_million": 10,
            "output_price_per_million": 20,
            "cache_read_price_per_million": 1,
        },
    )
    fake(gateway).cached_tokens = 2
    client = gateway.client(gateway.key())
    client.responses.create(model=OPENAI_MODEL, input="one two three four")
    list(client.responses.create(model=OPENAI_MODEL, input="one two three four", stream=True))
    for row in gateway.usage(2):
        assert row["cache_read_tokens"] == 2 and row["prompt_tokens"] == 4
        # 2 fresh x $10/M + 2 cached x $1/M + 5 output x $20/M
        assert row["cost"] == Decimal("0.000122")


def test_openai_incomplete_answer_is_billed(gateway: Gateway) -> None:
    client = gateway.client(gateway.key())
    reply = client.responses.create(model=OPENAI_MODEL, input="hi", max_output_tokens=2)
    assert reply.status == "incomplete" and reply.incomplete_details is not None
    assert reply.incomplete_details.reason == "max_output_tokens"
    events = list(
        client.responses.create(model=OPENAI_MODEL, input="hi", max_output_tokens=2, stream=True)
    )
    assert events[-1].type == "response.incomplete"
    rows = gateway.usage(2)
    assert [r["completion_tokens"] for r in rows] == [2, 2]
    assert all(r["status"] == "success" for r in rows)


# -- anthropic providers: translated -------------------------------------------------------


def test_anthropic_json_translated_both_ways(gateway: Gateway) -> None:
    gateway.user("alice", max_budget="10")
    client = gateway.client(gateway.key(user_id="alice"))
    reply = client.responses.create(
        model=CLAUDE_MODEL,
        instructions="be brief",
        input="hello there",
        max_output_tokens=100,
        temperature=0.5,
    )
    assert reply.output_text == DEFAULT_TEXT and reply.status == "completed"
    assert reply.model == "claude-sonnet" and reply.id.startswith("resp_")  # provider's name
    assert reply.output[0].type == "message" and reply.output[0].role == "assistant"
    usage = reply.usage
    assert usage is not None and (usage.input_tokens, usage.output_tokens) == (4, 5)
    assert usage.total_tokens == 9 and usage.input_tokens_details.cached_tokens == 0
    sent = gateway.anthropic_fake.last
    assert sent.path == "/v1/messages" and sent.headers["x-api-key"] == ANTHROPIC_KEY
    assert sent.body == {
        "model": "claude-sonnet",
        "system": "be brief",
        "max_tokens": 100,
        "temperature": 0.5,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}],
    }
    [row] = gateway.usage(1)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (4, 5)
    assert row["cost"] == Decimal("0.000087")  # 4 x $3/M + 5 x $15/M
    assert row["provider"] == "claude" and row["endpoint"] == "/v1/responses"
    user = gateway.get_user("alice")
    assert user["spend"] == Decimal("0.000087") and user["reserved"] == 0


def test_anthropic_stream_produces_the_typed_event_sequence(gateway: Gateway) -> None:
    gateway.user("alice", max_budget="10")
    client = gateway.client(gateway.key(user_id="alice"))
    events = list(
        client.responses.create(
            model=CLAUDE_MODEL, input="hello there", instructions="be brief", stream=True
        )
    )
    assert types(events) == TEXT_EVENTS
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert streamed_text(events) == DEFAULT_TEXT
    created, completed = events[0], events[-1]
    assert created.type == "response.created" and created.response.status == "in_progress"
    assert completed.type == "response.completed"
    assert completed.response.id == created.response.id
    assert completed.response.output_text == DEFAULT_TEXT
    usage = completed.response.usage
    assert usage is not None and (usage.input_tokens, usage.output_tokens) == (4, 5)
    assert gateway.anthropic_fake.last.body["stream"] is True
    [row] = gateway.usage(1)
    assert row["cost"] == Decimal("0.000087") and row["status"] == "success"
    assert gateway.get_user("alice")["spend"] == Decimal("0.000087")


def test_anthropic_function_call_round_trip(gateway: Gateway) -> None:
    client = gateway.client(gateway.key())
    gateway.anthropic_fake.push(tool_calls=(ToolCall("get_weather", {"city": "Paris"}),))
    first = client.responses.create(
        model=CLAUDE_MODEL, input="weather in Paris?", tools=[WEATHER], tool_choice="required"
    )  # type: ignore[list-item]
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.arguments == '{"city":"Paris"}' and call.call_id.startswith("toolu_fake")
    assert call.status == "completed" and call.id is not None and call.id.startswith("fc_")
    sent = gateway.anthropic_fake.last.body
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather in a city",
            "input_schema": WEATHER["parameters"],
        }
    ]
    assert sent["tool_choice"] == {"type": "any"}

    history: list[Any] = [
        {"role": "user", "content": "weather in Paris?"},
        *[item.model_dump(exclude_none=True) for item in first.output],
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny and 22C"},
    ]
    second = client.responses.create(model=CLAUDE_MODEL, input=history, tools=[WEATHER])  # type: ignore[list-item]
    assert second.output_text == DEFAULT_TEXT
    messages = gateway.anthropic_fake.last.body["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": [
            {
                "type": "tool_use",
                "id": call.call_id,
                "name": "get_weather",
                "input": {"city": "Paris"},
            }
        ],
    }
    assert messages[2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": call.call_id, "content": "sunny and 22C"}
        ],
    }
    assert len(gateway.usage(2)) == 2


def test_anthropic_streamed_function_call(gateway: Gateway) -> None:
    client = gateway.client(gateway.key())
    gateway.anthropic_fake.push(
        text="Let me check.", tool_calls=(ToolCall("get_weather", {"city": "Rome"}),)
    )
    events = list(
        client.responses.create(
            model=CLAUDE_MODEL, input="weather in Rome?", tools=[WEATHER], stream=True
        )
    )  # type: ignore[list-item]
    names = types(events)
    deltas = names.count("response.function_call_arguments.delta")
    assert deltas >= 2
    assert names == [
        *TEXT_EVENTS[:4],
        *["response.output_text.delta"] * 3,
        *TEXT_EVENTS[-4:-1],
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * deltas,
        *CALL_EVENTS[2:],
        "response.completed",
    ]
    arguments = "".join(
        e.delta for e in events if e.type == "response.function_call_arguments.delta"
    )
    assert arguments == '{"city":"Rome"}'
    final = events[-1]
    assert final.type == "response.completed"
    message, call = final.response.output
    assert message.type == "message" and final.response.output_text == "Let me check."
    assert call.type == "function_call" and call.call_id.startswith("toolu_fake")
    assert call.arguments == '{"city":"Rome"}' and call.name == "get_weather"
    [row] = gateway.usage(1)
    assert row["status"] == "success" and row["completion_tokens"] == 3 + 2


def test_anthropic_max_output_tokens_makes_an_incomplete_response(gateway: Gateway) -> None:
    client = gateway.client(gateway.key())
    reply = client.responses.create(model=CLAUDE_MODEL, input="hi", max_output_tokens=2)
    assert reply.status == "incomplete" and reply.output_text == "Hello from"
    assert reply.incomplete_details is not None
    assert reply.incomplete_details.reason == "max_output_tokens"
    events = list(
        client.responses.create(model=CLAUDE_MODEL, input="hi", max_output_tokens=2, stream=True)
    )
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details is not None
    assert gateway.anthropic_fake.last.body["max_tokens"] == 2
    assert [r["completion_tokens"] for r in gateway.usage(2)] == [2, 2]


def test_untranslatable_requests_are_refused_for_anthropic(gateway: Gateway) -> None:
    client = gateway.client(gateway.key())
    for kwargs, problem in (
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"tools": [{"type": "web_search"}]}, "'web_search' tools"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "item references"),
    ):
        with pytest.raises(openai.BadRequestError) as info:
            client.responses.create(**{"model": CLAUDE_MODEL, "input": "hi", **kwargs})
        assert problem in str(info.value)
    assert gateway.anthropic_fake.requests == []


# -- both kinds ----------------------------------------------------------------------------


@pytest.mark.parametrize("model", [OPENAI_MODEL, CLAUDE_MODEL])
def test_sdk_stream_helper_and_async_client(gateway: Gateway, model: str) -> None:
    key = gateway.key()
    with gateway.client(key).responses.stream(model=model, input="hi") as stream:
        final = stream.get_final_response()
    assert final.output_text == DEFAULT_TEXT

    async def run() -> tuple[str, str]:
        client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)
        reply = await client.responses.create(model=model, input="hi")
        text = ""
        async for event in await client.responses.create(model=model, input="hi", stream=True):
            if event.type == "response.output_text.delta":
                text += event.delta
        await client.close()
        return reply.output_text, text

    assert asyncio.run(run()) == (DEFAULT_TEXT, DEFAULT_TEXT)
    assert all(r["status"] == "success" for r in gateway.usage(3))


@pytest.mark.parametrize("model", [OPENAI_MODEL, CLAUDE_MODEL])
def test_provider_4xx_keeps_its_status_in_the_openai_shape(gateway: Gateway, model: str) -> None:
    upstream = gateway.openai_fake if model == OPENAI_MODEL else gateway.anthropic_fake
    upstream.fail(429, "Slow down", type="rate_limit_error")
    client = gateway.client(gateway.key())
    with pytest.raises(openai.RateLimitError) as info:
        client.responses.create(model=model, input="hi")
    body = info.value.body
    assert isinstance(body, dict) and "Slow down" in body["message"]
    assert body["code"] == "rate_limit_exceeded" and body["type"] == "rate_limit_error"
    upstream.fail(400, "Bad thing")
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=model, input="hi", stream=True)
    rows = gateway.usage(2)
    assert all(r["status"] == "error" and r["cost"] == 0 for r in rows)


@pytest.mark.parametrize("model", [OPENAI_MODEL, CLAUDE_MODEL])
def test_provider_5xx_becomes_502(gateway: Gateway, model: str) -> None:
    gateway.user("alice", max_budget="1")
    upstream = gateway.openai_fake if model == OPENAI_MODEL else gateway.anthropic_fake
    upstream.fail(500, "The server had an error")
    with pytest.raises(openai.APIStatusError) as info:
        gateway.client(gateway.key(user_id="alice")).responses.create(model=model, input="hi")
    assert info.value.status_code == 502
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "upstream_error"
    assert "The server had an error" in body["message"]
    [row] = gateway.usage(1)
    assert row["status"] == "error"
    assert gateway.get_user("alice")["reserved"] == 0


@pytest.mark.parametrize("model", [OPENAI_MODEL, CLAUDE_MODEL])
def test_budget_refusal_happens_before_any_provider_call(gateway: Gateway, model: str) -> None:
    gateway.user("poor", max_budget="0.000001")
    client = gateway.client(gateway.key(user_id="poor"))
    for stream in (False, True):
        with pytest.raises(openai.APIStatusError) as info:
            client.responses.create(model=model, input="hi", max_output_tokens=100, stream=stream)
        assert info.value.status_code == 402
        body = info.value.body
        assert isinstance(body, dict) and body["code"] == "budget_exceeded"
    assert gateway.openai_fake.requests == [] and gateway.anthropic_fake.requests == []
    assert gateway.get_user("poor")["spend"] == 0


def test_attribution_follows_the_user_field(gateway: Gateway) -> None:
    gateway.user("alice")
    gateway.user("bob")
    alice = gateway.client(gateway.key(user_id="alice"))
    with pytest.raises(openai.PermissionDeniedError):
        alice.responses.create(model=OPENAI_MODEL, input="x", user="bob")
    alice.responses.create(model=OPENAI_MODEL, input="x", user="alice")
    master = gateway.client(MASTER_KEY)
    master.responses.create(model=OPENAI_MODEL, input="x", user="bob")
    master.responses.create(model=CLAUDE_MODEL, input="x", user="bob")
    with pytest.raises(openai.NotFoundError):
        master.responses.create(model=OPENAI_MODEL, input="x", user="ghost")
    assert fake(gateway).last.body["user"] == "bob"
    assert gateway.anthropic_fake.last.body["metadata"] == {"user_id": "bob"}
    rows = gateway.usage(3)
    assert sorted(str(r["user_id"]) for r in rows) == ["alice", "bob", "bob"]
    assert gateway.get_user("bob")["spend"] == sum(
        (r["cost"] for r in rows if r["user_id"] == "bob"), Decimal(0)
    )


def test_malformed_requests_are_refused_before_any_provider_call(gateway: Gateway) -> None:
    headers = {"Authorization": f"Bearer {gateway.key()}", "content-type": "application/json"}
    with httpx.Client(base_url=gateway.url, headers=headers) as http:
        for body in (
            b"{not json",
            b'{"model": "fake:gpt-4o-mini"}',
            b'{"model": "fake:gpt-4o-mini", "input": []}',
            b'{"model": "fake:gpt-4o-mini", "input": 5}',
            b'{"model": "claude:claude-sonnet", "input": ["hi"]}',
            b'{"model": "fake:gpt-4o-mini", "input": "x", "stream": "yes"}',
            b'{"model": "fake:gpt-4o-mini", "input": "x", "max_output_tokens": 0}',
            b'{"model": "gpt-4o", "input": "x"}',
        ):
            response = http.post("/v1/responses", content=body)
            assert response.status_code == 400, body
            error = response.json()["error"]
            assert error["type"] == "invalid_request_error" and error["message"]
    assert gateway.openai_fake.requests == [] and gateway.anthropic_fake.requests == []


# -- failures inside a stream ---------------------------------------------------------------


def test_openai_error_event_inside_a_stream_is_relayed(gateway: Gateway) -> None:
    fake(gateway).push(error=Failure(500, "overloaded mid-stream"), error_after=5)
    events = list(
        gateway.client(gateway.key()).responses.create(model=OPENAI_MODEL, input="hi", stream=True)
    )
    assert types(events)[-1] == "error"
    assert events[-1].type == "error" and events[-1].message == "overloaded mid-stream"
    [row] = gateway.usage(1)
    assert row["status"] == "error" and row["error_message"] == (
        "overloaded mid-stream; usage estimated by the gateway (no usage report from the provider)"
    )
    assert row["completion_tokens"] == 1  # one text delta seen before the failure


def test_openai_stream_cut_midway_ends_with_an_error_event(gateway: Gateway) -> None:
    gateway.user("alice", max_budget="1")
    fake(gateway).push(cut_after=6)
    events = list(
        gateway.client(gateway.key(user_id="alice")).responses.create(
            model=OPENAI_MODEL, input="hi", stream=True
        )
    )
    last = events[-1]
    assert last.type == "error" and "provider 'fake'" in last.message
    assert last.code == "stream_interrupted" and last.sequence_number == 6
    [row] = gateway.usage(1)
    assert row["status"] == "error" and row["completion_tokens"] == 2
    wait_reserved_zero(gateway, "alice")


def test_anthropic_error_inside_a_stream_fails_the_response(gateway: Gateway) -> None:
    gateway.anthropic_fake.push(error=Failure(529, "Overloaded"), error_after=4)
    events = list(
        gateway.client(gateway.key()).responses.create(model=CLAUDE_MODEL, input="hi", stream=True)
    )
    assert types(events)[-2:] == ["error", "response.failed"]
    failed = events[-1]
    assert failed.type == "response.failed" and failed.response.status == "failed"
    assert failed.response.error is not None and failed.response.error.message == "Overloaded"
    [row] = gateway.usage(1)
    assert row["status"] == "error" and row["error_message"] == "Overloaded"


def test_anthropic_stream_cut_midway_fails_the_response(gateway: Gateway) -> None:
    gateway.user("alice", max_budget="1")
    gateway.anthropic_fake.push(cut_after=5)
    events = list(
        gateway.client(gateway.key(user_id="alice")).responses.create(
            model=CLAUDE_MODEL, input="hello there", stream=True
        )
    )
    assert types(events)[-2:] == ["error", "response.failed"]
    assert "provider 'claude'" in events[-2].message  # type: ignore[union-attr]
    [row] = gateway.usage(1)
    # message_start reported the input tokens before the cut.
    assert row["status"] == "error" and row["prompt_tokens"] == 2
    wait_reserved_zero(gateway, "alice")


def test_client_disconnect_mid_stream_is_recorded_and_settled(gateway: Gateway) -> None:
    gateway.user("alice", max_budget="1")
    gate = fake(gateway).gate()
    fake(gateway).push(Behaviour(gate=gate, hold_after=3))
    key = gateway.key(user_id="alice")
    with (
        httpx.Client(base_url=gateway.url, timeout=30) as http,
        http.stream(
            "POST",
            "/v1/responses",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": OPENAI_MODEL, "input": "hi", "stream": True},
        ) as response,
    ):
        assert next(response.iter_bytes()).startswith(b"event: response.created")
    # No wait at the gate: the relay may stop before the provider even reaches it.
    [row] = gateway.usage(1)
    gate.release()
    assert row["status"] == "client_disconnected"
    wait_reserved_zero(gateway, "alice")

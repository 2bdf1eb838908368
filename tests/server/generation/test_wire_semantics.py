"""What SDKs see through translation, end to end: official openai/anthropic SDKs -> otari -> fakes.

Issue 12 (tool calls without arguments, parallel calls on /v1/messages, Anthropic error types
and request ids, logprobs, the model field), issue 18 (thinking through a chat or Responses
tool loop, matched stop strings) and issue 22 (translated /v1/messages answers look native).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.support.fakes import Behaviour, FakeOpenAI, ToolCall, thinking_signature
from tests.support.gateway import Gateway, gateway_factory_fixture, gateway_fixture

HELLO: Any = [{"role": "user", "content": "hello there"}]
WEATHER = ToolCall("get_weather", {"city": "Paris"})
CHAT_TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    },
    {"type": "function", "function": {"name": "now"}},
]
MESSAGES_TOOLS: Any = [
    {
        "name": "get_weather",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
    {"name": "now", "input_schema": {"type": "object", "properties": {}}},
]
RESPONSES_TOOLS: Any = [
    {
        "type": "function",
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
    {"type": "function", "name": "now", "parameters": {"type": "object", "properties": {}}},
]
THOUGHT = "The user wants the weather, so call the tool"


class FakeVLLM(FakeOpenAI):
    """An OpenAI-compatible server that names the stop string that matched, as vLLM does."""

    names_stop_string = True


@pytest.fixture
def vllm_gateway(database_url: str) -> Iterator[Gateway]:
    for start in gateway_factory_fixture(database_url, openai_fake=FakeVLLM):
        yield gateway_fixture(start)


@pytest.fixture
def claude(gateway: Gateway) -> Callable[[str], anthropic.Anthropic]:
    return gateway.anthropic


def streamed_arguments(stream: Any) -> dict[int, str]:
    arguments: dict[int, str] = {}
    for chunk in stream:
        for call in (chunk.choices[0].delta.tool_calls or ()) if chunk.choices else ():
            piece = call.function.arguments if call.function else None
            arguments[call.index] = arguments.get(call.index, "") + (piece or "")
    return arguments


def test_tool_calls_without_arguments_stream_as_empty_object(gateway: Gateway) -> None:
    client = gateway.client(gateway.key())
    calls = (WEATHER, ToolCall("now"))
    gateway.anthropic_fake.push(tool_calls=calls)
    answer = client.chat.completions.create(
        model="claude:claude-sonnet", messages=HELLO, tools=CHAT_TOOLS
    )
    whole = [
        c.function.arguments
        for c in answer.choices[0].message.tool_calls or ()
        if c.type == "function"
    ]
    assert whole == ['{"city":"Paris"}', "{}"]
    gateway.anthropic_fake.push(tool_calls=calls)
    stream = client.chat.completions.create(
        model="claude:claude-sonnet", messages=HELLO, tools=CHAT_TOOLS, stream=True
    )
    assert streamed_arguments(stream) == {0: '{"city":"Paris"}', 1: "{}"}
    # The Responses API through the same provider, streamed and not.
    gateway.anthropic_fake.push(tool_calls=calls)
    with client.responses.stream(
        model="claude:claude-sonnet", input="weather and time?", tools=RESPONSES_TOOLS
    ) as events:
        final = events.get_final_response()
    assert [(i.name, i.arguments) for i in final.output if i.type == "function_call"] == [
        ("get_weather", '{"city":"Paris"}'),
        ("now", "{}"),
    ]
    gateway.anthropic_fake.push(tool_calls=calls)
    plain = client.responses.create(
        model="claude:claude-sonnet", input="weather and time?", tools=RESPONSES_TOOLS
    )
    assert [(i.name, i.arguments) for i in plain.output if i.type == "function_call"] == [
        ("get_weather", '{"city":"Paris"}'),
        ("now", "{}"),
    ]
    assert len(gateway.usage(4)) == 4


def test_interleaved_parallel_calls_reach_the_anthropic_sdk_whole(
    gateway: Gateway, claude: Callable[..., anthropic.Anthropic]
) -> None:
    client = claude(gateway.key())
    gateway.openai_fake.push(
        tool_calls=(WEATHER, ToolCall("now"), ToolCall("get_weather", {"city": "Oslo"})),
        interleave=True,
    )
    at_stop = []
    with client.messages.stream(
        model="fake:gpt-4o-mini", max_tokens=100, messages=HELLO, tools=MESSAGES_TOOLS
    ) as stream:
        for event in stream:
            if event.type == "content_block_stop" and event.content_block.type == "tool_use":
                at_stop.append((event.content_block.name, event.content_block.input))
        final = stream.get_final_message()
    # An agent acting at each block's stop calls each tool with its own arguments.
    assert at_stop == [
        ("get_weather", {"city": "Paris"}),
        ("now", {}),
        ("get_weather", {"city": "Oslo"}),
    ]
    assert [b.input for b in final.content if b.type == "tool_use"] == [
        {"city": "Paris"},
        {},
        {"city": "Oslo"},
    ]
    assert final.stop_reason == "tool_use"
    sent = gateway.openai_fake.last.body
    assert sent["stream"] is True and len(sent["tools"]) == 2


def test_anthropic_answers_speak_anthropic(
    gateway: Gateway, claude: Callable[..., anthropic.Anthropic]
) -> None:
    client = claude(gateway.key())
    for model in ("claude:claude-sonnet", "fake:gpt-4o-mini"):
        raw = client.messages.with_raw_response.create(model=model, max_tokens=50, messages=HELLO)
        reply = raw.parse()
        assert reply._request_id == raw.headers["request-id"] == raw.headers["x-request-id"]
        with client.messages.create(
            model=model, max_tokens=50, messages=HELLO, stream=True
        ) as stream:
            list(stream)
            assert stream.response.headers["request-id"] == stream.response.headers["x-request-id"]
        with pytest.raises(anthropic.BadRequestError) as refused:
            client.messages.create(model="nope:x", max_tokens=50, messages=HELLO)
        assert refused.value.request_id == refused.value.response.headers["x-request-id"]
    rows = gateway.usage(6)  # 4 served, 2 refused (the unknown provider leaves a row too)
    ids = {row["request_id"] for row in rows}
    assert reply._request_id in ids
    assert refused.value.request_id in {
        row["request_id"] for row in rows if row["status"] == "refused"
    }
    # A budget refusal is Anthropic's billing_error, with the request id too.
    gateway.user("poor", max_budget="0.000001")
    poor = claude(gateway.key(user_id="poor"))
    with pytest.raises(anthropic.APIStatusError) as info:
        poor.messages.create(model="claude:claude-sonnet", max_tokens=100, messages=HELLO)
    assert info.value.status_code == 402
    assert info.value.body == {
        "type": "error",
        "error": {"type": "billing_error", "message": info.value.body["error"]["message"]},
    }  # type: ignore[index]
    assert info.value.request_id is not None
    # count_tokens is Anthropic-shaped as well.
    counted = client.messages.with_raw_response.count_tokens(
        model="claude:claude-sonnet", messages=HELLO
    )
    assert counted.headers["request-id"] == counted.headers["x-request-id"]


def test_logprobs_from_an_anthropic_provider_are_refused(gateway: Gateway) -> None:
    client = gateway.client(gateway.key())
    for fields in ({"logprobs": True}, {"logprobs": True, "top_logprobs": 3}):
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="claude:claude-sonnet", messages=HELLO, **fields)
        assert refused.value.status_code == 400
        assert refused.value.body["message"] == (  # type: ignore[index]
            "logprobs: unsupported, anthropic providers do not return log probabilities"
        )
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="claude:claude-sonnet", input="hi", top_logprobs=2)
    assert refused.value.body["message"] == (  # type: ignore[index]
        "logprobs: unsupported, anthropic providers do not return log probabilities"
    )
    assert gateway.anthropic_fake.requests == []
    # The OpenAI-compatible provider gets them as asked.
    client.chat.completions.create(model="fake:gpt-4o-mini", messages=HELLO, logprobs=True)
    assert gateway.openai_fake.last.body["logprobs"] is True


def test_every_answer_names_the_model_as_the_provider_did(
    gateway: Gateway, claude: Callable[..., anthropic.Anthropic]
) -> None:
    chat = gateway.client(gateway.key())
    messages = claude(gateway.key())
    for model, upstream in (
        ("claude:claude-sonnet", "claude-sonnet"),
        ("fake:gpt-4o-mini", "gpt-4o-mini"),
    ):
        # /v1/chat/completions: passed through for fake, translated for claude.
        assert chat.chat.completions.create(model=model, messages=HELLO).model == upstream
        chunks = list(chat.chat.completions.create(model=model, messages=HELLO, stream=True))
        assert {chunk.model for chunk in chunks} == {upstream}
        # /v1/messages: passed through for claude, translated for fake.
        reply = messages.messages.create(model=model, max_tokens=50, messages=HELLO)
        assert reply.model == upstream and reply.id.startswith("msg_")
        with messages.messages.stream(model=model, max_tokens=50, messages=HELLO) as stream:
            final = stream.get_final_message()
        assert final.model == upstream and final.id.startswith("msg_")
    # /v1/responses, translated for claude.
    answer = chat.responses.create(model="claude:claude-sonnet", input="hi")
    assert answer.model == "claude-sonnet"
    with chat.responses.stream(model="claude:claude-sonnet", input="hi") as events:
        assert events.get_final_response().model == "claude-sonnet"


def test_translated_messages_stream_usage_ends_in_the_real_counts(gateway: Gateway) -> None:
    """message_start's input_tokens is an estimate; message_delta carries the real counts."""
    body = {"model": "fake:gpt-4o-mini", "max_tokens": 50, "messages": HELLO, "stream": True}
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        text = http.post("/v1/messages", headers={"x-api-key": gateway.key()}, json=body).text
    events = [
        json.loads(line.removeprefix("data: "))
        for line in text.split("\n")
        if line.startswith("data: ")
    ]
    start, delta = events[0], next(e for e in events if e["type"] == "message_delta")
    assert start["message"]["id"].startswith("msg_")
    assert start["message"]["model"] == "gpt-4o-mini"
    assert start["message"]["usage"]["output_tokens"] == 0
    assert delta["usage"] == {
        "input_tokens": 2,
        "output_tokens": 5,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }
    [row] = gateway.usage(1)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (2, 5)


def test_thinking_survives_a_chat_tool_loop(gateway: Gateway) -> None:
    client = gateway.client(gateway.key())
    thinking = [
        {"type": "thinking", "thinking": THOUGHT, "signature": thinking_signature(THOUGHT)},
        {"type": "redacted_thinking", "data": "c2VjcmV0"},
    ]
    for streamed in (False, True):
        gateway.anthropic_fake.push(
            thinking=THOUGHT, redacted_thinking="c2VjcmV0", tool_calls=(WEATHER,)
        )
        ask: dict[str, Any] = {
            "model": "claude:claude-sonnet",
            "messages": HELLO,
            "tools": CHAT_TOOLS[:1],
            "reasoning_effort": "medium",
        }
        if streamed:
            # The SDK's streaming helper folds the deltas (thinking_blocks merged by index).
            with client.chat.completions.stream(**ask) as stream:
                message = stream.get_final_completion().choices[0].message
            assistant = message.model_dump(exclude_none=True)  # sent back as the SDK has it
            assert [block["index"] for block in assistant["thinking_blocks"]] == [0, 1]
        else:
            message = client.chat.completions.create(**ask).choices[0].message
            assistant = message.model_dump(exclude_none=True)
        assert assistant["reasoning_content"] == THOUGHT
        assert [
            {k: v for k, v in b.items() if k != "index"} for b in assistant["thinking_blocks"]
        ] == thinking
        assert gateway.anthropic_fake.last.body["thinking"] == {
            "type": "enabled",
            "budget_tokens": 4095,
        }
        call_id = assistant["tool_calls"][0]["id"]
        history = [*HELLO, assistant, {"role": "tool", "tool_call_id": call_id, "content": "sunny"}]
        gateway.anthropic_fake.push(text="It is sunny")
        answer = client.chat.completions.create(**{**ask, "messages": history})
        assert answer.choices[0].message.content == "It is sunny"
        sent = gateway.anthropic_fake.last.body["messages"][1]["content"]
        assert sent[:2] == thinking and sent[2]["type"] == "tool_use"
        # A client that drops the blocks is told what to keep; the provider is not called.
        before = len(gateway.anthropic_fake.requests)
        dropped = [
            *HELLO,
            {k: v for k, v in assistant.items() if k != "thinking_blocks"},
            history[2],
        ]
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(**{**ask, "messages": dropped})
        assert (
            "must keep its thinking: send back its `thinking_blocks`"
            in refused.value.body["message"]
        )  # type: ignore[index]
        assert len(gateway.anthropic_fake.requests) == before


def test_thinking_survives_a_responses_tool_loop(gateway: Gateway) -> None:
    client = gateway.client(gateway.key())
    ask: dict[str, Any] = {
        "model": "claude:claude-sonnet",
        "tools": RESPONSES_TOOLS[:1],
        "reasoning": {"effort": "medium"},
        "include": ["reasoning.encrypted_content"],
        "store": False,
    }
    for streamed in (False, True):
        gateway.anthropic_fake.push(thinking=THOUGHT, tool_calls=(WEATHER,))
        if streamed:
            with client.responses.stream(input="weather?", **ask) as events:
                first = events.get_final_response()
        else:
            first = client.responses.create(input="weather?", **ask)
        reasoning, call = first.output
        assert reasoning.type == "reasoning" and reasoning.encrypted_content
        assert reasoning.content is not None and reasoning.content[0].text == THOUGHT
        assert call.type == "function_call"
        items = [
            {"role": "user", "content": "weather?"},
            *[item.model_dump(exclude_none=True) for item in first.output],
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ]
        gateway.anthropic_fake.push(text="It is sunny")
        second = client.responses.create(input=items, **ask)
        assert second.output_text == "It is sunny"
        # Reasoning items sent back without their encrypted content: told what to keep.
        bare = [{k: v for k, v in item.items() if k != "encrypted_content"} for item in items]
        with pytest.raises(openai.BadRequestError) as refused:
            client.responses.create(input=bare, **ask)
        assert "reasoning items with their `encrypted_content`" in refused.value.body["message"]  # type: ignore[index]
        sent = gateway.anthropic_fake.last.body["messages"][1]["content"]
        assert sent[0] == {
            "type": "thinking",
            "thinking": THOUGHT,
            "signature": thinking_signature(THOUGHT),
        }
        assert sent[1]["type"] == "tool_use"


def test_a_matched_stop_string_is_anthropics_stop_sequence(vllm_gateway: Gateway) -> None:
    gateway = vllm_gateway
    gateway.openai_fake.default = Behaviour(text="one two three four")
    with anthropic.Anthropic(base_url=gateway.url, api_key=gateway.key(), max_retries=0) as client:
        reply = client.messages.create(
            model="fake:gpt-4o-mini", max_tokens=50, messages=HELLO, stop_sequences=["three"]
        )
        assert (reply.stop_reason, reply.stop_sequence) == ("stop_sequence", "three")
        assert reply.content[0].text == "one two"  # type: ignore[union-attr]
        with client.messages.stream(
            model="fake:gpt-4o-mini", max_tokens=50, messages=HELLO, stop_sequences=["three"]
        ) as stream:
            deltas = [e for e in stream if e.type == "message_delta"]
            final = stream.get_final_message()
        assert [(d.delta.stop_reason, d.delta.stop_sequence) for d in deltas] == [
            ("stop_sequence", "three")
        ]
        assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "three")
        # No stop string matched: an ordinary end of turn.
        plain = client.messages.create(
            model="fake:gpt-4o-mini", max_tokens=50, messages=HELLO, stop_sequences=["zzz"]
        )
        assert (plain.stop_reason, plain.stop_sequence) == ("end_turn", None)

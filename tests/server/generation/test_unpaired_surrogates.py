"""A provider's JSON may hold an escaped UTF-16 surrogate without its pair (`"\\ud83d"`, half
an emoji): valid JSON syntax that orjson refuses. Every direction keeps the answer, with the
half character as U+FFFD, instead of a 502 or a silently dropped delta."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import orjson
import pytest

from otari_server import jsonio
from tests.support.fakes import ToolCall
from tests.support.gateway import Gateway

HELLO: Any = [{"role": "user", "content": "hello there"}]
HALF = "half \ud83d emoji"  # the fakes write it as the escape \ud83d, as json.dumps does
MENDED = "half \ufffd emoji"
TOOLS: Any = [
    {"name": "get_weather", "input_schema": {"type": "object", "properties": {}}},
]


@pytest.fixture
def claude(gateway: Gateway) -> Callable[[str], anthropic.Anthropic]:
    return gateway.anthropic


def test_parse_mends_unpaired_surrogates_and_keeps_pairs() -> None:
    assert jsonio.parse(rb'{"a": "x\ud83dy", "\udc00": ["\uDE00"]}') == {
        "a": "x\ufffdy",
        "\ufffd": ["\ufffd"],
    }
    assert jsonio.parse('{"a": "\\ud83d\\ude00"}') == {"a": "\U0001f600"}  # a pair is kept
    assert jsonio.parse(b'{"a": 1.5}') == {"a": 1.5}
    for broken in (rb'{"a": "\ud83d"', rb'{"a": NaN, "b": "\ud83d"}', b'{"a": "\xff\\ud83d"}'):
        with pytest.raises(orjson.JSONDecodeError):
            jsonio.parse(broken)


def test_chat_keeps_the_answer_passed_through_and_translated(gateway: Gateway) -> None:
    client = gateway.client(gateway.key())
    # Passed through: the provider's own bytes reach the client as they were sent.
    for fake, model, expected in (
        (gateway.openai_fake, "fake:gpt-4o-mini", HALF),
        (gateway.anthropic_fake, "claude:claude-sonnet", MENDED),
    ):
        fake.push(text=HALF)
        answer = client.chat.completions.create(model=model, messages=HELLO)
        assert answer.choices[0].message.content == expected, model
        fake.push(text=HALF)
        stream = client.chat.completions.create(model=model, messages=HELLO, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == expected, model
    rows = gateway.usage(4)
    assert [row["status"] for row in rows] == ["success"] * 4
    assert all(row["completion_tokens"] == 3 for row in rows)  # the provider's own count


def test_a_translated_stream_keeps_the_delta_with_the_half_character(gateway: Gateway) -> None:
    client = gateway.client(gateway.key())
    gateway.anthropic_fake.push(text=HALF)
    stream = client.chat.completions.create(
        model="claude:claude-sonnet", messages=HELLO, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == MENDED
    # The Responses API, translated to Anthropic's Messages, streamed and not.
    gateway.anthropic_fake.push(text=HALF)
    with client.responses.stream(model="claude:claude-sonnet", input="hello") as events:
        assert events.get_final_response().output_text == MENDED
    gateway.anthropic_fake.push(text=HALF)
    assert client.responses.create(model="claude:claude-sonnet", input="hi").output_text == MENDED


def test_messages_keep_text_and_tool_input_from_an_openai_type_provider(
    gateway: Gateway, claude: Callable[[str], anthropic.Anthropic]
) -> None:
    client = claude(gateway.key())
    gateway.openai_fake.push(text=HALF)
    message = client.messages.create(model="fake:gpt-4o-mini", max_tokens=100, messages=HELLO)
    assert [b.text for b in message.content if b.type == "text"] == [MENDED]
    gateway.openai_fake.push(text=HALF)
    with client.messages.stream(model="fake:gpt-4o-mini", max_tokens=100, messages=HELLO) as stream:
        assert "".join(stream.text_stream) == MENDED
    # Inside a tool call's arguments the escape is JSON within JSON: mended as well.
    gateway.openai_fake.push(tool_calls=(ToolCall("get_weather", {"city": HALF}),))
    message = client.messages.create(
        model="fake:gpt-4o-mini", max_tokens=100, messages=HELLO, tools=TOOLS
    )
    assert [b.input for b in message.content if b.type == "tool_use"] == [{"city": MENDED}]
    assert len(gateway.usage(3)) == 3


# The fakes stream a call's arguments in pieces of 7 characters: `{"city"`, `:"ab\ud`,
# `83d"}`, so the escape of the half emoji is cut in two on the wire.
CUT = {"city": "ab\ud83d"}
CUT_MENDED = {"city": "ab\ufffd"}
CHAT_TOOLS: Any = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
]


def test_streamed_tool_arguments_are_mended_in_both_translated_directions(
    gateway: Gateway, claude: Callable[[str], anthropic.Anthropic]
) -> None:
    key = gateway.key()
    # /v1/messages from an OpenAI-type provider: the anthropic SDK parses the arguments.
    gateway.openai_fake.push(tool_calls=(ToolCall("get_weather", CUT),))
    with claude(key).messages.stream(
        model="fake:gpt-4o-mini", max_tokens=100, messages=HELLO, tools=TOOLS
    ) as stream:
        final = stream.get_final_message()
    assert [b.input for b in final.content if b.type == "tool_use"] == [CUT_MENDED]
    # Chat from an Anthropic-type provider: the arguments text parses to a UTF-8 string.
    gateway.anthropic_fake.push(tool_calls=(ToolCall("get_weather", CUT),))
    chunks = gateway.client(key).chat.completions.create(
        model="claude:claude-sonnet", messages=HELLO, tools=CHAT_TOOLS, stream=True
    )
    arguments = "".join(
        call.function.arguments or ""
        for chunk in chunks
        if chunk.choices
        for call in chunk.choices[0].delta.tool_calls or ()
        if call.function
    )
    assert json.loads(arguments) == CUT_MENDED
    # The Responses API from an Anthropic-type provider goes through the same translator.
    gateway.anthropic_fake.push(tool_calls=(ToolCall("get_weather", CUT),))
    with gateway.client(key).responses.stream(
        model="claude:claude-sonnet",
        input="weather?",
        tools=[{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
    ) as events:
        calls = [i for i in events.get_final_response().output if i.type == "function_call"]
    assert [json.loads(c.arguments) for c in calls] == [CUT_MENDED]

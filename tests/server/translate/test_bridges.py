"""Translation end to end: an official SDK on one side, a fake upstream of the other format.

The bridge between them is an httpx2 transport handed to the SDK: it translates the request,
calls the fake over loopback with the configured provider's URL and headers, parses the
upstream SSE in small pieces and translates the answer back, as the gateway will.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

from otari_server.providers import Provider, build_providers
from otari_server.translate import chat_via_messages as anthropic_wire
from otari_server.translate import messages_via_chat as messages_wire
from otari_server.translate.chat_via_messages_request import to_messages_request
from otari_server.translate.sse import DONE_EVENT, SSEParser, encode
from tests.support.fakes import DEFAULT_TEXT, FakeAnthropic, FakeOpenAI, ToolCall

HELLO: Any = [{"role": "user", "content": "Say hello to me"}]
WEATHER = ToolCall("get_weather", {"city": "Paris"})
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def upstream_events(provider: Provider, path: str, body: dict[str, Any]) -> list[Any]:
    """POST upstream and parse the SSE answer fed in 3-byte pieces."""
    response = httpx.post(provider.url(path), json=body, headers=provider.request_headers())
    assert response.status_code == 200, response.text
    parser = SSEParser()
    content = response.content
    events = [e for i in range(0, len(content), 3) for e in parser.feed(content[i : i + 3])]
    return events + parser.close()


def chat_bridge(provider: Provider) -> httpx2.MockTransport:
    """OpenAI chat clients served by an anthropic provider."""

    def handle(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        upstream = to_messages_request(body, model="claude-fake")
        if not body.get("stream"):
            response = httpx.post(
                provider.url("/messages"), json=upstream, headers=provider.request_headers()
            )
            assert response.status_code == 200, response.text
            completion = anthropic_wire.to_chat_completion(response.json(), model=body["model"])
            return httpx2.Response(200, json=completion)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        translator = anthropic_wire.ChatStreamTranslator(
            model=body["model"], include_usage=include_usage
        )
        chunks = [
            chunk
            for event in upstream_events(provider, "/messages", upstream)
            for chunk in translator.feed(event.json())
        ]
        assert translator.done
        stream = b"".join(encode(chunk) for chunk in chunks) + DONE_EVENT
        return httpx2.Response(200, content=stream, headers={"content-type": "text/event-stream"})

    return httpx2.MockTransport(handle)


def messages_bridge(provider: Provider) -> httpx2.MockTransport:
    """Anthropic Messages clients served by an OpenAI-compatible provider."""

    def handle(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        upstream = messages_wire.to_chat_request(body, model="gpt-4o-mini")
        if not body.get("stream"):
            response = httpx.post(
                provider.url("/chat/completions"), json=upstream, headers=provider.request_headers()
            )
            assert response.status_code == 200, response.text
            return httpx2.Response(200, json=messages_wire.to_message(response.json()))
        translator = messages_wire.MessageStreamTranslator(model=body["model"], input_tokens=1)
        events = []
        for event in upstream_events(provider, "/chat/completions", upstream):
            events += translator.finish() if event.done else translator.feed(event.json())
        stream = b"".join(encode(event, event=event["type"]) for event in events)
        return httpx2.Response(200, content=stream, headers={"content-type": "text/event-stream"})

    return httpx2.MockTransport(handle)


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key="sk-ant") as fake:
        yield fake


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key="sk-oai") as fake:
        yield fake


@pytest.fixture
def chat_client(fake_anthropic: FakeAnthropic) -> Iterator[openai.OpenAI]:
    table = {"anthropic": {"base_url": fake_anthropic.base_url}}
    provider = build_providers(table, {"ANTHROPIC_API_KEY": "sk-ant"})["anthropic"]
    http = httpx2.Client(transport=chat_bridge(provider))
    with openai.OpenAI(base_url="http://gateway/v1", api_key="k", http_client=http) as client:
        yield client


@pytest.fixture
def messages_client(fake_openai: FakeOpenAI) -> Iterator[anthropic.Anthropic]:
    table = {"openai": {"base_url": fake_openai.base_url}}
    provider = build_providers(table, {"OPENAI_API_KEY": "sk-oai"})["openai"]
    http = httpx2.Client(transport=messages_bridge(provider))
    with anthropic.Anthropic(base_url="http://gateway", api_key="k", http_client=http) as client:
        yield client


def test_chat_through_anthropic_json(
    chat_client: openai.OpenAI, fake_anthropic: FakeAnthropic
) -> None:
    completion = chat_client.chat.completions.create(
        model="anthropic:claude-fake",
        messages=[{"role": "system", "content": "Be kind."}, *HELLO],
        temperature=1.5,
        user="alice",
        seed=4,
    )
    assert completion.choices[0].message.content == DEFAULT_TEXT
    assert completion.model == "claude-fake"  # as the provider named it
    sent = fake_anthropic.last.body
    assert sent["system"] == "Be kind." and sent["temperature"] == 1.0
    assert sent["metadata"] == {"user_id": "alice"}
    assert fake_anthropic.last.usage is not None
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == fake_anthropic.last.usage["input_tokens"] == 6
    assert completion.usage.completion_tokens == fake_anthropic.last.usage["output_tokens"] == 5


def test_chat_through_anthropic_stream_with_usage(chat_client: openai.OpenAI) -> None:
    chunks = list(
        chat_client.chat.completions.create(
            model="anthropic:claude-fake",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == DEFAULT_TEXT
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (4, 5)


def test_chat_through_anthropic_tool_calls(
    chat_client: openai.OpenAI, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.push(tool_calls=(WEATHER,), text="Checking")
    completion = chat_client.chat.completions.create(
        model="anthropic:claude-fake", messages=HELLO, tools=[WEATHER_TOOL], tool_choice="required"
    )
    assert fake_anthropic.last.body["tool_choice"] == {"type": "any"}
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls"
    assert message.content == "Checking"
    call = message.tool_calls[0]  # type: ignore[index]
    assert json.loads(call.function.arguments) == WEATHER.arguments  # type: ignore[union-attr]

    follow_up = [
        *HELLO,
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny"},
    ]
    fake_anthropic.push(text="It is sunny")
    answer = chat_client.chat.completions.create(
        model="anthropic:claude-fake", messages=follow_up, tools=[WEATHER_TOOL]
    )
    assert answer.choices[0].message.content == "It is sunny"
    sent = fake_anthropic.last.body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[2]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": call.id,
        "content": "Sunny",
    }

    fake_anthropic.push(tool_calls=(WEATHER, ToolCall("get_time")))
    arguments: dict[int, str] = {}
    for chunk in chat_client.chat.completions.create(
        model="anthropic:claude-fake", messages=HELLO, tools=[WEATHER_TOOL], stream=True
    ):
        for piece in chunk.choices[0].delta.tool_calls or () if chunk.choices else ():
            text = piece.function.arguments if piece.function else None
            arguments[piece.index] = arguments.get(piece.index, "") + (text or "")
    assert {i: json.loads(a) for i, a in arguments.items()} == {0: WEATHER.arguments, 1: {}}


def test_messages_through_openai_json(
    messages_client: anthropic.Anthropic, fake_openai: FakeOpenAI
) -> None:
    message = messages_client.messages.create(
        model="openai:gpt-4o-mini",
        max_tokens=50,
        system="Be kind.",
        messages=HELLO,
        metadata={"user_id": "bob"},
        stop_sequences=["END"],
    )
    assert message.content[0].type == "text" and message.content[0].text == DEFAULT_TEXT
    assert message.stop_reason == "end_turn"
    sent = fake_openai.last.body
    assert sent["messages"][0] == {"role": "system", "content": "Be kind."}
    assert (sent["user"], sent["stop"], sent["max_tokens"]) == ("bob", ["END"], 50)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (6, 5)


def test_messages_through_openai_stream(
    messages_client: anthropic.Anthropic, fake_openai: FakeOpenAI
) -> None:
    with messages_client.messages.stream(
        model="openai:gpt-4o-mini", max_tokens=50, messages=HELLO
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == DEFAULT_TEXT
    assert fake_openai.last.body["stream_options"] == {"include_usage": True}
    assert (final.usage.input_tokens, final.usage.output_tokens) == (4, 5)
    assert final.stop_reason == "end_turn"


def test_messages_through_openai_tool_use(
    messages_client: anthropic.Anthropic, fake_openai: FakeOpenAI
) -> None:
    tools: Any = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}]
    fake_openai.push(tool_calls=(WEATHER,), text="Let me look")
    with messages_client.messages.stream(
        model="openai:gpt-4o-mini",
        max_tokens=50,
        messages=HELLO,
        tools=tools,
        tool_choice={"type": "any"},
    ) as stream:
        final = stream.get_final_message()
    assert fake_openai.last.body["tool_choice"] == "required"
    assert [block.type for block in final.content] == ["text", "tool_use"]
    tool_use = final.content[1]
    assert tool_use.type == "tool_use" and tool_use.input == WEATHER.arguments
    assert final.stop_reason == "tool_use"

    fake_openai.push(text="Sunny it is")
    result = {"type": "tool_result", "tool_use_id": tool_use.id, "content": "Sunny"}
    history: Any = [
        *HELLO,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in final.content]},
        {"role": "user", "content": [result]},
    ]
    reply = messages_client.messages.create(
        model="openai:gpt-4o-mini", max_tokens=50, tools=tools, messages=history
    )
    assert reply.content[0].type == "text" and reply.content[0].text == "Sunny it is"
    sent = fake_openai.last.body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[1]["tool_calls"][0]["id"] == tool_use.id

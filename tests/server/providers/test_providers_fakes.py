"""The fake provider servers are faithful: the official SDKs work against them unchanged."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from otari_server.translate.sse import SSEParser
from tests.support.fakes import (
    DEFAULT_TEXT,
    FLAG_MARKER,
    Behaviour,
    Failure,
    FakeAnthropic,
    FakeOpenAI,
    ToolCall,
    count_tokens,
)

HELLO: Any = [{"role": "user", "content": "Say hello to me"}]
WEATHER = ToolCall("get_weather", {"city": "Paris", "unit": "celsius"})


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key="sk-test") as fake:
        yield fake


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key="sk-ant-test") as fake:
        yield fake


@pytest.fixture
def client(fake_openai: FakeOpenAI) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake_openai.base_url, api_key="sk-test", max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def claude(fake_anthropic: FakeAnthropic) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=fake_anthropic.url, api_key="sk-ant-test", max_retries=0
    ) as sdk:
        yield sdk


def raw_events(
    url: str, body: dict[str, object], headers: dict[str, str]
) -> list[tuple[str | None, str]]:
    response = httpx.post(url, json=body, headers=headers)
    parser = SSEParser()
    events = [
        e
        for i in range(0, len(response.content), 5)
        for e in parser.feed(response.content[i : i + 5])
    ]
    return [(event.event, event.data) for event in events + parser.close()]


# -- OpenAI ------------------------------------------------------------------------------


def test_openai_json_with_deterministic_usage(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, seed=7)
    assert completion.choices[0].message.content == DEFAULT_TEXT
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 4
    assert completion.usage.completion_tokens == count_tokens(DEFAULT_TEXT) == 5
    assert completion.usage.total_tokens == 9
    call = fake_openai.last
    assert (call.method, call.path) == ("POST", "/v1/chat/completions")
    assert call.headers["authorization"] == "Bearer sk-test"
    assert call.body == {"model": "gpt-4o-mini", "messages": HELLO, "seed": 7}
    assert call.usage == completion.usage.model_dump(exclude_none=True)


def test_openai_scripted_text_n_stop_and_length(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    fake_openai.push(text="one two three four")
    many = client.chat.completions.create(model="m", messages=HELLO, n=2)
    assert [c.message.content for c in many.choices] == ["one two three four"] * 2
    fake_openai.push(text="one two STOP three")
    stopped = client.chat.completions.create(model="m", messages=HELLO, stop=["STOP"])
    assert stopped.choices[0].message.content == "one two"
    fake_openai.push(text="one two three four")
    cut = client.chat.completions.create(model="m", messages=HELLO, max_completion_tokens=2)
    assert (cut.choices[0].message.content, cut.choices[0].finish_reason) == ("one two", "length")
    assert cut.usage is not None and cut.usage.completion_tokens == 2


def test_openai_stream_with_usage_is_shaped_like_openai(fake_openai: FakeOpenAI) -> None:
    body = {
        "model": "m",
        "messages": HELLO,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    events = raw_events(
        f"{fake_openai.base_url}/chat/completions", body, {"Authorization": "Bearer sk-test"}
    )
    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert all(chunk["usage"] is None for chunk in chunks[:-1])
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 5
    assert (
        "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1]) == DEFAULT_TEXT
    )
    assert len({chunk["id"] for chunk in chunks}) == 1


def test_openai_stream_without_usage_has_no_usage_field(fake_openai: FakeOpenAI) -> None:
    body = {"model": "m", "messages": HELLO, "stream": True}
    events = raw_events(
        f"{fake_openai.base_url}/chat/completions", body, {"Authorization": "Bearer sk-test"}
    )
    assert all("usage" not in json.loads(data) for _, data in events[:-1])


def test_openai_sdk_streaming(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="m", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == DEFAULT_TEXT
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 9


def test_openai_tool_calls_json_and_streamed(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    fake_openai.push(tool_calls=(WEATHER,))
    completion = client.chat.completions.create(model="m", messages=HELLO)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == WEATHER.arguments  # type: ignore[union-attr]
    assert completion.usage is not None
    assert completion.usage.completion_tokens == WEATHER.tokens

    fake_openai.push(
        tool_calls=(WEATHER, ToolCall("get_time", {}, id="call_fixed")), text="Checking"
    )
    arguments: dict[int, str] = {}
    names: dict[int, str] = {}
    finish = None
    for chunk in client.chat.completions.create(model="m", messages=HELLO, stream=True):
        for delta_call in chunk.choices[0].delta.tool_calls or ():
            if delta_call.function and delta_call.function.name:
                names[delta_call.index] = delta_call.function.name
            if delta_call.function and delta_call.function.arguments:
                arguments[delta_call.index] = (
                    arguments.get(delta_call.index, "") + delta_call.function.arguments
                )
        finish = chunk.choices[0].finish_reason or finish
    assert names == {0: "get_weather", 1: "get_time"}
    assert json.loads(arguments[0]) == WEATHER.arguments
    assert json.loads(arguments[1]) == {}
    assert finish == "tool_calls"


def test_openai_async_sdk(fake_openai: FakeOpenAI) -> None:
    async def main() -> tuple[str | None, str]:
        async with openai.AsyncOpenAI(base_url=fake_openai.base_url, api_key="sk-test") as sdk:
            completion = await sdk.chat.completions.create(model="m", messages=HELLO)
            stream = await sdk.chat.completions.create(model="m", messages=HELLO, stream=True)
            text = "".join([c.choices[0].delta.content or "" async for c in stream])
            return completion.choices[0].message.content, text

    assert asyncio.run(main()) == (DEFAULT_TEXT, DEFAULT_TEXT)


@pytest.mark.parametrize(
    ("failure", "exception"),
    [
        (Failure(400, "Bad input", param="messages"), openai.BadRequestError),
        (Failure(404, "No such model", code="model_not_found"), openai.NotFoundError),
        (Failure(429, "Slow down", code="rate_limit_exceeded"), openai.RateLimitError),
        (Failure(500, "Upstream broke"), openai.InternalServerError),
        (Failure(503, "Overloaded"), openai.InternalServerError),
    ],
)
def test_openai_error_bodies(
    client: openai.OpenAI,
    fake_openai: FakeOpenAI,
    failure: Failure,
    exception: type[openai.APIStatusError],
) -> None:
    fake_openai.push(error=failure)
    with pytest.raises(exception) as caught:
        client.chat.completions.create(model="m", messages=HELLO)
    assert caught.value.status_code == failure.status
    assert caught.value.message.endswith(failure.message) or failure.message in caught.value.message
    assert caught.value.code == failure.code
    assert caught.value.param == failure.param
    assert isinstance(caught.value.body, dict) and caught.value.body["message"] == failure.message


def test_openai_checks_the_key_and_the_body(fake_openai: FakeOpenAI) -> None:
    sdk = openai.OpenAI(base_url=fake_openai.base_url, api_key="wrong", max_retries=0)
    with sdk, pytest.raises(openai.AuthenticationError) as caught:
        sdk.chat.completions.create(model="m", messages=HELLO)
    assert caught.value.code == "invalid_api_key"
    headers = {"Authorization": "Bearer sk-test"}
    missing = httpx.post(
        f"{fake_openai.base_url}/chat/completions", json={"model": "m"}, headers=headers
    )
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "missing_required_parameter"
    broken = httpx.post(f"{fake_openai.base_url}/chat/completions", content=b"{", headers=headers)
    assert broken.status_code == 400


def test_openai_stream_error_midway(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.push(error=Failure(500, "The server had an error"), error_after=2)
    received = []
    with pytest.raises(openai.APIError, match="The server had an error"):
        for chunk in client.chat.completions.create(model="m", messages=HELLO, stream=True):
            received.append(chunk)
    assert len(received) == 2


def test_openai_stream_cut_midway_and_json_cut(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    fake_openai.push(cut_after=3)
    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in client.chat.completions.create(model="m", messages=HELLO, stream=True):
            received.append(chunk)
    assert len(received) == 3
    fake_openai.push(cut_after=0)
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="m", messages=HELLO)


def test_openai_malformed_bodies(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.push(malformed=True)
    with pytest.raises(json.JSONDecodeError):
        client.chat.completions.create(model="m", messages=HELLO)
    fake_openai.push(malformed=True)
    with pytest.raises(json.JSONDecodeError):
        list(client.chat.completions.create(model="m", messages=HELLO, stream=True))


def test_openai_verbatim_body(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.push(
        body={"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []}
    )
    assert client.chat.completions.create(model="m", messages=HELLO).choices == []


def test_delay_times_out_without_holding_up_shutdown() -> None:
    started = time.monotonic()
    outcomes: list[BaseException] = []

    def wait_forever(url: str) -> None:
        try:
            httpx.post(url, json={"model": "m", "messages": HELLO}, timeout=30)
        except httpx.HTTPError as error:
            outcomes.append(error)

    with FakeOpenAI() as fake:
        fake.push(delay=60)
        sdk = openai.OpenAI(base_url=fake.base_url, api_key="k", max_retries=0, timeout=0.3)
        with sdk, pytest.raises(openai.APITimeoutError):
            sdk.chat.completions.create(model="m", messages=HELLO)
        fake.push(delay=60)
        thread = threading.Thread(target=wait_forever, args=[f"{fake.base_url}/chat/completions"])
        thread.start()
        while len(fake.requests) < 2:
            time.sleep(0.01)
    thread.join(timeout=10)
    assert len(outcomes) == 1  # the server went away under the waiting client
    assert time.monotonic() - started < 10


def test_gate_holds_concurrent_requests_until_released(fake_openai: FakeOpenAI) -> None:
    gate = fake_openai.gate()
    fake_openai.default = Behaviour(gate=gate)
    results: list[str | None] = []

    def ask() -> None:
        with openai.OpenAI(base_url=fake_openai.base_url, api_key="sk-test", max_retries=0) as sdk:
            results.append(
                sdk.chat.completions.create(model="m", messages=HELLO).choices[0].message.content
            )

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    gate.wait_for(8)
    assert results == []
    gate.release()
    for thread in threads:
        thread.join(timeout=10)
    assert results == [DEFAULT_TEXT] * 8


def test_gate_midway_through_a_stream(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    gate = fake_openai.gate()
    fake_openai.push(gate=gate, hold_after=2)
    stream = client.chat.completions.create(model="m", messages=HELLO, stream=True)
    iterator = iter(stream)
    first = [next(iterator), next(iterator)]
    gate.wait_for(1)
    assert first[1].choices[0].delta.content == "Hello"
    gate.release()
    rest = list(iterator)
    assert "".join(c.choices[0].delta.content or "" for c in first + rest) == DEFAULT_TEXT


def test_openai_embeddings_moderations_models(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    embedded = client.embeddings.create(model="text-embedding-3-small", input=["a b", "c"])
    assert len(embedded.data) == 2 and len(embedded.data[0].embedding) == 8
    assert embedded.usage.prompt_tokens == 3
    raw = client.embeddings.create(model="e", input="a b", encoding_format="base64", dimensions=4)
    packed = base64.b64decode(str(raw.data[0].embedding))
    assert list(struct.unpack("<4f", packed)) == pytest.approx(embedded.data[0].embedding[:4])
    moderation = client.moderations.create(
        model="omni-moderation-latest", input=["fine", f"bad {FLAG_MARKER}"]
    )
    assert [r.flagged for r in moderation.results] == [False, True]
    assert moderation.results[1].categories.violence is True
    assert [m.id for m in client.models.list()] == ["gpt-4o-mini"]
    assert fake_openai.last.method == "GET"


# -- Anthropic ---------------------------------------------------------------------------


def test_anthropic_json(claude: anthropic.Anthropic, fake_anthropic: FakeAnthropic) -> None:
    message = claude.messages.create(
        model="claude-fake", max_tokens=100, system="Be kind.", messages=HELLO
    )
    assert message.content[0].type == "text" and message.content[0].text == DEFAULT_TEXT
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (6, 5)
    assert fake_anthropic.last.usage is not None
    assert fake_anthropic.last.usage["input_tokens"] == 6
    assert "anthropic-version" in fake_anthropic.last.headers


def test_anthropic_stream_is_the_exact_event_sequence(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.push(text="Hi there", tool_calls=(WEATHER,))
    body = {"model": "c", "max_tokens": 100, "messages": HELLO, "stream": True}
    headers = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
    events = raw_events(f"{fake_anthropic.base_url}/messages", body, headers)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        *["content_block_delta"] * (1 + len(range(0, len(WEATHER.arguments_json), 7))),
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    datas = [json.loads(data) for _, data in events]
    assert all(data["type"] == name for (name, _), data in zip(events, datas, strict=True))
    assert datas[6]["content_block"] == {
        "type": "tool_use",
        "id": "toolu_fake000001",
        "name": "get_weather",
        "input": {},
    }
    assert datas[-2]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert datas[-2]["usage"] == {"output_tokens": 2 + WEATHER.tokens}


def test_anthropic_sdk_streaming_helpers(
    claude: anthropic.Anthropic, fake_anthropic: FakeAnthropic
) -> None:
    with claude.messages.stream(model="c", max_tokens=100, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == DEFAULT_TEXT
    assert final.usage.output_tokens == 5 and final.usage.input_tokens == 4
    fake_anthropic.push(tool_calls=(WEATHER,))
    with claude.messages.stream(model="c", max_tokens=100, messages=HELLO) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    block = final.content[0]
    assert block.type == "tool_use" and block.input == WEATHER.arguments


def test_anthropic_tool_use_json_and_stop_sequences(
    claude: anthropic.Anthropic, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.push(tool_calls=(WEATHER,))
    message = claude.messages.create(model="c", max_tokens=100, messages=HELLO)
    assert [b.type for b in message.content] == ["tool_use"]
    assert message.stop_reason == "tool_use"
    fake_anthropic.push(text="alpha beta END gamma")
    message = claude.messages.create(
        model="c", max_tokens=100, messages=HELLO, stop_sequences=["END"]
    )
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "END")
    fake_anthropic.push(text="alpha beta gamma")
    message = claude.messages.create(model="c", max_tokens=1, messages=HELLO)
    assert message.stop_reason == "max_tokens"


@pytest.mark.parametrize(
    ("failure", "exception"),
    [
        (Failure(400, "Bad"), anthropic.BadRequestError),
        (Failure(401, "Bad key"), anthropic.AuthenticationError),
        (Failure(429, "Slow"), anthropic.RateLimitError),
        (Failure(500, "Broke"), anthropic.InternalServerError),
        (Failure(529, "Overloaded"), anthropic.APIStatusError),
    ],
)
def test_anthropic_error_bodies(
    claude: anthropic.Anthropic,
    fake_anthropic: FakeAnthropic,
    failure: Failure,
    exception: type[anthropic.APIStatusError],
) -> None:
    fake_anthropic.push(error=failure)
    with pytest.raises(exception) as caught:
        claude.messages.create(model="c", max_tokens=10, messages=HELLO)
    assert caught.value.status_code == failure.status
    assert caught.value.body["type"] == "error"  # type: ignore[index]
    assert caught.value.body["error"]["message"] == failure.message  # type: ignore[index]


def test_anthropic_stream_error_event(
    claude: anthropic.Anthropic, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.push(error=Failure(529, "Overloaded"), error_after=3)
    with (
        pytest.raises(anthropic.APIStatusError, match="Overloaded"),
        claude.messages.stream(model="c", max_tokens=100, messages=HELLO) as stream,
    ):
        stream.get_final_message()


def test_anthropic_validates_like_the_real_api(fake_anthropic: FakeAnthropic) -> None:
    url = f"{fake_anthropic.base_url}/messages"
    body = {"model": "c", "max_tokens": 10, "messages": HELLO}
    key = {"x-api-key": "sk-ant-test"}
    assert (
        httpx.post(url, json=body, headers=key).json()["error"]["message"]
        == "anthropic-version: header is required"
    )
    headers = {**key, "anthropic-version": "2023-06-01"}
    assert (
        httpx.post(url, json=body, headers={"anthropic-version": "2023-06-01"}).status_code == 401
    )
    assert httpx.post(url, json=body, headers=headers).status_code == 200
    for bad, message in [
        ({**body, "n": 2}, "n: Extra inputs are not permitted"),
        ({"model": "c", "messages": HELLO}, "max_tokens: Field required"),
        (
            {**body, "messages": [{"role": "system", "content": "x"}]},
            "messages.0.role: Input should be 'user' or 'assistant'",
        ),
        ({**body, "temperature": 1.5}, "temperature: Input should be less than or equal to 1"),
    ]:
        answer = httpx.post(url, json=bad, headers=headers)
        assert (answer.status_code, answer.json()["error"]["message"]) == (400, message)


def test_anthropic_count_tokens_and_models(claude: anthropic.Anthropic) -> None:
    assert claude.messages.count_tokens(model="c", messages=HELLO).input_tokens == 4
    assert [m.id for m in claude.models.list()] == ["claude-fake"]


def test_reset_and_queue_order(fake_openai: FakeOpenAI, client: openai.OpenAI) -> None:
    fake_openai.push(text="first")
    fake_openai.fail(418, "teapot")
    assert (
        client.chat.completions.create(model="m", messages=HELLO).choices[0].message.content
        == "first"
    )
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="m", messages=HELLO)
    fake_openai.push(text="never")
    fake_openai.reset()
    assert fake_openai.requests == []
    assert (
        client.chat.completions.create(model="m", messages=HELLO).choices[0].message.content
        == DEFAULT_TEXT
    )

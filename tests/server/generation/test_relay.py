"""The one stream relay: every endpoint behaves the same whatever shape the provider streams in.

A scripted provider (tests/support/fakes_streams.py) sends the shapes real providers send and the
well-behaved fakes do not; the official SDKs read the gateway's answers.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import openai
import pytest

from otari_server.jsonio import loads
from tests.support.fakes import Behaviour, FakeOpenAI
from tests.support.fakes_streams import Script, ScriptedProvider, sse
from tests.support.gateway import Gateway
from tests.support.servers import MASTER_KEY, make_settings, running

MASTER = {"Authorization": f"Bearer {MASTER_KEY}"}
RAW_KEY = "sk-scripted-Qm9vYmFyYmF6cXV4LXNlY3JldA"
ESTIMATED = "usage estimated by the gateway"


@dataclass
class World:
    url: str
    fake: ScriptedProvider
    admin: httpx.Client
    stack: ExitStack

    def usage(self, count: int = 1) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 10
        while True:
            rows: list[dict[str, Any]] = loads(self.admin.get("/v1/usage").text)
            if len(rows) >= count or time.monotonic() > deadline:
                assert len(rows) == count, rows
                return rows
            time.sleep(0.02)

    def openai(self, key: str = MASTER_KEY) -> openai.OpenAI:
        return self.stack.enter_context(
            openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0)
        )

    def anthropic(self) -> anthropic.Anthropic:
        return self.stack.enter_context(
            anthropic.Anthropic(base_url=self.url, api_key=MASTER_KEY, max_retries=0)
        )


@pytest.fixture
def world_factory(sqlite_url: str) -> Iterator[Callable[[str], World]]:
    with ExitStack() as stack:

        def start(database_url: str = sqlite_url) -> World:
            fake = stack.enter_context(ScriptedProvider())
            providers = {
                "raw": {"type": "openai", "base_url": fake.base_url, "api_key": RAW_KEY},
                "rawclaude": {"type": "anthropic", "base_url": fake.base_url, "api_key": RAW_KEY},
            }
            settings = make_settings(database_url, providers=providers, usage_flush_interval=0.05)
            url = stack.enter_context(running(settings))
            admin = stack.enter_context(httpx.Client(base_url=url, headers=MASTER, timeout=30))
            for model, prices in (("raw:m", (1, 2)), ("rawclaude:m", (3, 15))):
                response = admin.post(
                    "/v1/pricing",
                    json={
                        "model_key": model,
                        "input_price_per_million": prices[0],
                        "output_price_per_million": prices[1],
                    },
                )
                assert response.status_code == 200, response.text
            return World(url, fake, admin, stack)

        yield start


@pytest.fixture
def world(world_factory: Callable[..., World]) -> World:
    return world_factory()


# -- provider shapes -----------------------------------------------------------------------------

ENVELOPE = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 1700000000,
    "model": "m",
}
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        **ENVELOPE,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        **extra,
    }


def chat_stream(*texts: str, usage: bool = True, **extra: Any) -> list[bytes]:
    parts = [sse(chunk({"role": "assistant", "content": ""}, **extra))]
    parts += [sse(chunk({"content": text}, **extra)) for text in texts]
    parts.append(sse(chunk({}, "stop", **extra)))
    if usage:
        parts.append(sse({**ENVELOPE, "choices": [], "usage": USAGE}))
    return [*parts, b"data: [DONE]\n\n"]


def anthropic_stream(*texts: str) -> list[bytes]:
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "m",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 7, "output_tokens": 1},
        },
    }
    parts = [
        sse(start, "message_start"),
        sse(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            "content_block_start",
        ),
        sse({"type": "ping"}, "ping"),
    ]
    parts += [
        sse(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": text},
            },
            "content_block_delta",
        )
        for text in texts
    ]
    parts += [
        sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 3},
            },
            "message_delta",
        ),
        sse({"type": "message_stop"}, "message_stop"),
    ]
    return parts


COMPLETION = {
    "id": "chatcmpl-9",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there"},
            "finish_reason": "stop",
        }
    ],
    "usage": USAGE,
}
MESSAGE = {
    "id": "msg_9",
    "type": "message",
    "role": "assistant",
    "model": "m",
    "content": [{"type": "text", "text": "Hello there"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 7, "output_tokens": 3},
}
RESPONSE = {
    "id": "resp_9",
    "object": "response",
    "created_at": 1700000000,
    "model": "m",
    "status": "completed",
    "output": [
        {
            "type": "message",
            "id": "msg_9",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Hello there", "annotations": []}],
        }
    ],
    "usage": {
        "input_tokens": 7,
        "output_tokens": 3,
        "total_tokens": 10,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    },
}
# The cost of 7 prompt and 3 completion tokens at each model's price.
COST = {"raw:m": Decimal("0.000013"), "rawclaude:m": Decimal("0.000066")}


def chat_text(client: openai.OpenAI, model: str, **kwargs: Any) -> tuple[str, list[Any]]:
    chunks = list(
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], stream=True, **kwargs
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


def messages_text(client: anthropic.Anthropic, model: str) -> str:
    with client.messages.stream(
        model=model, max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        return "".join(stream.text_stream)


def responses_text(client: openai.OpenAI, model: str) -> str:
    events = list(client.responses.create(model=model, input="hi", stream=True))
    assert events[-1].type == "response.completed", events[-1]
    return str(events[-1].response.output_text)


def billed(world: World, model: str, note: str | None = None) -> None:
    [row] = world.usage(1)
    assert row["status"] == "success", row
    assert (row["prompt_tokens"], row["completion_tokens"]) == (7, 3)
    assert row["cost"] == COST[model]
    assert row["error_message"] == note


# -- a final event without its blank line is flushed ---------------------------------------------


def test_chat_final_event_without_blank_line_is_flushed(world: World) -> None:
    parts = chat_stream("Hello", " there")
    parts[-2] = parts[-2].rstrip(b"\n")  # the usage chunk ends the stream, unterminated
    world.fake.push(Script(parts[:-1]))
    text, chunks = chat_text(world.openai(), "raw:m", stream_options={"include_usage": True})
    assert text == "Hello there"
    assert chunks[-1].usage.prompt_tokens == 7
    billed(world, "raw:m")


def test_messages_final_event_without_blank_line_is_flushed(world: World) -> None:
    parts = anthropic_stream("Hello", " there")
    parts[-1] = parts[-1].rstrip(b"\n")
    world.fake.push(Script(parts))
    with world.anthropic().messages.stream(
        model="rawclaude:m", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        message = stream.get_final_message()
    assert message.content[0].text == "Hello there" and message.stop_reason == "end_turn"
    billed(world, "rawclaude:m")


# -- a malformed event is skipped and counted, not fatal -----------------------------------------

BROKEN = b'data: {"id": "broken", "choices": [\n\n'
SKIPPED = "skipped 1 malformed provider event(s)"


def test_chat_malformed_event_is_skipped(world: World) -> None:
    parts = chat_stream("Hello", " there")
    world.fake.push(Script([*parts[:2], BROKEN, *parts[2:]]))
    assert chat_text(world.openai(), "raw:m")[0] == "Hello there"
    billed(world, "raw:m", SKIPPED)


def test_chat_from_anthropic_malformed_event_is_skipped(world: World) -> None:
    parts = anthropic_stream("Hello", " there")
    world.fake.push(Script([*parts[:3], b"event: content_block_delta\n" + BROKEN, *parts[3:]]))
    assert chat_text(world.openai(), "rawclaude:m")[0] == "Hello there"
    billed(world, "rawclaude:m", SKIPPED)


def test_messages_pass_through_malformed_event_is_skipped(world: World) -> None:
    parts = anthropic_stream("Hello", " there")
    world.fake.push(Script([*parts[:3], b"event: content_block_delta\n" + BROKEN, *parts[3:]]))
    assert messages_text(world.anthropic(), "rawclaude:m") == "Hello there"
    billed(world, "rawclaude:m", SKIPPED)


def test_messages_from_openai_malformed_event_is_skipped(world: World) -> None:
    parts = chat_stream("Hello", " there")
    world.fake.push(Script([*parts[:2], BROKEN, *parts[2:]]))
    assert messages_text(world.anthropic(), "raw:m") == "Hello there"
    billed(world, "raw:m", SKIPPED)


# Valid JSON of a shape the translators cannot read: skipped and counted the same way, where
# they cut the client's stream before (the usage row then blamed the client).
ODD_ANTHROPIC = [
    b'event: message_start\ndata: {"type": "message_start", "message": "x"}\n\n',
    b'event: content_block_start\ndata: {"type": "content_block_start", "index": 5, '
    b'"content_block": "x"}\n\n',
    b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, '
    b'"delta": ["x"]}\n\n',
]
ODD_CHAT = [
    b'data: {"id": "odd", "choices": [{"index": 0, "delta": "x"}]}\n\n',
    b'data: {"id": "odd", "choices": [{"index": 0, "delta": {"tool_calls": '
    b'[{"index": 0, "function": ["x"]}]}}]}\n\n',
]


@pytest.mark.parametrize("odd", range(len(ODD_ANTHROPIC)))
def test_an_odd_anthropic_event_is_skipped_by_every_translator(
    world: World, odd: int, caplog: pytest.LogCaptureFixture
) -> None:
    parts = anthropic_stream("Hello", " there")
    world.fake.push(Script([*parts[:3], ODD_ANTHROPIC[odd], *parts[3:]]))
    assert chat_text(world.openai(), "rawclaude:m")[0] == "Hello there"
    billed(world, "rawclaude:m", SKIPPED)
    world.fake.push(Script([*parts[:3], ODD_ANTHROPIC[odd], *parts[3:]]))
    assert responses_text(world.openai(), "rawclaude:m") == "Hello there"
    said = [r for r in caplog.records if r.getMessage().startswith("skipped a provider stream")]
    assert len(said) == 2 and all(r.exc_info for r in said)  # once a stream, with traceback


@pytest.mark.parametrize("odd", range(len(ODD_CHAT)))
def test_an_odd_chat_chunk_is_skipped_by_the_messages_translator(world: World, odd: int) -> None:
    parts = chat_stream("Hello", " there")
    world.fake.push(Script([*parts[:2], ODD_CHAT[odd], *parts[2:]]))
    assert messages_text(world.anthropic(), "raw:m") == "Hello there"
    billed(world, "raw:m", SKIPPED)


def test_absurd_counts_in_a_translated_stream_are_refused_not_read_as_zero(
    world: World,
) -> None:
    # 10^40 is past 64 bits: orjson reads it as a float, which a translation carries as 0.
    absurd = str(10**40).encode()
    parts = [
        p.replace(b'"output_tokens": 3', b'"output_tokens": ' + absurd)
        for p in anthropic_stream("Hello", " there")
    ]
    assert any(absurd in p for p in parts)
    world.fake.push(Script(parts))
    assert chat_text(world.openai(), "rawclaude:m")[0] == "Hello there"
    world.fake.push(Script(parts))
    assert responses_text(world.openai(), "rawclaude:m") == "Hello there"
    chat = [
        p.replace(b'"completion_tokens": 3', b'"completion_tokens": ' + absurd)
        for p in chat_stream("Hello", " there")
    ]
    assert any(absurd in p for p in chat)
    world.fake.push(Script(chat))
    assert messages_text(world.anthropic(), "raw:m") == "Hello there"
    rows = world.usage(3)
    assert [row["status"] for row in rows] == ["invalid_usage"] * 3, rows
    assert all("is over the ceiling" in row["error_message"] for row in rows)


# Anthropic usage events as providers may send them. message_delta's usage is cumulative and
# the SDK types its input and cache counts as optional: a null is no report. A usage event the
# gateway cannot read (and no later one supersedes) leaves the usage unknown: refused and
# billed the estimate, never message_start's placeholder output count or no input count.
DELTA = b'"usage": {"output_tokens": 3}'
USAGE_SHAPES: dict[str, tuple[list[tuple[bytes, bytes]], str | tuple[int, int]]] = {
    "null counts": ([(DELTA, b'"usage": {"input_tokens": null, "output_tokens": 3}')], (7, 3)),
    # No final output count: at least a token per content delta (2), not the placeholder (1).
    "no output count": ([(DELTA, b'"usage": {"output_tokens": null}')], (7, 2)),
    "usage not an object": (
        [(b'"usage": {"input_tokens": 7, "output_tokens": 1}', b'"usage": "lots"')],
        "message_start",
    ),
    "message_delta usage a list": ([(DELTA, b'"usage": [3]')], "message_delta"),
    "message_delta not JSON": ([(DELTA, b'"usage": {"output_tokens": 1e400}')], "message_delta"),
}


@pytest.mark.parametrize("shape", list(USAGE_SHAPES))
def test_anthropic_usage_events_are_read_or_refused_by_every_translator(
    world: World, shape: str
) -> None:
    edits, expected = USAGE_SHAPES[shape]
    parts = anthropic_stream("Hello", " there")
    for old, new in edits:
        assert any(old in p for p in parts)
        parts = [p.replace(old, new) for p in parts]
    world.fake.push(Script(parts))
    assert chat_text(world.openai(), "rawclaude:m")[0] == "Hello there"
    world.fake.push(Script(parts))
    assert responses_text(world.openai(), "rawclaude:m") == "Hello there"
    rows = world.usage(2)
    for row in rows:
        if isinstance(expected, tuple):
            assert row["status"] == "success", row
            assert (row["prompt_tokens"], row["completion_tokens"]) == expected
        else:
            assert row["status"] == "invalid_usage", row
            assert expected in row["error_message"]


def test_an_unreadable_message_delta_is_superseded_by_a_later_one(world: World) -> None:
    parts = anthropic_stream("Hello", " there")
    [delta] = [p for p in parts if DELTA in p]
    parts.insert(parts.index(delta), delta.replace(DELTA, b'"usage": [3]'))
    world.fake.push(Script(parts))
    assert chat_text(world.openai(), "rawclaude:m")[0] == "Hello there"
    [row] = world.usage(1)
    assert row["status"] == "success" and (row["prompt_tokens"], row["completion_tokens"]) == (7, 3)


# -- a provider error mid-stream -----------------------------------------------------------------


def data_events(body: str) -> list[Any]:
    return [
        json.loads(line[6:])
        for line in body.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


def test_translated_mid_stream_error_has_the_openai_error_fields(world: World) -> None:
    parts = anthropic_stream("Hello", " there")
    error = {
        "type": "error",
        "error": {"type": "overloaded_error", "message": f"Overloaded (key {RAW_KEY})"},
    }
    world.fake.push(Script([*parts[:4], sse(error, "error")]))
    body = httpx.post(
        f"{world.url}/v1/chat/completions",
        headers=MASTER,
        json={
            "model": "rawclaude:m",
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        },
    ).text
    last = data_events(body)[-1]
    assert last == {
        "error": {
            "message": "Overloaded (key [redacted])",
            "type": "overloaded_error",
            "param": None,
            "code": None,
        }
    }
    [row] = world.usage(1)
    assert row["status"] == "error" and row["error_message"] == "Overloaded (key [redacted])"
    assert (row["prompt_tokens"], row["completion_tokens"]) == (7, 1)


def test_a_dropped_stream_ends_with_an_error_event_with_every_field(gateway: Gateway) -> None:
    gateway.openai_fake.push(cut_after=3)
    body = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers=MASTER,
        timeout=30,
        json={
            "model": "fake:gpt-4o-mini",
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        },
    ).text
    last = data_events(body)[-1]
    assert last == {
        "error": {
            "message": "Could not reach provider 'fake': ClientPayloadError",
            "type": "upstream_error",
            "param": None,
            "code": "stream_interrupted",
        }
    }


# -- a stream read to its end is a success -------------------------------------------------------


def test_a_stream_read_to_its_last_event_is_a_success(world: World) -> None:
    # The provider keeps the connection open after [DONE]; the client leaves once it has
    # it. Before, the relay waited for the provider's end and recorded the client as gone.
    world.fake.push(Script(chat_stream("Hello", " there"), hold=True))
    assert chat_text(world.openai(), "raw:m")[0] == "Hello there"
    billed(world, "raw:m")
    # A body that never ends is not waited for past the drain's bound: the gateway hangs up.
    world.fake.wait_closed()


@pytest.mark.parametrize("model", ["raw:m", "rawclaude:m"])
def test_a_finished_stream_gives_its_connection_back_to_the_pool(world: World, model: str) -> None:
    # The provider's end of body (the chunked terminator) comes after its last event. The
    # client gets its whole answer without waiting for it; the gateway then reads it, so the
    # connection is reused. Before, it was closed with bytes unread (reset), and the next
    # request opened a new one: to a real provider, a new TLS handshake.
    stream = chat_stream if model == "raw:m" else anthropic_stream
    for count in (1, 2):
        ended = threading.Event()
        world.fake.push(Script(stream("Hello", " there"), end_when=ended))
        if model == "raw:m":
            assert chat_text(world.openai(), model)[0] == "Hello there"
        else:
            assert messages_text(world.anthropic(), model) == "Hello there"
        ended.set()
        world.usage(count)  # settled: after the connection went back to the pool
    assert world.fake.peers[0] == world.fake.peers[1]
    assert all(row["status"] == "success" for row in world.usage(2))


# -- the usage chunk otari asked for is removed whatever its shape -------------------------------


def test_usage_on_a_chunk_with_choices_is_stripped(world: World) -> None:
    with_null = [
        sse(chunk({"role": "assistant", "content": ""}, usage=None)),
        sse(chunk({"content": "Hello"}, usage=None)),
        sse(chunk({"content": " there"}, usage=None)),
        sse(chunk({}, "stop", usage=None)),
        # LiteLLM's shape: usage (and its own cost) on a chunk with an empty delta.
        sse({**ENVELOPE, "choices": [{"index": 0, "delta": {}}], "usage": USAGE, "cost": 0.0001}),
        b"data: [DONE]\n\n",
    ]
    world.fake.push(Script(with_null))
    body = httpx.post(
        f"{world.url}/v1/chat/completions",
        headers=MASTER,
        json={"model": "raw:m", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    ).text
    # Exactly what the client would get had otari not asked for usage.
    assert data_events(body) == [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hello"}),
        chunk({"content": " there"}),
        chunk({}, "stop"),
    ]
    assert body.endswith("data: [DONE]\n\n")
    assert world.fake.requests[0]["stream_options"] == {"include_usage": True}
    billed(world, "raw:m")


def test_usage_on_a_chunk_with_content_keeps_the_content(world: World) -> None:
    world.fake.push(
        Script(
            [
                sse(chunk({"role": "assistant", "content": ""})),
                sse(chunk({"content": "Hello there"}, "stop", usage=USAGE)),
                b"data: [DONE]\n\n",
            ]
        )
    )
    body = httpx.post(
        f"{world.url}/v1/chat/completions",
        headers=MASTER,
        json={"model": "raw:m", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    ).text
    assert data_events(body) == [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hello there"}, "stop"),
    ]
    billed(world, "raw:m")


# -- a provider that answers a stream request with JSON ------------------------------------------

JSON_ANSWERS = [
    ("chat", "raw:m", COMPLETION),
    ("chat", "rawclaude:m", MESSAGE),
    ("messages", "rawclaude:m", MESSAGE),
    ("messages", "raw:m", COMPLETION),
    ("responses", "raw:m", RESPONSE),
    ("responses", "rawclaude:m", MESSAGE),
]


@pytest.mark.parametrize(
    ("endpoint", "model", "answer"), JSON_ANSWERS, ids=[f"{e}-{m}" for e, m, _ in JSON_ANSWERS]
)
def test_a_json_answer_to_a_stream_request_is_streamed_and_billed(
    world: World, endpoint: str, model: str, answer: dict[str, Any]
) -> None:
    world.fake.push(Script([json.dumps(answer).encode()], content_type="application/json"))
    if endpoint == "chat":
        text, chunks = chat_text(world.openai(), model, stream_options={"include_usage": True})
        assert chunks[-1].usage.completion_tokens == 3
    elif endpoint == "messages":
        text = messages_text(world.anthropic(), model)
    else:
        text = responses_text(world.openai(), model)
    assert text == "Hello there"
    billed(world, model)


def test_an_answer_neither_json_nor_events_is_a_502(world: World) -> None:
    world.fake.push(Script([b"<html>busy</html>"], content_type="text/html"))
    with pytest.raises(openai.APIStatusError) as info:
        chat_text(world.openai(), "raw:m")
    assert info.value.status_code == 502
    assert (
        "Provider 'raw' answered a stream request with 'text/html', neither an event "
        "stream nor JSON"
    ) in str(info.value)
    [row] = world.usage(1)
    assert row["status"] == "error" and row["cost"] == 0


JSON_ERRORS = {
    "raw:m": {
        "error": {
            "message": "Rate limit reached",
            "type": "rate_limit_error",
            "code": "rate_limit_exceeded",
        }
    },
    "rawclaude:m": {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Rate limit reached"},
    },
}


def plain_text(world: World, endpoint: str, model: str) -> str | None:
    if endpoint == "chat":
        return (
            world.openai()
            .chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
            .choices[0]
            .message.content
        )
    if endpoint == "messages":
        return str(
            world.anthropic()
            .messages.create(
                model=model, max_tokens=50, messages=[{"role": "user", "content": "hi"}]
            )
            .content
        )
    return world.openai().responses.create(model=model, input="hi").output_text


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("model", ["raw:m", "rawclaude:m"])
@pytest.mark.parametrize("endpoint", ["chat", "messages", "responses"])
def test_a_json_error_answer_with_status_200_is_an_error(
    world: World, endpoint: str, model: str, stream: bool
) -> None:
    # An error body sent with status 200 is no answer: never an empty successful answer
    # billed from the estimate.
    world.fake.push(
        Script([json.dumps(JSON_ERRORS[model]).encode()], content_type="application/json")
    )
    expected = f"Provider '{model.split(':')[0]}' answered with an error: Rate limit reached"
    caught: openai.APIStatusError | anthropic.APIStatusError
    if endpoint == "messages":
        with pytest.raises(anthropic.APIStatusError) as anthropic_info:
            messages_text(world.anthropic(), model) if stream else plain_text(
                world, endpoint, model
            )
        caught = anthropic_info.value
        assert caught.body == {"type": "error", "error": {"type": "api_error", "message": expected}}
    else:
        with pytest.raises(openai.APIStatusError) as openai_info:
            if not stream:
                plain_text(world, endpoint, model)
            elif endpoint == "chat":
                chat_text(world.openai(), model)
            else:
                responses_text(world.openai(), model)
        caught = openai_info.value
        assert caught.body["message"] == expected  # type: ignore[index]
    assert caught.status_code == 502
    [row] = world.usage(1)
    assert (row["status"], row["status_code"], row["cost"]) == ("error", 502, 0)
    assert row["error_message"] == expected


# -- streams are cut past the reserved output ----------------------------------------------------


@pytest.mark.parametrize("endpoint", ["chat", "messages"])
def test_a_stream_past_the_reserved_output_is_cut(world: World, endpoint: str) -> None:
    budget = world.admin.post("/v1/budgets", json={"max_budget": 1}).json()["budget_id"]
    world.admin.post("/v1/users", json={"user_id": "alice", "budget_id": budget})
    key = world.admin.post("/v1/keys", json={"user_id": "alice"}).json()["key"]
    # A provider that ignores max_tokens and never stops.
    words = [sse(chunk({"content": f" w{n}"})) for n in range(40)]
    world.fake.push(Script([sse(chunk({"role": "assistant", "content": ""})), *words], hold=True))
    text = ""
    if endpoint == "chat":
        with pytest.raises(openai.APIError) as info:
            for item in world.openai(key).chat.completions.create(
                model="raw:m",
                max_tokens=3,
                stream=True,
                messages=[{"role": "user", "content": "hi"}],
            ):
                text += item.choices[0].delta.content or ""
        message = str(info.value)
    else:
        client = world.stack.enter_context(
            anthropic.Anthropic(base_url=world.url, api_key=key, max_retries=0)
        )
        with (
            pytest.raises(anthropic.APIError) as caught,
            client.messages.stream(
                model="raw:m", max_tokens=3, messages=[{"role": "user", "content": "hi"}]
            ) as stream,
        ):
            for piece in stream.text_stream:
                text += piece
        message = str(caught.value)
    assert "passed the 3 reserved output tokens" in message
    world.fake.wait_closed(1)  # the upstream request was closed
    [row] = world.usage(1)
    relayed = text.count(" w")  # the words the client received, one token each
    assert relayed > 4
    assert row["status"] == "error" and row["completion_tokens"] == relayed
    assert row["error_message"].startswith("stream cut: the output passed the 3 reserved")
    assert ESTIMATED in row["error_message"]
    assert row["cost"] == (Decimal(row["prompt_tokens"]) * 1 + Decimal(relayed) * 2) / 10**6


# -- a client that hangs up pays the estimate ----------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_client_leaving_a_300kb_prompt_early_pays_the_estimate(
    gateway_factory: Callable[..., Gateway], path: str
) -> None:
    gateway = gateway_factory()
    gateway.price("fake:gpt-4o-mini", "1", "2")
    gateway.user("alice", max_budget="5")
    key = gateway.key(user_id="alice")
    gate = gateway.openai_fake.gate()
    gateway.openai_fake.push(
        text="one two three four five six seven eight", gate=gate, hold_after=5
    )  # the role chunk and four words, then waits
    prompt = "lorem ipsum " * 25_000  # 300 KB
    raw = json.dumps(
        {
            "model": "fake:gpt-4o-mini",
            "stream": True,
            "max_tokens": 50,
            "messages": [{"role": "user", "content": prompt}],
        }
    ).encode()
    seen = 0
    with (
        httpx.Client(base_url=gateway.url, timeout=30) as http,
        http.stream(
            "POST",
            path,
            content=raw,
            headers={"Authorization": f"Bearer {key}", "content-type": "application/json"},
        ) as answer,
    ):
        assert answer.status_code == 200
        for line in answer.iter_lines():
            # Chat: five chunks; Messages: the four text deltas they became.
            if line.startswith("data: ") and (
                path.endswith("completions") or '"content_block_delta"' in line
            ):
                seen += 1
            if seen == (5 if path.endswith("completions") else 4):
                break
    [row] = gateway.usage(1)
    gate.release()
    estimate = -(-len(raw) // 4)
    assert row["status"] == "client_disconnected"
    assert (row["prompt_tokens"], row["completion_tokens"]) == (estimate, 4)
    assert row["cost"] == (Decimal(estimate) * 1 + 4 * 2) / 10**6
    assert row["error_message"] == (f"{ESTIMATED} (client disconnected before the usage report)")


def test_a_json_answer_without_usage_is_billed_from_the_estimate(world: World) -> None:
    answer = {key: value for key, value in COMPLETION.items() if key != "usage"}
    content = json.dumps(answer).encode()
    world.fake.push(Script([content], content_type="application/json"))
    raw = json.dumps({"model": "raw:m", "messages": [{"role": "user", "content": "hi"}]})
    response = httpx.post(
        f"{world.url}/v1/chat/completions",
        headers={**MASTER, "content-type": "application/json"},
        content=raw,
    )
    assert response.status_code == 200
    [row] = world.usage(1)
    prompt, output = -(-len(raw) // 4), -(-len(content) // 4)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt, output)
    assert row["cost"] == (Decimal(prompt) + Decimal(output) * 2) / 10**6
    assert row["error_message"] == f"{ESTIMATED} (no usage in the provider's answer)"


# -- scrubbing never corrupts an answer ----------------------------------------------------------

TEXT = "Six experts packed the box with x-rays and an EMPTY kettle"


@pytest.mark.parametrize("key", ["x", "k", "EMPTY"])
def test_a_dummy_provider_key_is_never_scrubbed(sqlite_url: str, key: str) -> None:
    with FakeOpenAI(api_key=key) as fake:
        fake.default = Behaviour(text=TEXT)
        settings = make_settings(
            sqlite_url,
            require_pricing=False,
            providers={"local": {"type": "openai", "base_url": fake.base_url, "api_key": key}},
        )
        with running(settings) as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key=MASTER_KEY, max_retries=0)
            chunks = list(
                client.chat.completions.create(
                    model="local:gpt-4o-mini",
                    stream=True,
                    messages=[{"role": "user", "content": "hi"}],
                )
            )
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert all(c.object == "chat.completion.chunk" for c in chunks)
            assert text == TEXT
            with anthropic.Anthropic(base_url=url, api_key=MASTER_KEY, max_retries=0) as sdk:
                assert messages_text(sdk, "local:gpt-4o-mini") == TEXT


def test_a_secret_key_is_scrubbed_on_token_boundaries_only(world: World) -> None:
    world.fake.push(Script(chat_stream(f"key {RAW_KEY}.", f" not x{RAW_KEY}y")))
    text = chat_text(world.openai(), "raw:m")[0]
    assert text == f"key [redacted]. not x{RAW_KEY}y"


ECHOED = {
    "raw:m": {
        **COMPLETION,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": f"key {RAW_KEY}. not x{RAW_KEY}y"},
            }
        ],
    },
    "rawclaude:m": {
        **MESSAGE,
        "content": [{"type": "text", "text": f"key {RAW_KEY}. not x{RAW_KEY}y"}],
    },
}
RESPONSE_ECHOED = {
    **RESPONSE,
    "output": [
        {
            **RESPONSE["output"][0],
            "content": [
                {
                    "type": "output_text",
                    "text": f"key {RAW_KEY}. not x{RAW_KEY}y",
                    "annotations": [],
                }
            ],
        }
    ],
}


@pytest.mark.parametrize("model", ["raw:m", "rawclaude:m"])
@pytest.mark.parametrize("endpoint", ["chat", "messages", "responses"])
def test_a_secret_key_is_scrubbed_from_plain_answers_too(
    world: World, endpoint: str, model: str
) -> None:
    # A model made to repeat the key leaks it as surely in a JSON answer as in a stream.
    answer = RESPONSE_ECHOED if (endpoint, model) == ("responses", "raw:m") else ECHOED[model]
    world.fake.push(Script([json.dumps(answer).encode()], content_type="application/json"))
    if endpoint == "chat":
        text = (
            world.openai()
            .chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
            .choices[0]
            .message.content
        )
    elif endpoint == "messages":
        block = (
            world.anthropic()
            .messages.create(
                model=model, max_tokens=50, messages=[{"role": "user", "content": "hi"}]
            )
            .content[0]
        )
        assert block.type == "text"
        text = block.text
    else:
        text = world.openai().responses.create(model=model, input="hi").output_text
    assert text == f"key [redacted]. not x{RAW_KEY}y"
    billed(world, model)


# -- the Responses stream behaves the same -------------------------------------------------------


def responses_stream(*texts: str) -> list[bytes]:
    created = {**RESPONSE, "status": "in_progress", "output": [], "usage": None}
    parts = [
        sse(
            {"type": "response.created", "response": created, "sequence_number": 0},
            "response.created",
        )
    ]
    parts += [
        sse(
            {
                "type": "response.output_text.delta",
                "item_id": "msg_9",
                "output_index": 0,
                "content_index": 0,
                "delta": text,
                "sequence_number": n + 1,
            },
            "response.output_text.delta",
        )
        for n, text in enumerate(texts)
    ]
    parts.append(
        sse(
            {"type": "response.completed", "response": RESPONSE, "sequence_number": len(texts) + 1},
            "response.completed",
        )
    )
    return parts


def test_responses_unterminated_final_event_and_malformed_event(world: World) -> None:
    parts = responses_stream("Hello", " there")
    parts[-1] = parts[-1].rstrip(b"\n")
    world.fake.push(
        Script([*parts[:2], b"event: response.output_text.delta\n" + BROKEN, *parts[2:]])
    )
    assert responses_text(world.openai(), "raw:m") == "Hello there"
    billed(world, "raw:m", SKIPPED)


@pytest.mark.parametrize("endpoint", ["messages", "responses"])
def test_a_stream_read_to_its_last_event_is_a_success_everywhere(
    world: World, endpoint: str
) -> None:
    if endpoint == "messages":
        world.fake.push(Script(anthropic_stream("Hello", " there"), hold=True))
        assert messages_text(world.anthropic(), "rawclaude:m") == "Hello there"
        billed(world, "rawclaude:m")
    else:
        world.fake.push(Script(responses_stream("Hello", " there"), hold=True))
        assert responses_text(world.openai(), "raw:m") == "Hello there"
        billed(world, "raw:m")

"""Anthropic Messages requests to OpenAI chat and the answers (JSON and streams) back."""

from __future__ import annotations

from typing import Any

import pytest
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from otari_server.translate.chat_via_messages import TranslationError
from otari_server.translate.messages_via_chat import (
    MessageStreamTranslator,
    anthropic_usage,
    stop_reason,
    to_chat_request,
    to_message,
)

EVENT: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)


def translate(**body: Any) -> dict[str, Any]:
    body.setdefault("model", "openai:gpt-4o-mini")
    body.setdefault("max_tokens", 100)
    body.setdefault("messages", [{"role": "user", "content": "Hi"}])
    return to_chat_request(body, model="gpt-4o-mini")


def test_minimal_request() -> None:
    assert translate() == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 100,
    }


def test_max_tokens_is_required() -> None:
    with pytest.raises(TranslationError, match=r"^max_tokens"):
        to_chat_request({"model": "m", "messages": [{"role": "user", "content": "x"}]})


@pytest.mark.parametrize(
    ("system", "expected"),
    [
        ("Be brief.", [{"role": "system", "content": "Be brief."}]),
        (
            [
                {"type": "text", "text": "Be brief."},
                {"type": "text", "text": "Cached.", "cache_control": {"type": "ephemeral"}},
            ],
            [{"role": "system", "content": "Be brief.\n\nCached."}],
        ),
        ("", []),
    ],
)
def test_system_string_or_blocks(system: Any, expected: list[dict[str, Any]]) -> None:
    assert translate(system=system)["messages"][:-1] == expected


def test_scalar_parameters() -> None:
    request = translate(
        stop_sequences=["END"],
        temperature=0.3,
        top_p=0.9,
        top_k=4,
        metadata={"user_id": "alice"},
        stream=True,
        thinking={"type": "enabled", "budget_tokens": 2048},
        service_tier="auto",
    )
    assert request["stop"] == ["END"]
    assert (request["temperature"], request["top_p"]) == (0.3, 0.9)
    assert request["user"] == "alice"
    assert request["stream"] is True
    assert request["stream_options"] == {"include_usage": True}
    assert not {"top_k", "thinking", "metadata", "service_tier"} & set(request)


def test_tool_conversation() -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture, and the weather?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "AAA="},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [
                        {"type": "text", "text": "Sunny"},
                        {"type": "image", "source": {"type": "url", "url": "https://x/map.png"}},
                    ],
                },
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]
    tools = [
        {
            "name": "get_weather",
            "description": "Weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    request = translate(
        messages=messages,
        tools=tools,
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    )
    assert request["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture, and the weather?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA="}},
            ],
        },
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny"},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "https://x/map.png"}},
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]
    assert request["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "description": "Weather",
            },
        }
    ]
    assert request["tool_choice"] == "required"
    assert request["parallel_tool_calls"] is False


def test_text_only_user_blocks_collapse_to_a_string() -> None:
    content = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert translate(messages=[{"role": "user", "content": content}])["messages"] == [
        {"role": "user", "content": "a\n\nb"}
    ]


def test_assistant_with_only_tool_use_has_null_content() -> None:
    messages = [
        {"role": "user", "content": "time?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t", "name": "now", "input": {}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t", "content": "noon"}],
        },
    ]
    converted = translate(messages=messages)["messages"]
    assert converted[1]["content"] is None
    assert converted[2] == {"role": "tool", "tool_call_id": "t", "content": "noon"}


def test_documents() -> None:
    content = [
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
        },
        {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": "plain"},
        },
    ]
    parts = translate(messages=[{"role": "user", "content": content}])["messages"][0]["content"]
    assert parts == [
        {
            "type": "file",
            "file": {"filename": "document.pdf", "file_data": "data:application/pdf;base64,JVBE"},
        },
        {"type": "text", "text": "plain"},
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        (
            {"type": "tool", "name": "f"},
            {"tool_choice": {"type": "function", "function": {"name": "f"}}},
        ),
        (None, {}),
    ],
)
def test_tool_choice(choice: Any, expected: dict[str, Any]) -> None:
    tools = [{"name": "f", "input_schema": {"type": "object"}}]
    request = translate(tools=tools, tool_choice=choice)
    assert {
        k: v for k, v in request.items() if k in ("tool_choice", "parallel_tool_calls")
    } == expected


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, r"tools\[0\]"),
        ({"tool_choice": {"type": "magic"}, "tools": [{"name": "f"}]}, "tool_choice.type"),
        ({"messages": [{"role": "system", "content": "x"}]}, r"messages\[0\]\.role"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": 3}]}, r"messages\[0\]\.content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "search_result", "source": "x"}]}]},
            r"messages\[0\]\.content\[0\]",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image", "source": {"type": "file"}}]}
                ]
            },
            r"messages\[0\]\.content\[0\]\.source",
        ),
    ],
)
def test_untranslatable_requests_name_their_place(body: dict[str, Any], where: str) -> None:
    with pytest.raises(TranslationError, match=f"^{where}"):
        translate(**body)


# -- responses ---------------------------------------------------------------------------


def completion(message: dict[str, Any], finish: str = "stop", **usage: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14, **usage},
    }


def test_text_response() -> None:
    message = to_message(completion({"role": "assistant", "content": "Hello!"}))
    assert message["id"].startswith("msg_") and len(message["id"]) == 28
    assert message == {
        "id": message["id"],
        "type": "message",
        "role": "assistant",
        "model": "gpt-4o-mini",
        "content": [{"type": "text", "text": "Hello!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "output_tokens": 4,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        },
    }
    Message.model_validate(message)


def test_tool_call_response_with_reasoning() -> None:
    reply = {
        "role": "assistant",
        "content": None,
        "reasoning_content": "thinking...",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
            {
                "id": "call_2",
                "type": "function",
                "function": {"name": "g", "arguments": "not json"},
            },
        ],
    }
    message = to_message(completion(reply, "tool_calls"), model="openai:gpt-4o-mini")
    assert message["content"] == [
        {"type": "thinking", "thinking": "thinking...", "signature": ""},
        {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}},
        {"type": "tool_use", "id": "call_2", "name": "g", "input": {}},
    ]
    assert message["stop_reason"] == "tool_use"
    assert message["model"] == "gpt-4o-mini"  # as the provider named it
    Message.model_validate(message)


@pytest.mark.parametrize(
    ("finish", "tools", "expected"),
    [
        ("stop", False, "end_turn"),
        ("length", False, "max_tokens"),
        ("tool_calls", True, "tool_use"),
        ("function_call", True, "tool_use"),
        ("content_filter", False, "refusal"),
        ("stop", True, "tool_use"),
        (None, False, "end_turn"),
        ("weird", False, "end_turn"),
    ],
)
def test_stop_reasons(finish: str | None, tools: bool, expected: str) -> None:
    assert stop_reason(finish, tool_calls=tools) == expected


def test_usage_with_cached_prompt_tokens() -> None:
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 60},
    }
    assert anthropic_usage(usage) == {
        "input_tokens": 40,
        "output_tokens": 5,
        "cache_read_input_tokens": 60,
        "cache_creation_input_tokens": 0,
    }


# -- streams -----------------------------------------------------------------------------


def chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any
) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": choices, **extra}


def run(chunks: list[dict[str, Any]]) -> tuple[MessageStreamTranslator, list[dict[str, Any]]]:
    translator = MessageStreamTranslator(model="gpt-4o-mini", message_id="msg_1", input_tokens=9)
    events = [event for c in chunks for event in translator.feed(c)] + translator.finish()
    for event in events:
        if event["type"] != "ping":  # the SDK's event union leaves out ping and error
            EVENT.validate_python(event)
    return translator, events


def test_text_stream_is_the_exact_anthropic_sequence() -> None:
    chunks = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk({}, "stop"),
        chunk(None, usage={"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}),
    ]
    translator, events = run(chunks)
    assert events == [
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "gpt-4o-mini",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 9, "output_tokens": 0},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {
                "input_tokens": 11,
                "output_tokens": 2,
                "cache_read_input_tokens": 0,
                "cache_creation_input_tokens": 0,
            },
        },
        {"type": "message_stop"},
    ]
    assert translator.done
    assert translator.stop_reason == "end_turn"
    assert translator.usage == anthropic_usage({"prompt_tokens": 11, "completion_tokens": 2})


def test_tool_call_stream() -> None:
    head = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "f", "arguments": ""},
    }
    second = {
        "index": 1,
        "id": "call_2",
        "type": "function",
        "function": {"name": "g", "arguments": "{}"},
    }
    chunks = [
        chunk({"role": "assistant", "content": "Sure."}),
        chunk({"tool_calls": [head]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
        chunk({"tool_calls": [second]}),
        chunk({}, "tool_calls"),
    ]
    translator, events = run(chunks)
    assert [(e["type"], e.get("index")) for e in events] == [
        ("message_start", None),
        ("content_block_start", 0),
        ("ping", None),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2),
        ("content_block_delta", 2),
        ("content_block_stop", 2),
        ("message_delta", None),
        ("message_stop", None),
    ]
    assert events[5]["content_block"] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "f",
        "input": {},
    }
    assert [e["delta"]["partial_json"] for e in events if e.get("index") == 1 and "delta" in e] == [
        '{"a":',
        "1}",
    ]
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
    assert events[-2]["usage"] == {"input_tokens": 9, "output_tokens": 0}
    assert translator.usage is None


def test_reasoning_stream_becomes_a_thinking_block() -> None:
    _, events = run(
        [chunk({"reasoning_content": "hmm"}), chunk({"content": "ok"}), chunk({}, "length")]
    )
    assert events[1]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert events[3]["delta"] == {"type": "thinking_delta", "thinking": "hmm"}
    assert events[4] == {"type": "content_block_stop", "index": 0}
    assert events[5]["content_block"] == {"type": "text", "text": ""}
    assert events[-2]["delta"]["stop_reason"] == "max_tokens"


def test_empty_stream_still_starts_and_stops() -> None:
    _, events = run([])
    assert [e["type"] for e in events] == ["message_start", "message_delta", "message_stop"]


def test_error_chunk_becomes_an_error_event_and_ends_the_stream() -> None:
    translator = MessageStreamTranslator(model="m")
    events = translator.feed(chunk({"content": "a"}))
    events += translator.feed({"error": {"message": "boom", "type": "server_error"}})
    assert events[-1] == {"type": "error", "error": {"type": "api_error", "message": "boom"}}
    assert translator.error == events[-1]["error"]
    assert translator.feed(chunk({"content": "b"})) == []
    assert translator.finish() == []


def test_other_choices_are_ignored() -> None:
    other = {
        "id": "x",
        "choices": [{"index": 1, "delta": {"content": "no"}, "finish_reason": None}],
    }
    _, events = run([other])
    assert [e["type"] for e in events] == ["message_start", "message_delta", "message_stop"]


def test_reasoning_models_take_the_limit_as_max_completion_tokens() -> None:
    body = {"model": "m", "max_tokens": 7, "messages": [{"role": "user", "content": "x"}]}
    request = to_chat_request(body, limit_field="max_completion_tokens")
    assert request["max_completion_tokens"] == 7
    assert "max_tokens" not in request


# -- parallel tool calls, stop strings, model and id (issues 12, 18, 22) ----------------------


def sdk_inputs_at_block_stop(events: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """What the official SDK's accumulator holds for each tool_use block at its stop."""
    from anthropic.lib.streaming._messages import accumulate_event

    snapshot = None
    buffers: dict[int, bytes] = {}
    seen = []
    for event in events:
        if event["type"] == "ping":
            continue
        snapshot = accumulate_event(
            event=EVENT.validate_python(event), current_snapshot=snapshot, json_bufs=buffers
        )
        if event["type"] == "content_block_stop":
            block = snapshot.content[event["index"]]
            if block.type == "tool_use":
                seen.append((block.name, block.input))
    return seen


def test_interleaved_parallel_tool_calls_keep_each_block_whole() -> None:
    def head(index: int, name: str) -> dict[str, Any]:
        return {
            "index": index,
            "id": f"call_{index}",
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }

    def part(index: int, text: str) -> dict[str, Any]:
        return {"index": index, "function": {"arguments": text}}

    chunks = [
        chunk({"role": "assistant", "content": None}),
        chunk({"tool_calls": [head(0, "weather")]}),
        chunk({"tool_calls": [head(1, "time")]}),
        chunk({"tool_calls": [part(0, '{"city":')]}),
        chunk({"tool_calls": [part(1, '{"zone":')]}),
        chunk({"tool_calls": [part(0, '"Paris"}')]}),
        chunk({"tool_calls": [part(1, '"CET"}')]}),
        chunk({"tool_calls": [head(2, "noop")]}),
        chunk({}, "tool_calls"),
        chunk(None, usage={"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}),
    ]
    _, events = run(chunks)
    # Every delta between its block's start and stop; one block open at a time.
    open_block = None
    for event in events:
        if event["type"] == "content_block_start":
            assert open_block is None
            open_block = event["index"]
        elif event["type"] == "content_block_delta":
            assert event["index"] == open_block
        elif event["type"] == "content_block_stop":
            assert event["index"] == open_block
            open_block = None
    assert sdk_inputs_at_block_stop(events) == [
        ("weather", {"city": "Paris"}),
        ("time", {"zone": "CET"}),
        ("noop", {}),
    ]
    assert [e["content_block"]["id"] for e in events if e["type"] == "content_block_start"] == [
        "call_0",
        "call_1",
        "call_2",
    ]
    assert events[-2]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}


def test_text_after_held_tool_calls_closes_them_first() -> None:
    calls = [
        {"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {
            "index": 1,
            "id": "b",
            "type": "function",
            "function": {"name": "g", "arguments": '{"x":1}'},
        },
    ]
    _, events = run([chunk({"tool_calls": calls}), chunk({"content": "done"}), chunk({}, "stop")])
    assert [(e["type"], e.get("index")) for e in events[1:-2]] == [
        ("content_block_start", 0),
        ("ping", None),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2),
        ("content_block_delta", 2),
        ("content_block_stop", 2),
    ]
    assert sdk_inputs_at_block_stop(events) == [("f", {}), ("g", {"x": 1})]


def test_a_matched_stop_string_is_a_stop_sequence() -> None:
    # vLLM names the stop string that matched as the choice's stop_reason.
    reply = {"role": "assistant", "content": "one two"}
    answer = completion(reply)
    answer["choices"][0]["stop_reason"] = "THREE"
    message = to_message(answer)
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "THREE")
    # A stop token id (an int) or no match is an ordinary end of turn.
    for matched in (128001, None):
        answer["choices"][0]["stop_reason"] = matched
        assert (to_message(answer)["stop_reason"], to_message(answer)["stop_sequence"]) == (
            "end_turn",
            None,
        )
    final = {"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": "THREE"}
    translator, events = run(
        [chunk({"content": "one two"}), {"id": "chatcmpl-1", "choices": [final]}]
    )
    assert events[-2]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "THREE"}
    assert (translator.stop_reason, translator.stop_sequence) == ("stop_sequence", "THREE")


def test_stream_reports_the_providers_model_and_a_message_id() -> None:
    translator = MessageStreamTranslator(model="fake:gpt-4o-mini", input_tokens=3)
    events = translator.feed(chunk({"content": "hi"}, model="gpt-4o-mini-2024-07-18"))
    start = events[0]["message"]
    assert start["model"] == "gpt-4o-mini-2024-07-18"
    assert start["id"].startswith("msg_")
    # Without a model in the chunks the name the client asked for stands in.
    assert MessageStreamTranslator(model="fake:m").finish()[0]["message"]["model"] == "fake:m"
    assert to_message({"choices": []}, model="fake:m")["model"] == "fake:m"
    assert to_message({"id": "msg_abc", "choices": []})["id"] == "msg_abc"

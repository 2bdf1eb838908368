"""OpenAI chat requests to Anthropic Messages and the answers (JSON and streams) back."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from otari_server.translate.chat_via_messages import (
    ChatStreamTranslator,
    TranslationError,
    chat_usage,
    finish_reason,
    to_chat_completion,
)
from otari_server.translate.chat_via_messages_request import to_messages_request

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def translate(**body: Any) -> dict[str, Any]:
    body.setdefault("model", "anthropic:claude")
    body.setdefault("messages", [{"role": "user", "content": "Hi"}])
    return to_messages_request(body, model="claude-sonnet-4-5")


def test_minimal_request() -> None:
    assert translate() == {
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        "max_tokens": 4096,
    }


def test_max_tokens_default_is_a_parameter_and_completion_tokens_win() -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}], "model": "m"}
    assert to_messages_request(body, default_max_tokens=77)["max_tokens"] == 77
    assert translate(max_tokens=10)["max_tokens"] == 10
    assert translate(max_tokens=10, max_completion_tokens=20)["max_tokens"] == 20
    with pytest.raises(TranslationError, match="max_tokens"):
        translate(max_tokens=0)


def test_system_and_developer_messages_become_system() -> None:
    request = translate(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
            {"role": "user", "content": "Hi"},
        ]
    )
    assert request["system"] == "Be brief.\n\nUse French."
    assert [m["role"] for m in request["messages"]] == ["user"]


def test_system_keeps_blocks_when_cache_control_is_asked_for() -> None:
    cached = {"type": "text", "text": "Long context", "cache_control": {"type": "ephemeral"}}
    request = translate(
        messages=[{"role": "system", "content": [cached]}, {"role": "user", "content": "Hi"}]
    )
    assert request["system"] == [cached]


def test_scalar_parameters() -> None:
    request = translate(
        stop=["END", "  ", "\n"],
        temperature=1.7,
        top_p=0.9,
        user="alice",
        stream=True,
        stream_options={"include_usage": True},
        top_k=5,
    )
    assert request["stop_sequences"] == ["END"]
    assert request["temperature"] == 1.0
    assert request["top_p"] == 0.9
    assert request["metadata"] == {"user_id": "alice"}
    assert request["stream"] is True
    assert request["top_k"] == 5
    assert "stream_options" not in request
    assert translate(stop="STOP")["stop_sequences"] == ["STOP"]


def test_openai_only_fields_are_dropped() -> None:
    request = translate(
        n=1,
        seed=3,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        logit_bias={"1": 2},
        logprobs=False,
        store=True,
        metadata={"k": "v"},
        service_tier="auto",
        parallel_tool_calls=True,
        prompt_cache_key="x",
        modalities=["text"],
        my_extension="kept out",
    )
    assert set(request) == {"model", "messages", "max_tokens"}


@pytest.mark.parametrize(
    "fields", [{"logprobs": True}, {"top_logprobs": 2}, {"logprobs": True, "top_logprobs": 0}]
)
def test_logprobs_are_refused_not_dropped(fields: dict[str, Any]) -> None:
    with pytest.raises(TranslationError) as caught:
        translate(**fields)
    assert str(caught.value) == (
        "logprobs: unsupported, anthropic providers do not return log probabilities"
    )


def test_several_choices_cannot_be_translated() -> None:
    with pytest.raises(TranslationError, match=r"^n: "):
        translate(n=2)


def test_images_become_image_blocks() -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
        {
            "type": "file",
            "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
        },
    ]
    blocks = translate(messages=[{"role": "user", "content": content}])["messages"][0]["content"]
    assert blocks == [
        {"type": "text", "text": "What is this?"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
        },
    ]


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "data:image/png,notbase64"}},
        {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}},
        {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}},
        {"type": "file", "file": {"file_id": "file-1"}},
        {"type": "text", "text": 5},
    ],
)
def test_untranslatable_parts_name_their_place(part: dict[str, Any]) -> None:
    with pytest.raises(TranslationError, match=r"^messages\[0\]\.content\[0\]"):
        translate(messages=[{"role": "user", "content": [part]}])


def test_tool_conversation() -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "Rain"}]},
        {"role": "user", "content": "Thanks"},
    ]
    request = translate(messages=messages, tools=[WEATHER_TOOL], tool_choice="auto")
    assert request["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "call_2",
                    "name": "get_weather",
                    "input": {"city": "Rome"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "Sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "call_2",
                    "content": [{"type": "text", "text": "Rain"}],
                },
                {"type": "text", "text": "Thanks"},
            ],
        },
    ]
    assert request["tools"] == [
        {
            "name": "get_weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            "description": "Weather for a city",
        }
    ]
    assert request["tool_choice"] == {"type": "auto"}


def test_assistant_with_only_tool_calls_and_empty_arguments() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "now", "arguments": ""}}
    messages = [
        {"role": "user", "content": "time?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
    ]
    assistant = translate(messages=messages)["messages"][1]
    assert assistant["content"] == [{"type": "tool_use", "id": "c", "name": "now", "input": {}}]


def test_invalid_tool_arguments_are_refused() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
    with pytest.raises(
        TranslationError, match=r"messages\[1\]\.tool_calls\[0\]\.function\.arguments"
    ):
        translate(
            messages=[{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [call]}]
        )


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        (None, None, None),
    ],
)
def test_tool_choice(choice: Any, parallel: bool | None, expected: dict[str, Any] | None) -> None:
    body: dict[str, Any] = {"tools": [WEATHER_TOOL]}
    if choice is not None:
        body["tool_choice"] = choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    assert translate(**body).get("tool_choice") == expected


def test_tool_choice_without_tools_is_dropped_and_parameterless_tools_get_a_schema() -> None:
    assert "tool_choice" not in translate(tool_choice="required")
    bare = {"type": "function", "function": {"name": "now"}}
    assert translate(tools=[bare])["tools"] == [
        {"name": "now", "input_schema": {"type": "object", "properties": {}}}
    ]


def test_anthropic_server_tools_pass_through() -> None:
    search = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
    assert translate(tools=[search])["tools"] == [search]


def test_legacy_functions() -> None:
    request = translate(functions=[WEATHER_TOOL["function"]], function_call={"name": "get_weather"})
    assert request["tools"][0]["name"] == "get_weather"
    assert request["tool_choice"] == {"type": "tool", "name": "get_weather"}


def test_response_format_becomes_an_instruction() -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    request = translate(
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
    )
    assert request["system"].startswith("Be brief.\n\nRespond with a single JSON object")
    assert json.dumps(schema) in request["system"]
    assert "system" not in translate(response_format={"type": "text"})


def test_reasoning_effort_enables_thinking_within_limits() -> None:
    request = translate(reasoning_effort="medium", max_tokens=10000, temperature=0.2, top_p=0.5)
    assert request["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert "temperature" not in request
    assert "top_p" not in request
    assert translate(reasoning_effort="high", max_tokens=5000)["thinking"]["budget_tokens"] == 4999
    assert "thinking" not in translate(reasoning_effort="low", max_tokens=500)
    assert "thinking" not in translate(reasoning_effort="none")
    explicit = {"type": "enabled", "budget_tokens": 2000}
    assert translate(thinking=explicit, reasoning_effort="high")["thinking"] == explicit


def test_consecutive_user_messages_merge_and_empty_ones_vanish() -> None:
    request = translate(
        messages=[
            {"role": "user", "content": "a"},
            {"role": "user", "content": ""},
            {"role": "user", "content": [{"type": "text", "text": "b"}]},
        ]
    )
    assert request["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    ]


@pytest.mark.parametrize(
    ("messages", "where"),
    [
        (None, "messages"),
        ([], "messages"),
        (["x"], r"messages\[0\]"),
        ([{"role": "function", "content": "x"}], r"messages\[0\]\.role"),
        ([{"role": "tool", "content": "x"}], r"messages\[0\]\.tool_call_id"),
        ([{"role": "user", "content": 5}], r"messages\[0\]\.content"),
    ],
)
def test_malformed_messages(messages: Any, where: str) -> None:
    with pytest.raises(TranslationError, match=f"^{where}"):
        to_messages_request({"model": "m", "messages": messages})


# -- responses ---------------------------------------------------------------------------


def anthropic_message(**overrides: Any) -> dict[str, Any]:
    message = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "Hello!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 3},
    }
    return {**message, **overrides}


def test_text_response() -> None:
    completion = to_chat_completion(anthropic_message(), created=123)
    assert completion == {
        "id": "msg_01",
        "object": "chat.completion",
        "created": 123,
        "model": "claude-sonnet-4-5",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello!", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": 3,
            "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 0, "cache_creation_tokens": 0},
        },
    }
    ChatCompletion.model_validate(completion)


def test_tool_use_response() -> None:
    content = [
        {"type": "thinking", "thinking": "Need weather.", "signature": "sig"},
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
    ]
    completion = to_chat_completion(
        anthropic_message(content=content, stop_reason="tool_use"), model="anthropic:claude"
    )
    choice = ChatCompletion.model_validate(completion).choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    assert completion["choices"][0]["message"]["reasoning_content"] == "Need weather."
    assert completion["choices"][0]["message"]["thinking_blocks"] == [
        {"type": "thinking", "thinking": "Need weather.", "signature": "sig"}
    ]
    # The model as the provider named it, as a passed-through answer reports it.
    assert completion["model"] == "claude-sonnet-4-5"
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert (call.id, call.function.name) == ("toolu_1", "get_weather")  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]


def test_tool_only_response_has_null_content() -> None:
    content = [{"type": "tool_use", "id": "t", "name": "now", "input": {}}]
    message = to_chat_completion(anthropic_message(content=content, stop_reason="tool_use"))
    assert message["choices"][0]["message"]["content"] is None
    assert message["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == "{}"


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        (None, "stop"),
        ("something_new", "stop"),
    ],
)
def test_finish_reasons(stop: str | None, finish: str) -> None:
    assert finish_reason(stop) == finish


def test_usage_counts_cache_tokens_as_prompt_tokens() -> None:
    usage = {
        "input_tokens": 10,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 50,
        "output_tokens": 7,
    }
    assert chat_usage(usage) == {
        "prompt_tokens": 160,
        "completion_tokens": 7,
        "total_tokens": 167,
        "prompt_tokens_details": {"cached_tokens": 100, "cache_creation_tokens": 50},
    }


# -- streams -----------------------------------------------------------------------------

TEXT_AND_TOOL_EVENTS: list[dict[str, Any]] = [
    {
        "type": "message_start",
        "message": {
            "id": "msg_s",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 20, "cache_read_input_tokens": 5, "output_tokens": 1},
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " check."}},
    {"type": "content_block_stop", "index": 0},
    {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": ""},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": '{"city":'},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'},
    },
    {"type": "content_block_stop", "index": 1},
    {
        "type": "content_block_start",
        "index": 2,
        "content_block": {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
    },
    {
        "type": "content_block_delta",
        "index": 2,
        "delta": {"type": "input_json_delta", "partial_json": "{}"},
    },
    {"type": "content_block_stop", "index": 2},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 30},
    },
    {"type": "message_stop"},
]


def run(
    events: list[dict[str, Any]], **options: Any
) -> tuple[ChatStreamTranslator, list[dict[str, Any]]]:
    translator = ChatStreamTranslator(created=1, **options)
    chunks = [chunk for event in events for chunk in translator.feed(event)]
    return translator, chunks


def test_stream_chunks_in_order() -> None:
    translator, chunks = run(TEXT_AND_TOOL_EVENTS)
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "Let me"},
        {"content": " check."},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]},
        {},
    ]
    assert [chunk["choices"][0]["finish_reason"] for chunk in chunks][-1] == "tool_calls"
    assert all(chunk["id"] == "msg_s" and chunk["model"] == "claude-sonnet-4-5" for chunk in chunks)
    assert all("usage" not in chunk for chunk in chunks)
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    assert translator.done
    assert translator.finish_reason == "tool_calls"
    assert translator.usage == chat_usage(
        {"input_tokens": 20, "cache_read_input_tokens": 5, "output_tokens": 30}
    )


def test_stream_usage_chunk_when_asked() -> None:
    _, chunks = run(TEXT_AND_TOOL_EVENTS, include_usage=True, model="anthropic:claude")
    *body, last = chunks
    assert all(chunk["usage"] is None for chunk in body)
    assert last["choices"] == []
    assert last["usage"]["prompt_tokens"] == 25
    assert last["usage"]["completion_tokens"] == 30
    assert last["usage"]["total_tokens"] == 55
    assert all(chunk["model"] == "claude-sonnet-4-5" for chunk in chunks)
    ChatCompletionChunk.model_validate(last)


def test_stream_thinking_becomes_reasoning_content() -> None:
    events = [
        TEXT_AND_TOOL_EVENTS[0],
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": ""},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "Hmm"},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": "s"},
        },
        {"type": "content_block_stop", "index": 0},
    ]
    _, chunks = run(events)
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"reasoning_content": "Hmm"},
        {
            "thinking_blocks": [
                {"index": 0, "type": "thinking", "thinking": "Hmm", "signature": "s"}
            ]
        },
    ]


def test_stream_error_event_becomes_an_openai_error_chunk() -> None:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    translator, chunks = run([TEXT_AND_TOOL_EVENTS[0], error])
    assert chunks[-1] == {
        "error": {"message": "Overloaded", "type": "overloaded_error", "param": None, "code": None}
    }
    assert translator.error == chunks[-1]["error"]
    assert not translator.done


def test_stream_cut_short_still_knows_the_usage_so_far() -> None:
    translator, _ = run(TEXT_AND_TOOL_EVENTS[:5])
    assert not translator.done
    assert translator.finish_reason is None
    assert translator.usage is not None
    assert translator.usage["prompt_tokens"] == 25
    assert translator.usage["completion_tokens"] == 1


def test_newer_message_delta_usage_replaces_input_counts() -> None:
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": "max_tokens"},
        "usage": {"input_tokens": 21, "output_tokens": 9, "cache_read_input_tokens": 5},
    }
    translator, chunks = run([TEXT_AND_TOOL_EVENTS[0], delta])
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert translator.usage is not None
    assert translator.usage["prompt_tokens"] == 26


def test_unknown_events_are_ignored() -> None:
    _, chunks = run(
        [
            TEXT_AND_TOOL_EVENTS[0],
            {"type": "future_event"},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "citations_delta"}},
        ]
    )
    assert len(chunks) == 1


# -- tool calls without arguments, thinking blocks through a tool loop (issues 12, 18) ---------


def _arguments_by_call(chunks: list[dict[str, Any]]) -> dict[int, str]:
    arguments: dict[int, str] = {}
    for chunk in chunks:
        for call in chunk["choices"][0]["delta"].get("tool_calls") or ():
            arguments[call["index"]] = (
                arguments.get(call["index"], "") + call["function"]["arguments"]
            )
    return arguments


@pytest.mark.parametrize("deltas", [[], [""], ["", ""]])
def test_stream_tool_call_without_arguments_ends_as_empty_object(deltas: list[str]) -> None:
    events = [
        TEXT_AND_TOOL_EVENTS[0],
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "toolu_9", "name": "now", "input": {}},
        },
        *[
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": part},
            }
            for part in deltas
        ],
        {"type": "content_block_stop", "index": 0},
    ]
    _, chunks = run(events)
    assert _arguments_by_call(chunks) == {0: "{}"}
    json_answer = to_chat_completion(
        anthropic_message(
            content=[{"type": "tool_use", "id": "toolu_9", "name": "now", "input": {}}]
        )
    )
    assert json_answer["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == "{}"


def test_stream_redacted_thinking_comes_whole_and_in_order() -> None:
    events = [
        TEXT_AND_TOOL_EVENTS[0],
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "A"},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "B"},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": "sig-1"},
        },
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "redacted_thinking", "data": "opaque=="},
        },
        {"type": "content_block_stop", "index": 1},
    ]
    _, chunks = run(events)
    assert [c["choices"][0]["delta"] for c in chunks[1:]] == [
        {"reasoning_content": "A"},
        {"reasoning_content": "B"},
        {
            "thinking_blocks": [
                {"index": 0, "type": "thinking", "thinking": "AB", "signature": "sig-1"}
            ]
        },
        {"thinking_blocks": [{"index": 1, "type": "redacted_thinking", "data": "opaque=="}]},
    ]


def test_thinking_blocks_go_back_unchanged_and_first() -> None:
    thinking = [
        {"type": "thinking", "thinking": "Need weather.", "signature": "sig"},
        {"type": "redacted_thinking", "data": "opaque=="},
    ]
    call = {
        "id": "toolu_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
    }
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "reasoning_content": "Need weather.",
            "thinking_blocks": thinking,
            "tool_calls": [call],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
    ]
    for fields in (
        {"thinking": {"type": "enabled", "budget_tokens": 2048}},
        {"reasoning_effort": "medium"},
    ):
        request = translate(messages=messages, tools=[WEATHER_TOOL], **fields)
        assert request["thinking"]["type"] == "enabled"
        assert request["messages"][1] == {
            "role": "assistant",
            "content": [
                *thinking,
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        }


def test_dropped_thinking_blocks_are_a_clear_400() -> None:
    call = {
        "id": "toolu_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
    }
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "Need weather.",
            "tool_calls": [call],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
    ]
    for fields in (
        {"thinking": {"type": "enabled", "budget_tokens": 2048}},
        {"reasoning_effort": "high"},
    ):
        with pytest.raises(TranslationError) as caught:
            translate(messages=messages, tools=[WEATHER_TOOL], **fields)
        assert str(caught.value) == (
            "messages: thinking is enabled, so the last assistant message with tool_calls must "
            "keep its thinking: send back its `thinking_blocks` (each with its `signature`, or "
            "`data` for redacted thinking) exactly as the answer gave them; through the "
            "Responses API, send back its reasoning items with their `encrypted_content` (ask "
            'for it with `include: ["reasoning.encrypted_content"]`)'
        )
    # Without thinking the same history is fine, and a finished tool loop needs nothing.
    assert (
        translate(messages=messages, tools=[WEATHER_TOOL])["messages"][1]["content"][0]["type"]
        == "tool_use"
    )
    done = [
        *messages,
        {"role": "assistant", "content": "Sunny."},
        {"role": "user", "content": "Thanks"},
    ]
    assert translate(messages=done, reasoning_effort="high")["thinking"]["type"] == "enabled"


@pytest.mark.parametrize(
    ("blocks", "where"),
    [
        ("nope", "messages[0].thinking_blocks: expected a list of thinking blocks"),
        (
            [{"type": "text", "text": "x"}],
            "messages[0].thinking_blocks[0]: expected a 'thinking' or 'redacted_thinking' block",
        ),
        (
            [{"type": "thinking", "thinking": "x"}],
            "messages[0].thinking_blocks[0].signature: expected a string",
        ),
        ([{"type": "redacted_thinking"}], "messages[0].thinking_blocks[0].data: expected a string"),
    ],
)
def test_malformed_thinking_blocks_name_their_place(blocks: Any, where: str) -> None:
    with pytest.raises(TranslationError) as caught:
        translate(messages=[{"role": "assistant", "content": "x", "thinking_blocks": blocks}])
    assert str(caught.value) == where


def test_streamed_thinking_entries_go_back_without_their_index() -> None:
    # What the openai SDK's stream helper accumulates: the entries keep their `index`.
    blocks = [
        {"index": 0, "type": "thinking", "thinking": "T", "signature": "s"},
        {"index": 1, "type": "redacted_thinking", "data": "d"},
    ]
    request = translate(
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "x", "thinking_blocks": blocks},
            {"role": "user", "content": "more"},
        ]
    )
    assert request["messages"][1]["content"][:2] == [
        {"type": "thinking", "thinking": "T", "signature": "s"},
        {"type": "redacted_thinking", "data": "d"},
    ]


def test_stream_tool_input_given_at_the_start_is_sent_once() -> None:
    start = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}},
    }
    stop = {"type": "content_block_stop", "index": 0}
    _, chunks = run([TEXT_AND_TOOL_EVENTS[0], start, stop])
    assert _arguments_by_call(chunks) == {0: '{"a":1}'}
    # Deltas, when they come, are the arguments: the start's input is not added to them.
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "input_json_delta", "partial_json": '{"a":1}'},
    }
    _, chunks = run([TEXT_AND_TOOL_EVENTS[0], start, delta, stop])
    assert _arguments_by_call(chunks) == {0: '{"a":1}'}

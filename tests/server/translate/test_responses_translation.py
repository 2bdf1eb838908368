"""The Responses <-> Chat Completions translation (pure), checked against the openai SDK's types.

Every response object and stream event produced here is validated with the SDK's own pydantic
models, so a missing or mistyped field fails the test rather than a client.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from otari_server.accounting.prices import Consumption
from otari_server.generation.responses import metered
from otari_server.translate import chat_via_messages as anthropic_wire
from otari_server.translate.chat_via_messages import ChatStreamTranslator, TranslationError
from otari_server.translate.chat_via_messages_request import to_messages_request
from otari_server.translate.responses_via_chat import (
    ResponseStreamTranslator,
    responses_usage,
    to_response,
)
from otari_server.translate.responses_via_chat_request import to_chat_request
from tests.support.fakes import DEFAULT_TEXT, ToolCall
from tests.support.fakes_responses import FakeOpenAIResponses, responses_prompt_tokens

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
PDF = "data:application/pdf;base64,QQ=="


def valid_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for event in events:
        EVENTS.validate_python(event)
    return events


def chunk(
    delta: dict[str, Any] | None = None,
    finish: str | None = None,
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "c", "object": "chat.completion.chunk", "choices": choices, "usage": usage}


# -- request -------------------------------------------------------------------------------


def test_request_fields_map_to_chat() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = {
        "model": "claude:claude-sonnet",
        "instructions": "be brief",
        "input": "hi",
        "max_output_tokens": 64,
        "temperature": 0.2,
        "top_p": 0.9,
        "user": "alice",
        "parallel_tool_calls": False,
        "reasoning": {"effort": "high"},
        "tools": [
            {
                "type": "function",
                "name": "f",
                "description": "does f",
                "parameters": schema,
                "strict": True,
            }
        ],
        "tool_choice": {"type": "function", "name": "f"},
        "text": {
            "format": {"type": "json_schema", "name": "out", "schema": schema, "strict": True}
        },
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "metadata": {"k": "v"},
        "truncation": "auto",
        "service_tier": "auto",
        "stream": True,
    }
    assert to_chat_request(body, model="claude-sonnet") == {
        "model": "claude-sonnet",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "max_completion_tokens": 64,
        "temperature": 0.2,
        "top_p": 0.9,
        "parallel_tool_calls": False,
        "user": "alice",
        "reasoning_effort": "high",
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "f",
                    "description": "does f",
                    "parameters": schema,
                    "strict": True,
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "out", "schema": schema, "strict": True},
        },
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_input_items_become_a_chat_conversation() -> None:
    items = [
        {"role": "developer", "content": "rules"},
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": "https://x/cat.png", "detail": "low"},
                {"type": "input_file", "filename": "a.pdf", "file_data": PDF},
            ],
        },
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {
            "type": "message",
            "role": "assistant",
            "id": "msg_1",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
        },
        {
            "type": "function_call",
            "id": "fc_1",
            "call_id": "call_1",
            "name": "f",
            "arguments": '{"a":1}',
        },
        {
            "type": "function_call",
            "id": "fc_2",
            "call_id": "call_2",
            "name": "g",
            "arguments": "{}",
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "one"},
        {
            "type": "function_call_output",
            "call_id": "call_2",
            "output": [{"type": "input_text", "text": "two"}],
        },
        {"role": "user", "content": [{"type": "input_text", "text": "thanks"}]},
    ]
    assert to_chat_request({"model": "m", "input": items})["messages"] == [
        {"role": "developer", "content": "rules"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "https://x/cat.png", "detail": "low"}},
                {"type": "file", "file": {"file_data": PDF, "filename": "a.pdf"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"a":1}'},
                },
                {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "one"},
        {"role": "tool", "tool_call_id": "call_2", "content": "two"},
        {"role": "user", "content": "thanks"},
    ]


def test_a_function_call_turn_reaches_anthropic_as_tool_use_and_tool_result() -> None:
    chat = to_chat_request(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "weather?"},
                {
                    "type": "function_call",
                    "call_id": "toolu_1",
                    "name": "weather",
                    "arguments": '{"city":"Paris"}',
                },
                {"type": "function_call_output", "call_id": "toolu_1", "output": "sunny"},
            ],
        }
    )
    request = to_messages_request(chat, model="claude-sonnet")
    assert request["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}],
        },
    ]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"background": True}, "background"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "item references"),
        ({"input": [{"type": "web_search_call", "id": "x"}]}, "'web_search_call' items"),
        ({"input": [{"role": "tool", "content": "x"}]}, "'tool' is not supported"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "file ids",
        ),
        (
            {
                "input": [
                    {
                        "role": "system",
                        "content": [{"type": "input_image", "image_url": "https://x/y.png"}],
                    }
                ]
            },
            "text only",
        ),
        ({"input": [{"type": "function_call", "name": "f"}]}, "call_id"),
        ({"tools": [{"type": "web_search"}]}, "'web_search' tools"),
        (
            {"tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "file_search"}},
            "'file_search'",
        ),
        ({"text": {"format": {"type": "grammar"}}}, "'grammar'"),
        ({"input": ""}, "input"),
    ],
)
def test_what_a_chat_call_cannot_express_is_refused(body: dict[str, Any], problem: str) -> None:
    with pytest.raises(TranslationError) as info:
        to_chat_request({"model": "m", "input": "hi", **body})
    assert problem in str(info.value)


# -- response ------------------------------------------------------------------------------


def completion(
    message: dict[str, Any], finish: str = "stop", usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage or {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }


def test_a_completion_becomes_a_valid_response() -> None:
    request = {
        "model": "claude:c",
        "input": "hi",
        "instructions": "be brief",
        "max_output_tokens": 50,
        "user": "alice",
        "tool_choice": "auto",
        "tools": [{"type": "function", "name": "f", "parameters": {}}],
        "metadata": {"k": "v"},
        "temperature": 0.5,
    }
    answer = to_response(
        completion(
            {
                "role": "assistant",
                "content": "Calling f.",
                "reasoning_content": "I should call f",
                "tool_calls": [
                    {
                        "id": "toolu_9",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"x":1}'},
                    }
                ],
            },
            "tool_calls",
        ),
        request,
        model="claude:c",
    )
    parsed = Response.model_validate(answer)
    assert parsed.status == "completed" and parsed.output_text == "Calling f."
    reasoning, message, call = parsed.output
    assert reasoning.type == "reasoning" and reasoning.content is not None
    assert reasoning.content[0].text == "I should call f"
    assert message.type == "message" and message.status == "completed"
    assert call.type == "function_call" and call.call_id == "toolu_9"
    assert (call.name, call.arguments) == ("f", '{"x":1}')
    assert parsed.model == "m" and parsed.instructions == "be brief"  # as the provider named it
    assert parsed.max_output_tokens == 50 and parsed.user == "alice"
    assert parsed.metadata == {"k": "v"} and parsed.temperature == 0.5
    assert parsed.tools[0].type == "function" and parsed.store is False
    assert parsed.usage is not None and parsed.usage.total_tokens == 10


def test_a_length_finish_makes_an_incomplete_response() -> None:
    answer = to_response(
        completion({"role": "assistant", "content": "Hel"}, "length"), {"model": "m", "input": "x"}
    )
    parsed = Response.model_validate(answer)
    assert parsed.status == "incomplete" and parsed.completed_at is None
    assert parsed.incomplete_details is not None
    assert parsed.incomplete_details.reason == "max_output_tokens"
    assert parsed.output[0].status == "incomplete"  # type: ignore[union-attr]


def test_a_refusal_is_a_refusal_part() -> None:
    answer = to_response(
        completion({"role": "assistant", "content": None, "refusal": "I can't help with that"}),
        {"model": "m", "input": "x"},
    )
    [message] = Response.model_validate(answer).output
    assert message.type == "message"
    assert message.content[0].type == "refusal"


def test_usage_keeps_cache_reads_writes_and_reasoning() -> None:
    usage = anthropic_wire.chat_usage(
        {
            "input_tokens": 5,
            "cache_read_input_tokens": 30,
            "cache_creation_input_tokens": 10,
            "output_tokens": 4,
        }
    )
    usage["completion_tokens_details"] = {"reasoning_tokens": 2}
    assert responses_usage(usage) == {
        "input_tokens": 45,
        "input_tokens_details": {"cached_tokens": 30, "cache_write_tokens": 10},
        "output_tokens": 4,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 49,
    }
    assert responses_usage(None) is None


def test_responses_usage_is_metered_with_cache_reads_and_writes() -> None:
    usage = {
        "input_tokens": 100,
        "output_tokens": 9,
        "total_tokens": 109,
        "input_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 30},
    }
    assert metered(usage) == Consumption(
        prompt_tokens=100, completion_tokens=9, cache_read_tokens=60, cache_write_tokens=30
    )
    assert metered(None) == Consumption()


# -- stream --------------------------------------------------------------------------------


def test_stream_events_are_valid_and_end_in_the_final_response() -> None:
    translator = ResponseStreamTranslator(
        {"model": "claude:c", "input": "x"}, model="claude:c", response_id="resp_1"
    )
    chunks = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "hmm"}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "f", "arguments": ""},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
        chunk({}, "tool_calls"),
        chunk(usage={"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}),
    ]
    events = valid_events([e for c in chunks for e in translator.feed(c)] + translator.finish())
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["output_index"] for e in events if e["type"] == "response.output_item.added"] == [
        0,
        1,
        2,
    ]
    final = Response.model_validate(events[-1]["response"])
    assert final.id == "resp_1" and final.output_text == "Hello"
    assert final.output[2].type == "function_call"
    assert final.output[2].arguments == '{"a":1}'
    assert final.usage is not None and final.usage.input_tokens == 3
    # Every item's done event carries the item as the final response holds it.
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert done == events[-1]["response"]["output"]
    assert translator.feed(chunk({"content": "late"})) == [] and translator.finish() == []


def test_stream_errors_fail_the_response() -> None:
    translator = ResponseStreamTranslator({"model": "m", "input": "x"}, model="m")
    events = translator.feed(chunk({"content": "Hi"}))
    events += translator.feed({"error": {"message": "Overloaded", "type": "overloaded_error"}})
    valid_events(events)
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    assert events[-1]["response"]["error"] == {"code": "server_error", "message": "Overloaded"}
    assert translator.error == {"code": "server_error", "message": "Overloaded"}
    assert translator.finish() == [] and translator.fail("again") == []


def test_stream_of_an_empty_answer_still_completes() -> None:
    translator = ResponseStreamTranslator({"model": "m", "input": "x"}, model="m")
    events = valid_events(translator.finish())
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.completed",
    ]
    assert events[-1]["response"]["usage"] is None


def test_anthropic_events_through_both_translators() -> None:
    """Anthropic stream events -> chat chunks -> Responses events, as the gateway chains them."""
    anthropic_events = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet",
                "content": [],
                "stop_reason": None,
                "usage": {"input_tokens": 12, "output_tokens": 1},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "max_tokens"},
            "usage": {"output_tokens": 1},
        },
        {"type": "message_stop"},
    ]
    chunks = ChatStreamTranslator(model="claude:c", include_usage=True)
    translator = ResponseStreamTranslator({"model": "claude:c", "input": "x"}, model="claude:c")
    events = [e for a in anthropic_events for c in chunks.feed(a) for e in translator.feed(c)]
    events = valid_events(events + translator.finish())
    final = events[-1]
    assert final["type"] == "response.incomplete"
    assert final["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["response"]["usage"]["input_tokens"] == 12
    assert final["response"]["output"][0]["status"] == "incomplete"


# -- the fake is faithful to the SDK's types ------------------------------------------------


def test_fake_answers_parse_as_sdk_types() -> None:
    with FakeOpenAIResponses() as fake, httpx.Client(base_url=fake.base_url) as http:
        fake.push(tool_calls=(ToolCall("f", {"a": 1}),), text="Sure.")
        body = {
            "model": "gpt-4o-mini",
            "input": [{"role": "user", "content": "hi you"}],
            "instructions": "be nice",
        }
        answer = Response.model_validate(http.post("/responses", json=body).json())
        assert answer.output_text == "Sure." and answer.output[1].type == "function_call"
        assert answer.usage is not None and answer.usage.input_tokens == 4
        assert responses_prompt_tokens(body) == 4
        with http.stream("POST", "/responses", json={**body, "stream": True}) as response:
            lines = [line for line in response.iter_lines() if line]
        names = [line.removeprefix("event: ") for line in lines[::2]]
        events = valid_events([json.loads(line.removeprefix("data: ")) for line in lines[1::2]])
        assert names == [e["type"] for e in events]
        assert Response.model_validate(events[-1]["response"]).output_text == DEFAULT_TEXT


# -- reasoning with its signature, parallel calls, calls without arguments (issues 12, 18) ----

THINKING = {"type": "thinking", "thinking": "Need f.", "signature": "sig-1"}
REDACTED = {"type": "redacted_thinking", "data": "opaque=="}
ENCRYPTED = {"include": ["reasoning.encrypted_content"]}


def test_reasoning_items_carry_the_signed_thinking_when_asked() -> None:
    reply = {
        "role": "assistant",
        "content": None,
        "reasoning_content": "Need f.",
        "thinking_blocks": [THINKING, REDACTED],
        "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    }
    asked = to_response(completion(reply, "tool_calls"), {"model": "m", "input": "x", **ENCRYPTED})
    first, second, call = Response.model_validate(asked).output
    assert first.type == "reasoning" and first.content is not None
    assert first.content[0].text == "Need f." and first.encrypted_content is not None
    assert second.type == "reasoning" and second.content == []
    assert call.type == "function_call"
    # Turn 2: the items go back as input and reach Anthropic as the blocks they were.
    items = [
        {"role": "user", "content": "go"},
        {
            "type": "reasoning",
            "id": first.id,
            "summary": [],
            "encrypted_content": first.encrypted_content,
        },
        {
            "type": "reasoning",
            "id": second.id,
            "summary": [],
            "encrypted_content": second.encrypted_content,
        },
        {"type": "function_call", "call_id": "toolu_1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "toolu_1", "output": "done"},
    ]
    chat = to_chat_request({"model": "m", "input": items, "reasoning": {"effort": "high"}})
    assert chat["messages"][1]["thinking_blocks"] == [THINKING, REDACTED]
    outgoing = to_messages_request(chat, model="claude")
    assert outgoing["messages"][1]["content"] == [
        THINKING,
        REDACTED,
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
    ]
    # Not asked: the text only, and no redacted item (nothing in it a client could use).
    plain = to_response(completion(reply, "tool_calls"), {"model": "m", "input": "x"})
    assert [item["type"] for item in plain["output"]] == ["reasoning", "function_call"]
    assert "encrypted_content" not in plain["output"][0]


def test_foreign_or_missing_encrypted_reasoning_is_left_out_and_thinking_asks_for_it() -> None:
    items = [
        {"role": "user", "content": "go"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA=="},
        {"type": "function_call", "call_id": "toolu_1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "toolu_1", "output": "done"},
    ]
    chat = to_chat_request({"model": "m", "input": items, "reasoning": {"effort": "high"}})
    assert "thinking_blocks" not in chat["messages"][1]
    with pytest.raises(TranslationError, match="must keep its thinking"):
        to_messages_request(chat, model="claude")


def sdk_state(events: list[dict[str, Any]]) -> Any:
    """Feed events to the openai SDK's own stream accumulator; return its final response."""
    from openai._types import omit
    from openai.lib.streaming.responses._responses import ResponseStreamState

    state: Any = ResponseStreamState(input_tools=omit, text_format=omit)
    for event in events:
        state.handle_event(EVENTS.validate_python(event))
    return state


def test_stream_reasoning_items_and_calls_without_arguments() -> None:
    anthropic_events = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet",
                "content": [],
                "stop_reason": None,
                "usage": {"input_tokens": 12, "output_tokens": 1},
            },
        },
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "Need f."},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": "sig-1"},
        },
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": REDACTED},
        {"type": "content_block_stop", "index": 1},
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
        },
        {"type": "content_block_stop", "index": 2},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 5},
        },
        {"type": "message_stop"},
    ]
    for request in (
        {"model": "claude:c", "input": "x", **ENCRYPTED},
        {"model": "claude:c", "input": "x"},
    ):
        chunks = ChatStreamTranslator(model="claude:c", include_usage=True)
        translator = ResponseStreamTranslator(request, model="claude:c")
        events = [e for a in anthropic_events for c in chunks.feed(a) for e in translator.feed(c)]
        events = valid_events(events + translator.finish())
        final = events[-1]["response"]
        assert final["model"] == "claude-sonnet"
        done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
        assert done == final["output"]
        calls = [item for item in final["output"] if item["type"] == "function_call"]
        assert [(c["name"], c["arguments"]) for c in calls] == [("f", "{}")]
        response = sdk_state(events)._completed_response
        assert [item.type for item in response.output] == [item["type"] for item in final["output"]]
        if "include" in request:
            assert [item["type"] for item in final["output"]] == [
                "reasoning",
                "reasoning",
                "function_call",
            ]
            from otari_server.translate.responses_via_chat_request import decrypt_thinking

            assert [
                decrypt_thinking(item["encrypted_content"]) for item in final["output"][:2]
            ] == [THINKING, REDACTED]
        else:
            assert [item["type"] for item in final["output"]] == ["reasoning", "function_call"]
            assert "encrypted_content" not in final["output"][0]


def test_stream_interleaved_calls_keep_each_item_whole() -> None:
    def head(index: int, name: str) -> dict[str, Any]:
        return {
            "index": index,
            "id": f"call_{index}",
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }

    def part(index: int, text: str) -> dict[str, Any]:
        return {"index": index, "function": {"arguments": text}}

    translator = ResponseStreamTranslator({"model": "m", "input": "x"}, model="m")
    chunks = [
        chunk({"tool_calls": [head(0, "a"), head(1, "b")]}),
        chunk({"tool_calls": [part(1, '{"y":')]}),
        chunk({"tool_calls": [part(0, '{"x":')]}),
        chunk({"tool_calls": [part(1, "2}")]}),
        chunk({"tool_calls": [part(0, "1}")]}),
        chunk({}, "tool_calls"),
    ]
    events = valid_events([e for c in chunks for e in translator.feed(c)] + translator.finish())
    open_item = None
    for event in events:
        if event["type"] == "response.output_item.added":
            assert open_item is None
            open_item = event["output_index"]
        elif "output_index" in event and event["type"] != "response.output_item.done":
            assert event["output_index"] == open_item
        elif event["type"] == "response.output_item.done":
            assert event["output_index"] == open_item
            open_item = None
    final = sdk_state(events)._completed_response
    assert [(item.name, item.arguments) for item in final.output] == [
        ("a", '{"x":1}'),
        ("b", '{"y":2}'),
    ]


@pytest.mark.parametrize(
    "fields", [{"include": ["message.output_text.logprobs"]}, {"top_logprobs": 2}]
)
def test_logprobs_asked_through_responses_are_refused_by_anthropic(fields: dict[str, Any]) -> None:
    chat = to_chat_request({"model": "m", "input": "x", **fields})
    assert chat["logprobs"] is True
    with pytest.raises(TranslationError) as refused:
        to_messages_request(chat, model="claude")
    assert str(refused.value) == (
        "logprobs: unsupported, anthropic providers do not return log probabilities"
    )

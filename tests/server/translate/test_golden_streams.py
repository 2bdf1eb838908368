"""Every translation direction against provider streams written by hand (tests/support/golden/).

Each golden file is a provider stream in its provider's documented format, parsed here in small
pieces as the gateway reads it. The translated output is validated with the official SDKs' own
types and folded with the SDKs' own stream accumulators, so what is asserted is what a client
of the SDK ends up with:

- Anthropic Messages -> OpenAI chat chunks (ChatCompletionChunk, ChatCompletionStreamState);
- Anthropic Messages -> chat -> Responses events (ResponseStreamEvent, ResponseStreamState);
- OpenAI chat -> Anthropic Messages events (RawMessageStreamEvent, accumulate_event);
- OpenAI chat -> Responses events (the Responses translator on its own).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import ErrorResponse, RawMessageStreamEvent
from openai._types import omit
from openai.lib.streaming.chat._completions import ChatCompletionStreamState
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from otari_server.translate.chat_via_messages import ChatStreamTranslator
from otari_server.translate.messages_via_chat import MessageStreamTranslator
from otari_server.translate.responses_via_chat import ResponseStreamTranslator
from otari_server.translate.responses_via_chat_request import decrypt_thinking
from otari_server.translate.sse import SSEParser

GOLDEN = Path(__file__).resolve().parents[2] / "support" / "golden"
ANTHROPIC_EVENT: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
RESPONSES_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds/golden=="
REDACTED = "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP/golden="
THOUGHT = "The user wants the weather in Paris and the time; both tools at once."


def golden(name: str, piece: int = 5) -> list[Any]:
    """The decoded events of a golden stream, fed to the parser `piece` bytes at a time;
    OpenAI's [DONE] comes back as the string "[DONE]"."""
    raw = (GOLDEN / name).read_bytes()
    parser = SSEParser()
    events = [e for i in range(0, len(raw), piece) for e in parser.feed(raw[i : i + piece])]
    events += parser.close()
    return [event.data if event.done else event.json() for event in events]


def anthropic_to_chat(name: str, **options: Any) -> tuple[ChatStreamTranslator, list[Any]]:
    translator = ChatStreamTranslator(model="claude:alias", created=1, **options)
    chunks = [chunk for event in golden(name) for chunk in translator.feed(event)]
    return translator, chunks


def chat_to_anthropic(name: str) -> tuple[MessageStreamTranslator, list[dict[str, Any]]]:
    translator = MessageStreamTranslator(model="fake:alias", input_tokens=7)
    events: list[dict[str, Any]] = []
    for chunk in golden(name):
        events += translator.finish() if chunk == "[DONE]" else translator.feed(chunk)
    return translator, events + translator.finish()


def valid_anthropic(events: list[dict[str, Any]]) -> None:
    for event in events:
        if event["type"] == "error":
            ErrorResponse.model_validate(event)
        elif event["type"] != "ping":  # the SDK's event union leaves out ping
            ANTHROPIC_EVENT.validate_python(event)


def sdk_message(events: list[dict[str, Any]]) -> tuple[Any, list[tuple[str, Any]]]:
    """The anthropic SDK's final message, and each tool_use block's input at its stop."""
    snapshot, buffers, at_stop = None, {}, []  # type: ignore[var-annotated]
    for event in events:
        if event["type"] in ("ping", "error"):
            continue
        snapshot = accumulate_event(
            event=ANTHROPIC_EVENT.validate_python(event),
            current_snapshot=snapshot,
            json_bufs=buffers,
        )
        if event["type"] == "content_block_stop":
            block = snapshot.content[event["index"]]
            if block.type == "tool_use":
                at_stop.append((block.name, block.input))
    return snapshot, at_stop


def well_nested_anthropic(events: list[dict[str, Any]]) -> None:
    """One block open at a time; every delta between its block's start and stop."""
    open_block, started = None, []
    for event in events:
        if event["type"] == "content_block_start":
            assert open_block is None and event["index"] == len(started)
            open_block = event["index"]
            started.append(open_block)
        elif event["type"] == "content_block_delta":
            assert event["index"] == open_block
        elif event["type"] == "content_block_stop":
            assert event["index"] == open_block
            open_block = None
    assert open_block is None or events[-1]["type"] == "error"


def sdk_completion(chunks: list[dict[str, Any]]) -> Any:
    state: Any = ChatCompletionStreamState(input_tools=omit, response_format=omit)
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    return state.get_final_completion()


def to_responses(chunks: list[dict[str, Any]], request: dict[str, Any]) -> list[dict[str, Any]]:
    translator = ResponseStreamTranslator(
        request, model="alias", response_id="resp_g", created_at=1
    )
    events = [e for chunk in chunks if chunk != "[DONE]" for e in translator.feed(chunk)]
    events += translator.finish()
    for event in events:
        RESPONSES_EVENT.validate_python(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


def sdk_response(events: list[dict[str, Any]]) -> Any:
    state: Any = ResponseStreamState(input_tools=omit, text_format=omit)
    for event in events:
        state.handle_event(RESPONSES_EVENT.validate_python(event))
    return state._completed_response


def well_nested_responses(events: list[dict[str, Any]]) -> None:
    open_item = None
    for event in events:
        if event["type"] == "response.output_item.added":
            assert open_item is None
            open_item = event["output_index"]
        elif event["type"] == "response.output_item.done":
            assert event["output_index"] == open_item
            open_item = None
        elif "output_index" in event:
            assert event["output_index"] == open_item


# -- Anthropic -> chat -------------------------------------------------------------------------


def test_anthropic_thinking_and_parallel_tools_to_chat() -> None:
    translator, chunks = anthropic_to_chat(
        "anthropic_thinking_parallel_tools.sse", include_usage=True
    )
    completion = sdk_completion(chunks)
    assert completion.id == "msg_01GoldenThinking"
    assert completion.model == "claude-sonnet-4-5-20250929"
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "I'll check both."
    assert [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls] == [
        ("toolu_01Weather", "get_weather", '{"city": "Paris"}'),
        ("toolu_01Time", "get_time", "{}"),
    ]  # no arguments: "{}", never ""
    # The SDK's own accumulator merges the entries by their index into the full list.
    assert choice.message.model_extra["thinking_blocks"] == [
        {"index": 0, "type": "thinking", "thinking": THOUGHT, "signature": SIGNATURE},
        {"index": 1, "type": "redacted_thinking", "data": REDACTED},
    ]
    reasoning = "".join(
        chunk["choices"][0]["delta"].get("reasoning_content", "")
        for chunk in chunks
        if chunk["choices"]
    )
    assert reasoning == THOUGHT
    # The usage-only last chunk, cache reads and writes counted as prompt tokens.
    assert chunks[-1]["choices"] == []
    assert completion.usage.model_dump(exclude_none=True) == {
        "prompt_tokens": 472 + 1024 + 2048,
        "completion_tokens": 89,
        "total_tokens": 472 + 1024 + 2048 + 89,
        "prompt_tokens_details": {"cached_tokens": 2048, "cache_creation_tokens": 1024},
    }
    assert translator.done and translator.error is None


def test_anthropic_error_event_to_chat() -> None:
    translator, chunks = anthropic_to_chat("anthropic_error.sse")
    *body, last = chunks
    for chunk in body:
        ChatCompletionChunk.model_validate(chunk)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in body) == "Once upon"
    assert last == {
        "error": {"message": "Overloaded", "type": "overloaded_error", "param": None, "code": None}
    }
    assert translator.error == last["error"] and not translator.done
    assert translator.usage is not None and translator.usage["prompt_tokens"] == 12


# -- Anthropic -> chat -> Responses ------------------------------------------------------------


@pytest.mark.parametrize("encrypted", [True, False])
def test_anthropic_thinking_and_parallel_tools_to_responses(encrypted: bool) -> None:
    _, chunks = anthropic_to_chat("anthropic_thinking_parallel_tools.sse", include_usage=True)
    request: dict[str, Any] = {"model": "claude:alias", "input": "x"}
    if encrypted:
        request["include"] = ["reasoning.encrypted_content"]
    events = to_responses(chunks, request)
    well_nested_responses(events)
    response = sdk_response(events)
    assert response.model == "claude-sonnet-4-5-20250929" and response.status == "completed"
    kinds = [item.type for item in response.output]
    calls = [(i.call_id, i.name, i.arguments) for i in response.output if i.type == "function_call"]
    assert calls == [
        ("toolu_01Weather", "get_weather", '{"city": "Paris"}'),
        ("toolu_01Time", "get_time", "{}"),
    ]
    assert response.output_text == "I'll check both."
    reasoning = [item for item in response.output if item.type == "reasoning"]
    assert reasoning[0].content[0].text == THOUGHT
    if encrypted:
        assert kinds == ["reasoning", "reasoning", "message", "function_call", "function_call"]
        assert [decrypt_thinking(item.encrypted_content) for item in reasoning] == [
            {"type": "thinking", "thinking": THOUGHT, "signature": SIGNATURE},
            {"type": "redacted_thinking", "data": REDACTED},
        ]
    else:
        assert kinds == ["reasoning", "message", "function_call", "function_call"]
        assert reasoning[0].encrypted_content is None
    assert response.usage.input_tokens == 3544 and response.usage.output_tokens == 89
    assert response.usage.input_tokens_details.cached_tokens == 2048


def test_anthropic_error_event_to_responses() -> None:
    _, chunks = anthropic_to_chat("anthropic_error.sse")
    translator = ResponseStreamTranslator({"model": "m", "input": "x"}, model="m")
    events = [e for chunk in chunks for e in translator.feed(chunk)]
    for event in events:
        RESPONSES_EVENT.validate_python(event)
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-1]["response"]["error"] == {"code": "server_error", "message": "Overloaded"}


# -- OpenAI chat -> Anthropic ------------------------------------------------------------------


def test_openai_text_with_usage_only_chunk_to_anthropic() -> None:
    _, events = chat_to_anthropic("openai_chat_text_usage.sse")
    valid_anthropic(events)
    well_nested_anthropic(events)
    message, _ = sdk_message(events)
    assert message.id.startswith("msg_") and message.model == "gpt-4o-mini-2024-07-18"
    assert [block.text for block in message.content] == ["Hello there!"]
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    # message_start holds the estimate; the final counts are the provider's.
    assert events[0]["message"]["usage"] == {"input_tokens": 7, "output_tokens": 0}
    assert message.usage.input_tokens == 512 and message.usage.output_tokens == 3
    assert message.usage.cache_read_input_tokens == 1024
    assert [e["type"] for e in events].count("message_stop") == 1


def test_openai_interleaved_parallel_tools_to_anthropic() -> None:
    _, events = chat_to_anthropic("openai_chat_parallel_tools_interleaved.sse")
    valid_anthropic(events)
    well_nested_anthropic(events)
    message, at_stop = sdk_message(events)
    assert at_stop == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"zone": "CET"}),
        ("noop", {}),
    ]
    assert [(b.id, b.input) for b in message.content] == [
        ("call_Weather", {"city": "Paris"}),
        ("call_Time", {"zone": "CET"}),
        ("call_Noop", {}),
    ]
    assert message.stop_reason == "tool_use" and message.model == "qwen2.5-72b-instruct"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (210, 31)


def test_openai_matched_stop_string_to_anthropic() -> None:
    _, events = chat_to_anthropic("openai_chat_vllm_stop_string.sse")
    valid_anthropic(events)
    well_nested_anthropic(events)
    message, _ = sdk_message(events)
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "three")
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "Count up." and message.content[1].text == "one two"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (9, 5)


def test_openai_error_chunk_to_anthropic() -> None:
    translator, events = chat_to_anthropic("openai_chat_error.sse")
    valid_anthropic(events)
    assert events[-1] == {
        "type": "error",
        "error": {
            "type": "api_error",
            "message": "The server had an error while processing your request.",
        },
    }
    assert translator.done and translator.error == events[-1]["error"]
    assert "message_stop" not in [e["type"] for e in events]


# -- OpenAI chat -> Responses (the translator on its own) --------------------------------------


def test_openai_interleaved_parallel_tools_to_responses() -> None:
    events = to_responses(
        golden("openai_chat_parallel_tools_interleaved.sse"), {"model": "m", "input": "x"}
    )
    well_nested_responses(events)
    response = sdk_response(events)
    assert [(i.name, json.loads(i.arguments)) for i in response.output] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"zone": "CET"}),
        ("noop", {}),
    ]
    assert response.model == "qwen2.5-72b-instruct"
    assert response.usage.input_tokens == 210


def test_openai_text_to_responses() -> None:
    response = sdk_response(
        to_responses(golden("openai_chat_text_usage.sse"), {"model": "m", "input": "x"})
    )
    assert response.output_text == "Hello there!"
    assert response.usage.input_tokens_details.cached_tokens == 1024

"""OpenAI chat clients in front of an Anthropic Messages provider: the response and the stream.

The request side is `chat_via_messages_request`. Follows the Messages API
(https://docs.anthropic.com/en/api/messages) and its streaming events on one side, Chat
Completions (https://platform.openai.com/docs/api-reference/chat) on the other. Pure: no I/O.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from otari_server.accounting import counts
from otari_server.translate.escapes import SurrogateMender

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


class TranslationError(ValueError):
    """A request cannot be expressed in the other wire format; the message says where."""


def to_chat_completion(
    message: Mapping[str, Any], *, model: str | None = None, created: int | None = None
) -> dict[str, Any]:
    """Translate an Anthropic message response into an OpenAI chat.completion.

    `model` is only a fallback: the answer reports the model as the provider named it.
    Thinking comes back twice: its text as `reasoning_content`, and the blocks themselves
    (with their `signature`, or a redacted block's `data`) as `thinking_blocks`, which a
    client sends back on the assistant message so a tool loop can continue.
    """
    texts: list[str] = []
    thoughts: list[str] = []
    thinking_blocks: list[dict[str, Any]] = []
    tool_calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind in ("thinking", "redacted_thinking"):
            thinking_blocks.append(thinking_block(block))
            if kind == "thinking":
                thoughts.append(block.get("thinking", ""))
        elif kind == "tool_use":
            tool_calls.append(_tool_call(block))
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not tool_calls else None,
        "refusal": None,
    }
    if thoughts:
        # The field DeepSeek and vLLM use for reasoning text; OpenAI SDKs keep it as an extra.
        reply["reasoning_content"] = "".join(thoughts)
    if thinking_blocks:
        reply["thinking_blocks"] = thinking_blocks
    if tool_calls:
        reply["tool_calls"] = tool_calls
    return {
        "id": message.get("id", ""),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": message.get("model") or model or "",
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": finish_reason(message.get("stop_reason")),
            }
        ],
        # A usage that is not an object reads as none here; metering refuses it.
        "usage": chat_usage(usage if isinstance(usage := message.get("usage"), Mapping) else {}),
    }


def thinking_block(block: Mapping[str, Any]) -> dict[str, Any]:
    """The chat form of a thinking or redacted_thinking block: exactly what Anthropic needs
    back (`thinking` and `signature`, or `data`)."""
    if block.get("type") == "redacted_thinking":
        return {"type": "redacted_thinking", "data": block.get("data", "")}
    return {
        "type": "thinking",
        "thinking": block.get("thinking", ""),
        "signature": block.get("signature", ""),
    }


def finish_reason(stop_reason: str | None) -> str:
    """OpenAI finish_reason for an Anthropic stop_reason."""
    return FINISH_REASONS.get(stop_reason or "end_turn", "stop")


def chat_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI usage for Anthropic usage; prompt tokens include cache reads and writes."""
    fresh, read, written, output = (
        _tokens(usage, key)
        for key in (
            "input_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
            "output_tokens",
        )
    )
    prompt = fresh + read + written
    return {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": read, "cache_creation_tokens": written},
    }


class ChatStreamTranslator:
    """Feed Anthropic stream events (decoded `data:` dicts); get OpenAI chat.completion.chunks.

    Chunks report the model as the provider named it in message_start (`model` is the
    fallback). Thinking text streams as `reasoning_content` deltas; each thinking block, once
    complete, comes as one `thinking_blocks` entry (with its signature; a redacted block with
    its data) holding its position as `index`, so a client appends the entries in order. A
    tool call whose block streamed no arguments gets `"{}"` at its end, as the non-streamed
    answer gives it.
    """

    def __init__(
        self, *, model: str | None = None, include_usage: bool = False, created: int | None = None
    ) -> None:
        self._model = model or ""
        self._include_usage = include_usage
        self._created = int(time.time()) if created is None else created
        self._id = ""
        self._tools: dict[int, int] = {}  # content block index -> tool call index
        # Content block index -> the arguments its start implies; None once arguments went out.
        self._arguments: dict[int, str | None] = {}
        self._menders: dict[int, SurrogateMender] = {}  # content block index -> its arguments'
        self._thinking: dict[int, dict[str, Any]] = {}  # content block index -> block so far
        self._thinking_blocks = 0  # thinking blocks sent so far: the next entry's index
        self._reported: dict[str, Any] = {}  # the provider's own numbers, for metering to check
        self._unread: set[str] = set()  # usage events not read (and not superseded since)
        # Whether a message_delta gave the output count: message_start's is a placeholder.
        self.output_final = False
        self.finish_reason: str | None = None
        self.error: dict[str, Any] | None = None
        self.done = False

    @property
    def usage(self) -> dict[str, Any] | None:
        """OpenAI usage so far (final once `done`), None before the upstream reported any."""
        return chat_usage(self._reported) if self._reported else None

    @property
    def reported(self) -> dict[str, Any] | None:
        """The provider's Anthropic usage as it sent it (cumulative), None before any: what
        metering checks (`usage` has numbers it could not take read as 0)."""
        return self._reported or None

    def feed(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Translate one event into zero or more chunks."""
        kind = event.get("type")
        if kind == "message_start":
            return self._start(event.get("message") or {})
        if kind == "content_block_start":
            return self._block_start(event.get("index", 0), event.get("content_block") or {})
        if kind == "content_block_delta":
            return self._block_delta(event.get("index", 0), event.get("delta") or {})
        if kind == "content_block_stop":
            return self._block_stop(event.get("index", 0))
        if kind == "message_delta":
            self._count(event.get("usage"), kind)
            self.finish_reason = finish_reason((event.get("delta") or {}).get("stop_reason"))
            return [self._chunk({}, self.finish_reason)]
        if kind == "message_stop":
            self.done = True
            return [self._usage_chunk()] if self._include_usage else []
        if kind == "error":
            return [self._error(event.get("error") or {})]
        return []  # ping and event types added later

    @property
    def unreadable(self) -> str | None:
        """Why the provider's usage cannot be known, when it cannot: metering then refuses
        the numbers instead of billing what was read (message_start's placeholder output
        count, no input count)."""
        if self._unread:
            return f"the provider's {min(self._unread)} event could not be read"
        return None

    def unread(self, kind: object) -> None:
        """An event of type `kind` (or its usage) could not be read. A message_start matters
        until an input count is known; a message_delta until a later one is read (its totals
        are cumulative)."""
        started = "input_tokens" in self._reported
        if kind == "message_delta" or (kind == "message_start" and not started):
            self._unread.add(kind)

    def _start(self, message: Mapping[str, Any]) -> list[dict[str, Any]]:
        self._id = message.get("id", "")
        self._model = message.get("model") or self._model
        self._count(message.get("usage"), "message_start")
        return [self._chunk({"role": "assistant", "content": ""})]

    def _block_start(self, index: int, block: Mapping[str, Any]) -> list[dict[str, Any]]:
        kind = block.get("type")
        if kind == "tool_use":
            position = self._tools[index] = len(self._tools)
            # Arguments stream as input_json_delta; the start's input stands in if none come.
            self._arguments[index] = _arguments(block.get("input"))
            call = {
                "index": position,
                "id": block.get("id", ""),
                "type": "function",
                "function": {"name": block.get("name", ""), "arguments": ""},
            }
            return [self._chunk({"tool_calls": [call]})]
        if kind == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        if kind == "thinking":
            self._thinking[index] = thinking_block(block)
            if block.get("thinking"):
                return [self._chunk({"reasoning_content": block["thinking"]})]
        if kind == "redacted_thinking":
            # Complete as it starts: nothing of it is readable, the data goes back as it is.
            return [self._thinking_chunk(thinking_block(block))]
        return []

    def _block_delta(self, index: int, delta: Mapping[str, Any]) -> list[dict[str, Any]]:
        kind = delta.get("type")
        if kind == "text_delta":
            return [self._chunk({"content": delta.get("text", "")})]
        if kind == "input_json_delta" and delta.get("partial_json") and index in self._tools:
            mender = self._menders.setdefault(index, SurrogateMender())
            settled = mender.feed(str(delta["partial_json"]))
            self._arguments[index] = None  # arguments are streaming: the start's input is moot
            return self._arguments_chunk(index, settled) if settled else []
        if kind == "thinking_delta":
            text = delta.get("thinking", "")
            if index in self._thinking:
                self._thinking[index]["thinking"] += text
            return [self._chunk({"reasoning_content": text})]
        if kind == "signature_delta" and index in self._thinking:
            self._thinking[index]["signature"] = delta.get("signature", "")
        return []

    def _block_stop(self, index: int) -> list[dict[str, Any]]:
        if index in self._thinking:
            return [self._thinking_chunk(self._thinking.pop(index))]
        if index in self._tools and (arguments := self._arguments[index]) is not None:
            # No arguments streamed: "{}" (or the start's input), as the JSON answer has it.
            return self._arguments_chunk(index, arguments)
        if index in self._menders and (rest := self._menders.pop(index).flush()):
            return self._arguments_chunk(index, rest)
        return []

    def _thinking_chunk(self, block: dict[str, Any]) -> dict[str, Any]:
        # Each entry carries its `index`, as tool_calls entries do: the openai SDK's stream
        # accumulator merges list entries by index and fails on a second list without one.
        entry = {"index": self._thinking_blocks, **block}
        self._thinking_blocks += 1
        return self._chunk({"thinking_blocks": [entry]})

    def _arguments_chunk(self, index: int, arguments: str) -> list[dict[str, Any]]:
        self._arguments[index] = None
        call = {"index": self._tools[index], "function": {"arguments": arguments}}
        return [self._chunk({"tool_calls": [call]})]

    def _error(self, error: Mapping[str, Any]) -> dict[str, Any]:
        # OpenAI reports a failure inside a stream as a data event holding `error`; SDKs raise it.
        self.error = {
            "message": error.get("message", "upstream stream failed"),
            "type": error.get("type", "api_error"),
            "param": None,
            "code": None,
        }
        return {"error": self.error}

    def _count(self, usage: object, kind: str) -> None:
        # Anthropic reports cumulative totals, so later numbers replace earlier ones; a null
        # is no report (the SDK's MessageDeltaUsage has optional input and cache counts).
        if isinstance(usage, Mapping):
            self._reported.update(
                {k: v for k, v in usage.items() if k.endswith("_tokens") and v is not None}
            )
            self._unread.discard(kind)
            if kind == "message_delta" and usage.get("output_tokens") is not None:
                self.output_final = True
            if "input_tokens" in self._reported:
                self._unread.discard("message_start")
        elif usage is not None:  # "usage": "lots": the event's numbers cannot be read
            self.unread(kind)

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        chunk = self._envelope()
        chunk["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        if self._include_usage:
            chunk["usage"] = None
        return chunk

    def _usage_chunk(self) -> dict[str, Any]:
        chunk = self._envelope()
        chunk["choices"] = []
        chunk["usage"] = self.usage or chat_usage({})
        return chunk

    def _envelope(self) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
        }


def _tool_call(block: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": block.get("id", ""),
        "type": "function",
        "function": {
            "name": block.get("name", ""),
            "arguments": _arguments(block.get("input")),
        },
    }


def _arguments(tool_input: object) -> str:
    """Tool call arguments as OpenAI gives them: compact JSON, "{}" for none."""
    return json.dumps(tool_input or {}, separators=(",", ":"))


def _tokens(usage: Mapping[str, Any], key: str) -> int:
    return counts.clean(usage.get(key))

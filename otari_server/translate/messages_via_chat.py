"""Anthropic Messages clients in front of an OpenAI-compatible upstream: request, response, stream.

Serves `/v1/messages` from providers of type "openai". Stream events come out as dicts whose
`type` is also the SSE event name: `sse.encode(event, event=event["type"])`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from otari_server import jsonio
from otari_server.accounting import counts
from otari_server.translate.chat_via_messages import TranslationError
from otari_server.translate.escapes import SurrogateMender, mended

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

_EMPTY_BLOCKS: dict[str, dict[str, str]] = {
    "text": {"type": "text", "text": ""},
    "thinking": {"type": "thinking", "thinking": "", "signature": ""},
}

ERROR_TYPES = {
    "invalid_request_error": "invalid_request_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "not_found_error": "not_found_error",
    "rate_limit_error": "rate_limit_error",
    "rate_limit_exceeded": "rate_limit_error",
    "insufficient_quota": "rate_limit_error",
}


def to_chat_request(
    body: Mapping[str, Any], *, model: str | None = None, limit_field: str = "max_tokens"
) -> dict[str, Any]:
    """Translate an Anthropic Messages request into an OpenAI chat completion request.

    `limit_field` names the output limit: "max_tokens" reaches the most OpenAI-compatible
    servers, OpenAI's reasoning models want "max_completion_tokens". `thinking` and `top_k`
    are dropped: generic OpenAI-compatible servers reject them.
    """
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise TranslationError("max_tokens: a positive integer is required")
    request: dict[str, Any] = {
        "model": model or body.get("model"),
        "messages": _system(body.get("system")) + _conversation(body.get("messages")),
        limit_field: max_tokens,
    }
    stop = body.get("stop_sequences")
    if stop:
        request["stop"] = list(stop)
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            request[key] = body[key]
    if tools := _tools(body.get("tools")):
        request["tools"] = tools
        request.update(_tool_choice(body.get("tool_choice")))
    user = (body.get("metadata") or {}).get("user_id")
    if isinstance(user, str) and user:
        request["user"] = user
    if body.get("stream"):
        # Anthropic streams always end with usage; OpenAI-compatible ones only when asked.
        request["stream"] = True
        request["stream_options"] = {"include_usage": True}
    return request


def to_message(completion: Mapping[str, Any], *, model: str | None = None) -> dict[str, Any]:
    """Translate an OpenAI chat.completion into an Anthropic message response.

    The id is `msg_`-prefixed as Anthropic's are; the model is the one the provider named
    (`model` is the fallback). A matched stop string the provider reports (vLLM's choice
    `stop_reason`) becomes `stop_reason: "stop_sequence"` with that `stop_sequence`.
    """
    choices = completion.get("choices") or [{}]
    choice = choices[0]
    reply = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    reasoning = reply.get("reasoning_content") or reply.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = _text(reply.get("content"))
    if text:
        content.append({"type": "text", "text": text})
    calls = reply.get("tool_calls") or ()
    content += [_tool_use(call) for call in calls]
    reason, sequence = _stop(choice, tool_calls=bool(calls))
    return {
        "id": _message_id(completion.get("id")),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model") or model or "",
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": anthropic_usage(completion.get("usage") or {}),
    }


def stop_reason(finish_reason: str | None, *, tool_calls: bool = False) -> str:
    """Anthropic stop_reason for an OpenAI finish_reason."""
    # Some servers (Ollama among them) finish tool calls with "stop".
    if tool_calls and finish_reason in (None, "stop"):
        return "tool_use"
    return STOP_REASONS.get(finish_reason or "stop", "end_turn")


def _stop(choice: Mapping[str, Any], *, tool_calls: bool) -> tuple[str, str | None]:
    """stop_reason and stop_sequence of a choice; vLLM names the matched stop string."""
    finish = choice.get("finish_reason")
    matched = choice.get("stop_reason")
    if finish == "stop" and not tool_calls and isinstance(matched, str) and matched:
        return "stop_sequence", matched
    return stop_reason(finish, tool_calls=tool_calls), None


def anthropic_usage(usage: Mapping[str, Any]) -> dict[str, int]:
    """Anthropic usage for OpenAI usage; cached prompt tokens count as cache reads."""
    prompt = _count(usage.get("prompt_tokens"))
    cached = _count((usage.get("prompt_tokens_details") or {}).get("cached_tokens"))
    return {
        "input_tokens": max(prompt - cached, 0),
        "output_tokens": _count(usage.get("completion_tokens")),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }


class MessageStreamTranslator:
    """Feed OpenAI chat.completion.chunk dicts; get the Anthropic stream event sequence.

    Call `finish()` at `[DONE]` (or when the upstream stream ends) for message_delta/message_stop.

    Anthropic streams one content block at a time, every delta between its block's start and
    stop. A tool call that starts while another is open is held back, its arguments buffered,
    and sent whole once the open block closes: OpenAI-compatible servers may interleave the
    argument deltas of parallel calls. message_start reports the model the provider named and
    `input_tokens` as an estimate (the request's size): OpenAI-compatible servers count tokens
    only at the end, and the final message_delta carries the real counts.
    """

    def __init__(self, *, model: str, message_id: str | None = None, input_tokens: int = 0):
        self._model = model
        self._id = message_id or _message_id()
        self._input_tokens = input_tokens  # an estimate: OpenAI reports usage only at the end
        self._started = False
        self._pinged = False
        self._open: int | None = None  # index of the open content block
        self._open_kind: str | None = None
        self._blocks = 0
        self._tools: dict[int, int] = {}  # OpenAI tool call index -> content block index
        self._live: int | None = None  # OpenAI tool call index of the open tool_use block
        self._held: dict[int, tuple[dict[str, Any], list[str]]] = {}  # block, argument parts
        self._menders: dict[int, SurrogateMender] = {}  # OpenAI tool call index -> its mender
        self._usage: Mapping[str, Any] | None = None
        self.stop_reason: str | None = None
        self.stop_sequence: str | None = None
        self.error: dict[str, Any] | None = None
        self.done = False

    @property
    def usage(self) -> dict[str, int] | None:
        """Anthropic usage once the upstream reported it."""
        return anthropic_usage(self._usage) if self._usage else None

    @property
    def reported(self) -> Mapping[str, Any] | None:
        """The provider's OpenAI usage as it sent it, None before any: what metering checks
        (`usage` has numbers it could not take read as 0)."""
        return self._usage or None

    def feed(self, chunk: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Translate one chunk into zero or more events."""
        if self.done:
            return []
        events = self._start(chunk.get("model"))
        if chunk.get("error"):
            return [*events, self._error(chunk["error"])]
        if isinstance(chunk.get("usage"), Mapping) and chunk["usage"]:
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if isinstance(choice, Mapping) and choice.get("index", 0) == 0:
                events += self._choice(choice)
        return events

    def finish(self) -> list[dict[str, Any]]:
        """Close the message: the last block, message_delta with usage, message_stop."""
        if self.done:
            return []
        self.done = True
        usage = self.usage or {"input_tokens": self._input_tokens, "output_tokens": 0}
        delta = {"stop_reason": self.stop_reason or "end_turn", "stop_sequence": self.stop_sequence}
        return [
            *self._start(None),
            *self._close(),
            {"type": "message_delta", "delta": delta, "usage": usage},
            {"type": "message_stop"},
        ]

    def _choice(self, choice: Mapping[str, Any]) -> list[dict[str, Any]]:
        delta = choice.get("delta") or {}
        events: list[dict[str, Any]] = []
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            events += self._text("thinking", reasoning)
        if isinstance(delta.get("content"), str) and delta["content"]:
            events += self._text("text", delta["content"])
        for call in delta.get("tool_calls") or ():
            if isinstance(call, Mapping):
                events += self._tool(call)
        if choice.get("finish_reason"):
            self.stop_reason, self.stop_sequence = _stop(choice, tool_calls=bool(self._tools))
            events += self._close()
        return events

    def _start(self, model: object) -> list[dict[str, Any]]:
        if self._started:
            return []
        self._started = True
        if isinstance(model, str) and model:
            self._model = model  # as the provider named it, as a pass-through reports it
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self._input_tokens, "output_tokens": 0},
        }
        return [{"type": "message_start", "message": message}]

    def _text(self, kind: str, text: str) -> list[dict[str, Any]]:
        events = []
        if self._open_kind != kind:
            events = self._close() + self._begin(dict(_EMPTY_BLOCKS[kind]))
        delta = {"type": f"{kind}_delta", kind: text}
        return [*events, {"type": "content_block_delta", "index": self._open, "delta": delta}]

    def _tool(self, call: Mapping[str, Any]) -> list[dict[str, Any]]:
        position = call.get("index", 0)
        function = call.get("function") or {}
        arguments = function.get("arguments")
        arguments = arguments if isinstance(arguments, str) else ""
        events: list[dict[str, Any]] = []
        if position not in self._tools and position not in self._held:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
                "name": function.get("name") or "",
                "input": {},
            }
            if self._live is not None:
                # Another call is still open and may get more arguments: hold this one back.
                self._held[position] = (block, [arguments] if arguments else [])
                return []
            events = self._close() + self._begin(block)
            self._tools[position] = self._blocks - 1
            self._live = position
        elif position in self._held:
            if arguments:
                self._held[position][1].append(arguments)
            return []
        if arguments:
            index = self._tools[position]
            if position == self._live:
                arguments = self._menders.setdefault(position, SurrogateMender()).feed(arguments)
            else:
                # A closed call's late arguments (text came in between) can only name its
                # block, and nothing follows to complete an escape cut at their end.
                arguments = mended(arguments)
            if arguments:
                delta = {"type": "input_json_delta", "partial_json": arguments}
                events.append({"type": "content_block_delta", "index": index, "delta": delta})
        return events

    def _begin(self, block: dict[str, Any]) -> list[dict[str, Any]]:
        self._open, self._open_kind = self._blocks, block["type"]
        self._blocks += 1
        events = [{"type": "content_block_start", "index": self._open, "content_block": block}]
        if not self._pinged:
            self._pinged = True
            events.append({"type": "ping"})
        return events

    def _close(self) -> list[dict[str, Any]]:
        """Stop the open block, then send each held tool call whole, in order."""
        events: list[dict[str, Any]] = []
        if self._open is not None:
            mender = self._menders.pop(self._live, None) if self._live is not None else None
            if mender is not None and (rest := mender.flush()):
                delta = {"type": "input_json_delta", "partial_json": rest}
                events.append({"type": "content_block_delta", "index": self._open, "delta": delta})
            events.append({"type": "content_block_stop", "index": self._open})
            self._open, self._open_kind, self._live = None, None, None
        for position in sorted(self._held):
            block, parts = self._held[position]
            events += self._begin(block)
            index = self._tools[position] = self._blocks - 1
            if parts:
                delta = {"type": "input_json_delta", "partial_json": mended("".join(parts))}
                events.append({"type": "content_block_delta", "index": index, "delta": delta})
            events.append({"type": "content_block_stop", "index": index})
            self._open, self._open_kind = None, None
        self._held.clear()
        return events

    def _error(self, error: object) -> dict[str, Any]:
        details = error if isinstance(error, Mapping) else {"message": str(error)}
        self.error = {
            "type": ERROR_TYPES.get(str(details.get("type")), "api_error"),
            "message": str(details.get("message") or "upstream stream failed"),
        }
        self.done = True
        return {"type": "error", "error": self.error}


def _system(system: object) -> list[dict[str, Any]]:
    if system is None or system == "":
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    if not isinstance(system, list):
        raise TranslationError("system: expected a string or a list of text blocks")
    texts = [block.get("text", "") for block in system if isinstance(block, Mapping)]
    return [{"role": "system", "content": "\n\n".join(texts)}] if texts else []


def _conversation(messages: object) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise TranslationError("messages: a non-empty list is required")
    converted: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise TranslationError(f"{where}: expected an object")
        role, content = message.get("role"), message.get("content")
        if role == "user":
            converted += _user(content, f"{where}.content")
        elif role == "assistant":
            converted.append(_assistant(content, f"{where}.content"))
        else:
            raise TranslationError(f"{where}.role: expected 'user' or 'assistant'")
    return converted


def _user(content: object, where: str) -> list[dict[str, Any]]:
    """Tool results become `tool` messages, which OpenAI wants first; the rest one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(_block_list(content, where)):
        if block.get("type") == "tool_result":
            results.append(_tool_message(block, parts, f"{where}[{i}]"))
        else:
            parts += _parts(block, f"{where}[{i}]")
    if parts:
        results.append({"role": "user", "content": _compact(parts)})
    return results


def _assistant(content: object, where: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in _block_list(content, where):
        if block.get("type") == "text":
            texts.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            arguments = json.dumps(block.get("input") or {}, separators=(",", ":"))
            function = {"name": block.get("name", ""), "arguments": arguments}
            calls.append({"id": block.get("id", ""), "type": "function", "function": function})
        # thinking blocks stay behind: OpenAI-compatible servers have no field to take them
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    return message


def _tool_message(
    block: Mapping[str, Any], parts: list[dict[str, Any]], where: str
) -> dict[str, Any]:
    """A `tool` message for a tool_result; its images go to `parts`, since tool text is text."""
    content = block.get("content")
    if isinstance(content, str):
        text = content
    else:
        texts = []
        for i, inner in enumerate(_block_list(content or [], f"{where}.content")):
            if inner.get("type") == "text":
                texts.append(inner.get("text", ""))
            else:
                parts += _parts(inner, f"{where}.content[{i}]")
        text = "\n".join(texts)
    return {"role": "tool", "tool_call_id": block.get("tool_use_id", ""), "content": text}


def _parts(block: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    kind = block.get("type")
    if kind == "text":
        return [{"type": "text", "text": block.get("text", "")}]
    source = block.get("source") or {}
    if kind == "image":
        return [{"type": "image_url", "image_url": {"url": _url(source, where)}}]
    if kind == "document":
        if source.get("type") == "text":
            return [{"type": "text", "text": source.get("data", "")}]
        if source.get("type") == "base64":
            file = {
                "filename": block.get("title") or "document.pdf",
                "file_data": _url(source, where),
            }
            return [{"type": "file", "file": file}]
    if kind in ("thinking", "redacted_thinking"):
        return []
    raise TranslationError(f"{where}: '{kind}' blocks are not supported by this provider")


def _url(source: Mapping[str, Any], where: str) -> str:
    if source.get("type") == "base64":
        return f"data:{source.get('media_type', '')};base64,{source.get('data', '')}"
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return str(source["url"])
    raise TranslationError(f"{where}.source: expected a base64 or url source")


def _compact(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    # Plain strings reach the most OpenAI-compatible servers; lists only when media needs them.
    if all(part["type"] == "text" for part in parts):
        return "\n\n".join(part["text"] for part in parts)
    return parts


def _block_list(content: object, where: str) -> list[Mapping[str, Any]]:
    if not isinstance(content, list) or not all(isinstance(b, Mapping) for b in content):
        raise TranslationError(f"{where}: expected a string or a list of content blocks")
    return content


def _tools(tools: object) -> list[dict[str, Any]]:
    if not tools:
        return []
    if not isinstance(tools, list):
        raise TranslationError("tools: expected a list")
    converted = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping) or tool.get("type") not in (None, "custom"):
            kind = tool.get("type") if isinstance(tool, Mapping) else None
            raise TranslationError(f"tools[{i}]: '{kind}' tools need an anthropic provider")
        function = {"name": tool.get("name", ""), "parameters": tool.get("input_schema") or {}}
        if tool.get("description"):
            function["description"] = tool["description"]
        converted.append({"type": "function", "function": function})
    return converted


def _tool_choice(choice: object) -> dict[str, Any]:
    if not isinstance(choice, Mapping):
        return {}
    kind = choice.get("type")
    fields: dict[str, Any] = {}
    if kind == "auto":
        fields["tool_choice"] = "auto"
    elif kind == "any":
        fields["tool_choice"] = "required"
    elif kind == "none":
        fields["tool_choice"] = "none"
    elif kind == "tool":
        fields["tool_choice"] = {"type": "function", "function": {"name": choice.get("name", "")}}
    else:
        raise TranslationError(f"tool_choice.type: '{kind}' is not supported")
    if choice.get("disable_parallel_tool_use"):
        fields["parallel_tool_calls"] = False
    return fields


def _tool_use(call: Mapping[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = function.get("arguments") or "{}"
    try:
        tool_input = jsonio.parse(arguments)
    except (TypeError, json.JSONDecodeError):
        tool_input = None
    # Anthropic requires an object; a model's malformed arguments degrade to an empty one.
    return {
        "type": "tool_use",
        "id": call.get("id", ""),
        "name": function.get("name", ""),
        "input": tool_input if isinstance(tool_input, dict) else {},
    }


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
    return ""


def _message_id(upstream: object = None) -> str:
    """An Anthropic-style message id: the provider's own when it is one, else a new one."""
    if isinstance(upstream, str) and upstream.startswith("msg_"):
        return upstream
    return f"msg_{uuid.uuid4().hex[:24]}"


def _count(value: object) -> int:
    return counts.clean(value)

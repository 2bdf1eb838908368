"""Responses API clients in front of a Chat Completions-shaped call: response and stream.

The request side is `responses_via_chat_request`.

Serves `/v1/responses` from providers that lack the Responses API. The request becomes a chat
completion request (which `chat_via_messages_request` turns into a Messages request), the answer a
`response` object, and chat.completion.chunk dicts the typed Responses stream events. Events
come out as dicts whose `type` is also the SSE event name: `sse.encode(event, event["type"])`.

Responses state lives with the provider (`previous_response_id`, `conversation`, stored prompts,
file ids); a translated call has none, so requests that need it are refused here.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

from otari_server.accounting import counts
from otari_server.translate.chat_via_messages import thinking_block

# finish_reason -> why a response is incomplete; any other finish completes it.
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


# The `include` value asking for reasoning items that carry their signed thinking.
ENCRYPTED_REASONING = "reasoning.encrypted_content"

# Request fields echoed back on the response object as they were sent (None when absent).
_ECHOED = ("instructions", "max_output_tokens", "temperature", "top_p", "user")


def to_response(
    completion: Mapping[str, Any],
    request: Mapping[str, Any],
    *,
    model: str | None = None,
    response_id: str | None = None,
    created_at: int | None = None,
) -> dict[str, Any]:
    """Translate an OpenAI chat.completion into a Responses API `response` object.

    The model is the one the provider named (`model` is the fallback). Each thinking block
    becomes a reasoning item; with `include: ["reasoning.encrypted_content"]` in the request
    it carries `encrypted_content` (the block with its signature, opaque to the client), which
    the client sends back in its next input so the provider sees its thinking again.
    """
    choice = (completion.get("choices") or [{}])[0]
    reply = choice.get("message") or {}
    finish = choice.get("finish_reason")
    status = "incomplete" if finish in INCOMPLETE else "completed"
    output: list[dict[str, Any]] = []
    blocks = reply.get("thinking_blocks")
    if isinstance(blocks, list) and blocks:
        encrypted = wants_encrypted_reasoning(request)
        # A redacted block has no text: only its encrypted content is of use to a client.
        output += [
            _thinking_item(block, encrypted)
            for block in blocks
            if isinstance(block, Mapping)
            and (encrypted or block.get("type") != "redacted_thinking")
        ]
    else:
        reasoning = reply.get("reasoning_content") or reply.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            output.append(_reasoning_item(_id("rs"), reasoning, "completed"))
    text = _text(reply.get("content"))
    refusal = reply.get("refusal")
    if text or (isinstance(refusal, str) and refusal):
        part = _text_part(text) if text else {"type": "refusal", "refusal": refusal}
        output.append(_message_item(_id("msg"), [part], status))
    for call in reply.get("tool_calls") or ():
        function = call.get("function") or {}
        output.append(
            _function_item(
                _id("fc"),
                call.get("id") or _id("call"),
                function.get("name") or "",
                function.get("arguments") or "{}",
                "completed",
            )
        )
    response = envelope(
        request,
        model=completion.get("model") or model or "",
        response_id=response_id or _id("resp"),
        created_at=created_at,
    )
    response.update(status=status, output=output, usage=responses_usage(completion.get("usage")))
    if status == "incomplete":
        response["incomplete_details"] = {"reason": INCOMPLETE[str(finish)]}
    response["completed_at"] = int(time.time()) if status == "completed" else None
    return response


def wants_encrypted_reasoning(request: Mapping[str, Any]) -> bool:
    """True when the client asked for reasoning items it can send back (stateless use)."""
    include = request.get("include")
    return isinstance(include, list) and ENCRYPTED_REASONING in include


def encrypt_thinking(block: Mapping[str, Any]) -> str:
    """A reasoning item's `encrypted_content` for a thinking block: the block itself, its
    signature included, as base64 of compact JSON (Anthropic signs it; otari keeps nothing)."""
    known = thinking_block(block)
    return base64.b64encode(json.dumps(known, separators=(",", ":")).encode()).decode()


def responses_usage(usage: object) -> dict[str, Any] | None:
    """Responses usage for chat usage (cached prompt tokens and cache writes kept)."""
    if not isinstance(usage, Mapping):
        return None
    prompt = _count(usage.get("prompt_tokens"))
    output = _count(usage.get("completion_tokens"))
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, Mapping) else {}
    completion_details = usage.get("completion_tokens_details")
    completion_details = completion_details if isinstance(completion_details, Mapping) else {}
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": _count(details.get("cached_tokens")),
            "cache_write_tokens": _count(details.get("cache_creation_tokens")),
        },
        "output_tokens": output,
        "output_tokens_details": {
            "reasoning_tokens": _count(completion_details.get("reasoning_tokens"))
        },
        "total_tokens": prompt + output,
    }


def envelope(
    request: Mapping[str, Any],
    *,
    model: str,
    response_id: str,
    created_at: int | None = None,
) -> dict[str, Any]:
    """A response object still in progress: the request's settings, no output yet."""
    tools = request.get("tools")
    reasoning = request.get("reasoning")
    reasoning = reasoning if isinstance(reasoning, Mapping) else {}
    text = request.get("text")
    response: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()) if created_at is None else created_at,
        "status": "in_progress",
        "background": False,
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "metadata": request.get("metadata") or {},
        "model": model,
        "output": [],
        "parallel_tool_calls": request.get("parallel_tool_calls") is not False,
        "previous_response_id": None,
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": False,  # nothing is kept: a translated response cannot be retrieved later
        "text": dict(text) if isinstance(text, Mapping) else {"format": {"type": "text"}},
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": list(tools) if isinstance(tools, list) else [],
        "truncation": "disabled",
        "usage": None,
    }
    response.update({key: request.get(key) for key in _ECHOED})
    return response


class ResponseStreamTranslator:
    """Feed chat.completion.chunk dicts; get the typed Responses stream events.

    `feed` opens the stream (response.created, response.in_progress) with its first call;
    call `finish()` when the chat stream ends, for the closing events and response.completed
    (or response.incomplete), or `fail(message)` when it broke off.

    Items stream one at a time, each one's events between its output_item.added and .done: a
    function call that starts while another is open is held back and sent whole once the open
    one is done. A chunk's `thinking_blocks` entry completes the open reasoning item (and gives
    it `encrypted_content` when the request's `include` asks for it). The response reports the
    model the chunks name (`model` is the fallback).
    """

    def __init__(
        self,
        request: Mapping[str, Any],
        *,
        model: str,
        response_id: str | None = None,
        created_at: int | None = None,
    ) -> None:
        self._response = envelope(
            request, model=model, response_id=response_id or _id("resp"), created_at=created_at
        )
        self._encrypted = wants_encrypted_reasoning(request)
        self._sequence = 0
        self._started = False
        self._output: list[dict[str, Any]] = []  # items as they stand
        self._open: int | None = None  # output index of the item still receiving deltas
        self._calls: dict[int, int] = {}  # chat tool call index -> output index
        self._live: int | None = None  # chat tool call index of the open function call
        self._held: dict[int, dict[str, Any]] = {}  # chat tool call index -> item held back
        self._chat_usage: Mapping[str, Any] | None = None
        self.finish_reason: str | None = None
        self.error: dict[str, Any] | None = None
        self.done = False

    def feed(self, chunk: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Translate one chunk into zero or more events."""
        if self.done:
            return []
        events = self._start(chunk.get("model"))
        if chunk.get("error"):
            error = chunk["error"]
            details = error if isinstance(error, Mapping) else {"message": str(error)}
            return events + self.fail(str(details.get("message") or "upstream stream failed"))
        if isinstance(chunk.get("usage"), Mapping):
            self._chat_usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if isinstance(choice, Mapping) and choice.get("index", 0) == 0:
                events += self._choice(choice)
        return events

    def finish(self) -> list[dict[str, Any]]:
        """The closing events, ending with response.completed or response.incomplete."""
        if self.done:
            return []
        events = self._start()
        incomplete = INCOMPLETE.get(self.finish_reason or "")
        events += self._close("incomplete" if incomplete else "completed")
        self.done = True
        response = self._snapshot()
        response["usage"] = responses_usage(self._chat_usage)
        if incomplete:
            response.update(status="incomplete", incomplete_details={"reason": incomplete})
            return [*events, self._event("response.incomplete", response=response)]
        response.update(status="completed", completed_at=int(time.time()))
        return [*events, self._event("response.completed", response=response)]

    def fail(self, message: str, code: str = "server_error") -> list[dict[str, Any]]:
        """An `error` event and response.failed: the stream broke off with `message`."""
        if self.done:
            return []
        events = self._start()
        self.done = True
        self.error = {"code": code, "message": message}
        events.append(self._event("error", code=code, message=message, param=None))
        response = self._snapshot()
        response.update(status="failed", error=dict(self.error))
        response["usage"] = responses_usage(self._chat_usage)
        return [*events, self._event("response.failed", response=response)]

    # -- items ------------------------------------------------------------------------------

    def _choice(self, choice: Mapping[str, Any]) -> list[dict[str, Any]]:
        delta = choice.get("delta") or {}
        events: list[dict[str, Any]] = []
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            events += self._text("reasoning", reasoning)
        for block in delta.get("thinking_blocks") or ():
            if isinstance(block, Mapping):
                events += self._thinking(block)
        if isinstance(delta.get("content"), str) and delta["content"]:
            events += self._text("message", delta["content"])
        if isinstance(delta.get("refusal"), str) and delta["refusal"]:
            events += self._text("refusal", delta["refusal"])
        for call in delta.get("tool_calls") or ():
            if isinstance(call, Mapping):
                events += self._tool(call)
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
        return events

    def _text(self, kind: str, text: str) -> list[dict[str, Any]]:
        """A text delta of an assistant message ("message", "refusal") or of reasoning."""
        part_kind = {"reasoning": "reasoning_text", "message": "output_text"}.get(kind, "refusal")
        events, item = self._text_item(part_kind)
        part = item["_part"]
        field = "refusal" if part_kind == "refusal" else "text"
        part[field] += text
        name = {
            "reasoning_text": "response.reasoning_text.delta",
            "output_text": "response.output_text.delta",
            "refusal": "response.refusal.delta",
        }[part_kind]
        fields: dict[str, Any] = {"delta": text}
        if part_kind == "output_text":
            fields["logprobs"] = []
        events.append(self._event(name, **self._where(item), content_index=0, **fields))
        return events

    def _text_item(self, part_kind: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The open item taking `part_kind` text, opened (the previous one closed) if needed."""
        item = self._output[self._open] if self._open is not None else None
        if item is not None and item.get("_part", {}).get("type") == part_kind:
            return [], item
        events = self._close("completed")
        if part_kind == "reasoning_text":
            item = self._add(_reasoning_item(_id("rs"), None, "in_progress"))
        else:
            item = self._add(_message_item(_id("msg"), [], "in_progress"))
        events.append(self._item_event("response.output_item.added", item))
        part = _empty_part(part_kind)
        item["_part"] = part
        events.append(self._part_event("response.content_part.added", item, part))
        return events, item

    def _thinking(self, block: Mapping[str, Any]) -> list[dict[str, Any]]:
        """A complete thinking block: it ends the reasoning item its text streamed into."""
        if block.get("type") == "redacted_thinking":
            if not self._encrypted:
                return []  # nothing readable, and the client did not ask for it back
            events = self._close("completed")
            item = self._add(_reasoning_item(_id("rs"), None, "in_progress"))
            events.append(self._item_event("response.output_item.added", item))
        else:
            events, item = self._text_item("reasoning_text")
        if self._encrypted:
            item["encrypted_content"] = encrypt_thinking(block)
        return events + self._close("completed")

    def _tool(self, call: Mapping[str, Any]) -> list[dict[str, Any]]:
        position = call.get("index", 0)
        function = call.get("function") or {}
        arguments = function.get("arguments")
        arguments = arguments if isinstance(arguments, str) else ""
        if position in self._held:
            self._held[position]["arguments"] += arguments
            return []
        events: list[dict[str, Any]] = []
        if position not in self._calls:
            item = _function_item(
                _id("fc"),
                call.get("id") or _id("call"),
                function.get("name") or "",
                arguments,
                "in_progress",
            )
            if self._live is not None:
                # Another call is still open and may get more arguments: hold this one back.
                self._held[position] = item
                return []
            events += self._close("completed")
            item["arguments"] = ""
            self._add(item)
            self._calls[position] = item["_index"]
            self._live = position
            events.append(self._item_event("response.output_item.added", item))
        item = self._output[self._calls[position]]
        if arguments:
            # A closed call's late arguments (text came in between) can only name its item.
            item["arguments"] += arguments
            events.append(
                self._event(
                    "response.function_call_arguments.delta", **self._where(item), delta=arguments
                )
            )
        return events

    def _add(self, item: dict[str, Any]) -> dict[str, Any]:
        item["_index"] = len(self._output)
        self._output.append(item)
        self._open = item["_index"]
        return item

    def _close(self, status: str) -> list[dict[str, Any]]:
        """The done events of the open item, which becomes `status`; then each held call."""
        events = self._done(status)
        for position in sorted(self._held):
            item = self._add(self._held[position])
            self._calls[position] = item["_index"]
            arguments, item["arguments"] = item["arguments"], ""
            events.append(self._item_event("response.output_item.added", item))
            if arguments:
                item["arguments"] = arguments
                events.append(
                    self._event(
                        "response.function_call_arguments.delta",
                        **self._where(item),
                        delta=arguments,
                    )
                )
            events += self._done(status)
        self._held.clear()
        return events

    def _done(self, status: str) -> list[dict[str, Any]]:
        if self._open is None:
            return []
        item, self._open, self._live = self._output[self._open], None, None
        item["status"] = status
        if item["type"] == "function_call":
            if not item["arguments"]:
                # A call without arguments: "{}", as the non-streamed answer has it.
                item["arguments"] = "{}"
                events = [
                    self._event(
                        "response.function_call_arguments.delta", **self._where(item), delta="{}"
                    )
                ]
            else:
                events = []
            return [
                *events,
                self._event(
                    "response.function_call_arguments.done",
                    **self._where(item),
                    arguments=item["arguments"],
                ),
                self._item_event("response.output_item.done", item),
            ]
        if "_part" not in item:  # a redacted reasoning item: nothing but its encrypted content
            return [self._item_event("response.output_item.done", item)]
        part = item.pop("_part")
        if part["type"] == "reasoning_text":
            done = self._event(
                "response.reasoning_text.done",
                **self._where(item),
                content_index=0,
                text=part["text"],
            )
        elif part["type"] == "output_text":
            done = self._event(
                "response.output_text.done",
                **self._where(item),
                content_index=0,
                text=part["text"],
                logprobs=[],
            )
        else:
            done = self._event(
                "response.refusal.done",
                **self._where(item),
                content_index=0,
                refusal=part["refusal"],
            )
        item["content"] = [part]
        return [
            done,
            self._part_event("response.content_part.done", item, part),
            self._item_event("response.output_item.done", item),
        ]

    # -- events -----------------------------------------------------------------------------

    def _start(self, model: object = None) -> list[dict[str, Any]]:
        if self._started:
            return []
        self._started = True
        if isinstance(model, str) and model:
            self._response["model"] = model  # as the provider named it
        response = self._snapshot()
        return [
            self._event("response.created", response=response),
            self._event("response.in_progress", response=response),
        ]

    def _snapshot(self) -> dict[str, Any]:
        return {**self._response, "output": [_public(item) for item in self._output]}

    def _where(self, item: Mapping[str, Any]) -> dict[str, Any]:
        return {"item_id": item["id"], "output_index": item["_index"]}

    def _item_event(self, name: str, item: Mapping[str, Any]) -> dict[str, Any]:
        return self._event(name, output_index=item["_index"], item=_public(item))

    def _part_event(
        self, name: str, item: Mapping[str, Any], part: Mapping[str, Any]
    ) -> dict[str, Any]:
        return self._event(name, **self._where(item), content_index=0, part=dict(part))

    def _event(self, name: str, **fields: Any) -> dict[str, Any]:
        event = {"type": name, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event


def _public(item: Mapping[str, Any]) -> dict[str, Any]:
    """An item as clients see it: bookkeeping keys dropped, lists copied."""
    public = {key: value for key, value in item.items() if not key.startswith("_")}
    if "content" in public:
        public["content"] = [dict(part) for part in public["content"]]
    return public


def _empty_part(kind: str) -> dict[str, Any]:
    if kind == "output_text":
        return {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
    if kind == "refusal":
        return {"type": "refusal", "refusal": ""}
    return {"type": "reasoning_text", "text": ""}


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _message_item(item_id: str, content: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "content": content,
        "role": "assistant",
    }


def _reasoning_item(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    content = [{"type": "reasoning_text", "text": text}] if text is not None else []
    return {"id": item_id, "type": "reasoning", "status": status, "summary": [], "content": content}


def _thinking_item(block: Mapping[str, Any], encrypted: bool) -> dict[str, Any]:
    """The reasoning item of one thinking block (redacted: no text), signed when asked."""
    text = block.get("thinking") if block.get("type") == "thinking" else None
    item = _reasoning_item(_id("rs"), text if isinstance(text, str) else None, "completed")
    if encrypted:
        item["encrypted_content"] = encrypt_thinking(block)
    return item


def _function_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    }


# -- request pieces -------------------------------------------------------------------------


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
    return ""


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _count(value: object) -> int:
    return counts.clean(value)

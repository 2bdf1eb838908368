"""Stream translators for Responses API clients, sans I/O (see `translate.streams`).

`ResponsesPassThrough` relays an OpenAI Responses stream
(https://platform.openai.com/docs/api-reference/responses-streaming) and reads its usage;
`AnthropicToResponses` serves the Responses stream from an Anthropic Messages stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from otari_server.accounting import counts
from otari_server.accounting.counts import consumption
from otari_server.accounting.prices import Consumption
from otari_server.translate import chat_via_messages as anthropic_wire
from otari_server.translate.chat_via_messages import ChatStreamTranslator
from otari_server.translate.responses_via_chat import ResponseStreamTranslator
from otari_server.translate.sse import Event, encode
from otari_server.translate.streams import (
    StreamTranslator,
    _typed,
    completion_chunks,
    decoded,
    framed,
)
from otari_server.translate.usage import anthropic_used

# Responses stream events that end a response and carry it whole, usage included.
TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


def responses_consumption(usage: object) -> Consumption:
    """Consumption from Responses usage; input tokens include cached reads and cache writes."""
    used = consumption(usage)
    details = usage.get("input_tokens_details") if isinstance(usage, dict) else None
    try:  # checked like every other count: the raw number reached the usage row
        written = counts.count(
            details.get("cache_write_tokens") if isinstance(details, dict) else None,
            "cache_write_tokens",
        )
    except counts.BadCount as exc:
        return used if used.invalid else Consumption(invalid=str(exc))
    if written and not used.cache_write_tokens:
        used = replace(used, cache_write_tokens=written)
    return used


class ResponsesPassThrough(StreamTranslator):
    """Typed Responses events passed on; usage read from the terminal response.* event."""

    def __init__(self) -> None:
        super().__init__()
        self._usage: dict[str, Any] | None = None
        self._events = 0
        # The finished response's id when the provider stores it (`store` not false), so
        # later GETs can be routed to that provider.
        self.stored_id: str | None = None

    def used(self) -> Consumption | None:
        return responses_consumption(self._usage) if counts.reports_tokens(self._usage) else None

    def _finished(self, answer: dict[str, Any]) -> None:
        if isinstance(answer.get("usage"), dict):
            self._usage = answer["usage"]
        if answer.get("store") is not False and isinstance(answer.get("id"), str):
            self.stored_id = answer["id"]

    def fail(self, message: str, code: str) -> bytes:
        return encode(
            {
                "type": "error",
                "code": code,
                "message": message,
                "param": None,
                "sequence_number": self._events,
            },
            "error",
        )

    def whole(self, answer: dict[str, Any]) -> bytes:
        output = answer.get("output")
        items = output if isinstance(output, list) else []
        status = answer.get("status")
        terminal = (
            "response.failed"
            if status == "failed"
            else "response.incomplete"
            if status == "incomplete"
            else "response.completed"
        )
        opened = dict(answer, status="in_progress", output=[], usage=None)
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": opened},
            {"type": "response.in_progress", "response": opened},
        ]
        for index, item in enumerate(items):
            events.append(
                {"type": "response.output_item.added", "output_index": index, "item": item}
            )
            events.append(
                {"type": "response.output_item.done", "output_index": index, "item": item}
            )
        events.append({"type": terminal, "response": answer})
        for number, event in enumerate(events):
            event["sequence_number"] = number
        self._finished(answer)
        if status == "failed":
            self.error = _message(answer.get("error"))
        self.done = self._closed = True
        self.chunks = self.deltas = self._events = len(events)
        return b"".join(encode(event, event["type"]) for event in events)

    def _relay(self, events: list[Event]) -> bytes:
        out = []
        for event in events:
            name = event.event
            if event.done:
                out.append(encode(event.data, name))
                continue
            if not framed(event.data):
                self.malformed += 1
                continue
            self._events += 1
            if name is not None and name.endswith(".delta"):
                self.deltas += 1
            elif name in TERMINAL or name == "error" or (name is None and '"type"' in event.data):
                # Servers that omit `event:` lines name the type in the data only.
                parsed = decoded(event.data)
                if parsed is None:
                    self.malformed += 1
                    continue
                kind = parsed.get("type")
                if kind in TERMINAL:
                    answer = parsed.get("response")
                    answer = answer if isinstance(answer, dict) else {}
                    self._finished(answer)
                    if kind == "response.failed":
                        self.error = _message(answer.get("error"))
                    self.done = True
                elif kind == "error":
                    self.error = _message(parsed)
                elif isinstance(kind, str) and kind.endswith(".delta"):
                    self.deltas += 1
            if name != "error":
                self.chunks += 1
            out.append(encode(event.data, name))
        return b"".join(out)


def _message(error: object) -> str:
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    return "the provider reported a failed response"


class AnthropicToResponses(StreamTranslator):
    """Anthropic events -> chat chunks -> typed Responses events, for the client's `request`
    (the Responses body) and `model`."""

    def __init__(
        self, request: Mapping[str, Any], *, model: str, response_id: str | None = None
    ) -> None:
        super().__init__()
        self._model = model
        self._chunks = ChatStreamTranslator(model=model, include_usage=True)
        self._events = ResponseStreamTranslator(request, model=model, response_id=response_id)
        self._whole_usage: object = None  # a whole JSON answer's usage, as the provider sent it

    def used(self) -> Consumption | None:
        return anthropic_used(self._whole_usage, self._chunks, self.deltas)

    def fail(self, message: str, code: str) -> bytes:
        return _typed(self._events.fail(message))

    def whole(self, answer: dict[str, Any]) -> bytes:
        completion = anthropic_wire.to_chat_completion(answer, model=self._model)
        self._whole_usage = answer.get("usage")
        out = [
            typed
            for chunk in completion_chunks(completion, include_usage=True)
            for typed in self._events.feed(chunk)
        ]
        out += self._events.finish()
        self.chunks = self.deltas = len(out)
        self.done = self._closed = True
        return _typed(out)

    def _relay(self, events: list[Event]) -> bytes:
        out: list[dict[str, Any]] = []
        for event in events:
            parsed = decoded(event.data)
            if parsed is None:
                self.malformed += 1
                self._chunks.unread(event.event)
                continue
            if parsed.get("type") == "content_block_delta":
                self.deltas += 1
            for chunk in self._translate(self._chunks.feed, parsed, self._chunks.unread):
                out += self._events.feed(chunk)
        if self._events.error is not None:
            self.error = str(self._events.error["message"])
        self.done = self._chunks.done or self._events.error is not None
        self.chunks += len(out)
        return _typed(out)

    def _end(self) -> bytes:
        if self._events.error is not None:
            return b""
        if not self._chunks.done:
            self.error = "stream ended before message_stop"
            return _typed(self._events.fail(self.error))
        return _typed(self._events.finish())

"""Stream translators, sans I/O: a provider's event bytes in, the client's event bytes out.

One translator per (provider wire format, client wire format). `generation.relay` drives
every one of them the same way; each only knows its formats:

- `feed(data)` the bytes that arrived (any split) and get the bytes to relay; `finish()` at the
  end of the provider's stream (a final event that lacked its blank line is flushed there);
- `fail(message, code)` is the client format's error event, for a relay cut short;
- `whole(answer)` turns a complete JSON answer (a provider that ignored `stream: true`) into
  the equivalent event stream;
- `used()` is what the provider reported consuming (None when it reported nothing), and
  `output_tokens` the gateway's estimate of the output relayed so far (one token per content
  event: providers stream about one token per event);
- `chunks` counts the client events written (errors excluded), `malformed` the provider events
  skipped because they could not be read (never fatal), `error` the provider's in-stream
  error message (unsanitized), and `done` turns true once the stream's last event is out.

Passed-through streams are not decoded event by event (the hot path stays parse-free): only
events that may carry usage or an error are, and the others are checked for their framing (a
JSON object from `{` to `}`) before they are relayed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from otari_server import jsonio
from otari_server.accounting import counts
from otari_server.accounting.counts import consumption
from otari_server.accounting.prices import Consumption
from otari_server.translate import chat_via_messages as anthropic_wire
from otari_server.translate.chat_via_messages import ChatStreamTranslator
from otari_server.translate.messages_via_chat import MessageStreamTranslator
from otari_server.translate.sse import DONE_EVENT, Event, SSEParser, encode, events, plain_prefix
from otari_server.translate.usage import anthropic_consumption, anthropic_used

log = logging.getLogger("otari.relay")

# Events of a passed-through Anthropic stream that carry usage or an error.
_METERED = frozenset({"message_start", "message_delta", "error"})


class StreamTranslator:
    """The shape every translator has; subclasses implement `_relay` and the format hooks."""

    # Text streams carry in-band error events and are scrubbed; binary ones (audio) neither.
    text = True

    def __init__(self) -> None:
        self._parser = SSEParser()
        self.chunks = 0
        self.deltas = 0  # content events seen: the output estimate
        self.malformed = 0
        self._misread = False  # whether an event's shape made the translator fail
        self.error: str | None = None
        self.done = False
        self._closed = False

    @property
    def output_tokens(self) -> int:
        """The gateway's estimate of the output tokens relayed so far."""
        return self.deltas

    def feed(self, data: bytes) -> bytes:
        """Translate what `data` completes."""
        return self._relay(self._parser.feed(data))

    def finish(self) -> bytes:
        """The provider's stream ended (or its last event came): flush a final event that
        lacked its blank line, close the client's stream. Only the first call returns bytes."""
        if self._closed:
            return b""
        self._closed = True
        return self._relay(self._parser.close()) + self._end()

    def fail(self, message: str, code: str) -> bytes:
        """The client format's error event for a stream cut short."""
        raise NotImplementedError

    def whole(self, answer: dict[str, Any]) -> bytes:
        """A complete JSON answer as the client's whole event stream (raises on a bad shape);
        `done` afterwards, and `finish()` adds nothing."""
        raise NotImplementedError

    def used(self) -> Consumption | None:
        """What the provider reported consuming; None when it reported nothing."""
        raise NotImplementedError

    def _relay(self, events: list[Event]) -> bytes:
        raise NotImplementedError

    def _end(self) -> bytes:
        return b""

    def _translate(
        self,
        feed: Callable[[dict[str, Any]], list[dict[str, Any]]],
        parsed: dict[str, Any],
        unread: Callable[[object], None] | None = None,
    ) -> list[dict[str, Any]]:
        """`feed(parsed)`: one provider event through a translator; an event of a shape the
        translator cannot read (`"delta": "x"`, `"message": 5`) is skipped and counted as
        malformed, as unparsable JSON is, instead of cutting the client's stream.

        The first such event of a stream is logged with its traceback: from the exception
        alone, a provider's odd event and a bug in a translator look the same. `unread` is
        told the skipped event's type.
        """
        try:
            return feed(parsed)
        except (AttributeError, TypeError, KeyError, IndexError, ValueError):
            self.malformed += 1
            if unread is not None:
                unread(parsed.get("type"))
            if not self._misread:
                self._misread = True
                log.warning(
                    "skipped a provider stream event the translator could not read", exc_info=True
                )
            return []


def decoded(data: str) -> dict[str, Any] | None:
    """An event's JSON object, or None when it is not one."""
    try:
        parsed = jsonio.parse(data)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def framed(data: str) -> bool:
    """Whether an event looks like a whole JSON object (a cheap check, no parse)."""
    if data.startswith("{") and data.endswith("}"):
        return True
    stripped = data.strip()
    return stripped[:1] == "{" and stripped[-1:] == "}"


def chat_error_event(message: str, code: str, kind: str = "upstream_error") -> bytes:
    """An OpenAI-style error sent down a chat stream (the SDKs raise it)."""
    return encode({"error": {"message": message, "type": kind, "param": None, "code": code}})


def anthropic_error_event(message: str, kind: str = "api_error") -> bytes:
    """Anthropic's own error event."""
    return encode({"type": "error", "error": {"type": kind, "message": message}}, "error")


def completion_chunks(completion: Mapping[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    """A chat.completion as the chunks of a chat stream (without [DONE]); pure."""
    envelope = {
        "id": completion.get("id", ""),
        "object": "chat.completion.chunk",
        "created": completion.get("created") or int(time.time()),
        "model": completion.get("model", ""),
    }
    if completion.get("system_fingerprint"):
        envelope["system_fingerprint"] = completion["system_fingerprint"]

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        out = {
            **envelope,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            out["usage"] = None  # as OpenAI does on every chunk but the last
        return out

    choice = completion["choices"][0]
    message = choice["message"]
    chunks = [chunk({"role": "assistant", "content": ""})]
    for key in ("reasoning_content", "content", "refusal"):
        if isinstance(message.get(key), str) and message[key]:
            chunks.append(chunk({key: message[key]}))
    for index, call in enumerate(message.get("tool_calls") or ()):
        chunks.append(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call.get("id"),
                            "type": call.get("type", "function"),
                            "function": call.get("function"),
                        }
                    ]
                }
            )
        )
    chunks.append(chunk({}, choice.get("finish_reason") or "stop"))
    if include_usage:
        chunks.append({**envelope, "choices": [], "usage": completion.get("usage")})
    return chunks


class AudioPassThrough(StreamTranslator):
    """Audio bytes passed on unbuffered and unread; the input's characters are billed.

    The provider charges for the input once it has accepted it, so every outcome (success,
    client gone, cut-off stream) bills the characters. Audio has no in-band error: a relay
    cut short ends the response without its last chunk, so the client sees a broken transfer
    rather than a complete but truncated file."""

    text = False

    def __init__(self, characters: int) -> None:
        super().__init__()
        self._characters = characters

    def feed(self, data: bytes) -> bytes:
        self.chunks += 1
        return data

    def finish(self) -> bytes:
        self.done = True
        return b""

    def fail(self, message: str, code: str) -> bytes:
        return b""

    def used(self) -> Consumption | None:
        return Consumption(characters=self._characters)


# -- /v1/chat/completions ----------------------------------------------------------------------


class ChatPassThrough(StreamTranslator):
    """OpenAI chat chunks passed on as they come, usage noted; otari's own usage chunk hidden.

    With `strip_usage` (the client did not ask for usage; otari did, to bill), the client gets
    exactly what it would have got without the option: the usage-only chunk is dropped whatever
    its shape (empty `choices`, or choices with an empty delta and no finish), `usage` is
    removed from a chunk that carries content too, and the `"usage":null` OpenAI adds to every
    other chunk is removed.
    """

    def __init__(self, strip_usage: bool) -> None:
        super().__init__()
        self._strip = strip_usage
        self._usage: dict[str, Any] | None = None

    @property
    def output_tokens(self) -> int:
        return max(self.deltas - 1, 0)  # less the role chunk

    def used(self) -> Consumption | None:
        return consumption(self._usage) if counts.reports_tokens(self._usage) else None

    def fail(self, message: str, code: str) -> bytes:
        return chat_error_event(message, code)

    def whole(self, answer: dict[str, Any]) -> bytes:
        chunks = completion_chunks(answer, include_usage=not self._strip)
        self._usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else None
        self.chunks = self.deltas = len(chunks)
        self.done = self._closed = True
        return b"".join(encode(chunk) for chunk in chunks) + DONE_EVENT

    def feed(self, data: bytes) -> bytes:
        # The hot path of every OpenAI-type stream: the plain content events of a read (all
        # but the last few of a stream) are relayed as they came, with no per-event work;
        # the events from the first that may carry usage or an error, or is not plain, are
        # parsed one by one.
        complete = self._parser.complete(data)
        cut, count = plain_prefix(complete, _PARSED, DONE_EVENT)
        out = b""
        if count:
            out = self._without_null_usage(complete[:cut])
            self.chunks += count
            self.deltas += count
        if cut < len(complete):
            out += self._relay(events(complete[cut:]))
        return out

    def _relay(self, events: list[Event]) -> bytes:
        # What `feed` could not relay as it came: only events that may carry usage or an
        # error are decoded, counters kept local.
        out = []
        passed = 0
        for event in events:
            data = event.data
            if not (data.startswith("{") and data.endswith("}")) and not framed(data):
                if event.done:
                    self.done = True
                    out.append(DONE_EVENT)
                else:
                    self.malformed += 1
                continue
            if '"error"' in data or '"usage":{' in data or '"usage": {' in data:
                parsed = decoded(data)
                if parsed is None:
                    self.malformed += 1
                    continue
                problem = parsed.get("error")
                if isinstance(problem, dict):
                    self.error = str(problem.get("message", problem))
                    out.append(encode(data, event.event))
                    continue
                if isinstance(parsed.get("usage"), dict):
                    self._usage = parsed["usage"]
                    if self._strip:
                        rest = _without_usage(parsed)
                        if rest is None:
                            continue
                        data = orjson.dumps(rest).decode()
            passed += 1
            out.append(encode(data, event.event))
        if passed:
            self.chunks += passed
            self.deltas += passed
        if not out:
            return b""
        return self._without_null_usage(b"".join(out))

    def _without_null_usage(self, relayed: bytes) -> bytes:
        if self._strip and b'"usage":' in relayed:
            # Once per read, not per event: `,"usage":null` can only be JSON structure (in a
            # string value its quotes would be escaped).
            relayed = relayed.replace(b',"usage":null', b"")
            if b', "usage": null' in relayed:
                relayed = relayed.replace(b', "usage": null', b"")
        return relayed


# What sends an event of a passed-through chat stream down the parsing path: usage or an
# error (a key, or a whole string value: inside a string a quote is escaped).
_PARSED = (b'"usage":{', b'"usage": {', b'"error"')


def _without_usage(chunk: dict[str, Any]) -> dict[str, Any] | None:
    """A chunk without the usage otari asked for; None when nothing else is left in it."""
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not any(
        isinstance(choice, dict)
        and (choice.get("delta") or choice.get("finish_reason") or choice.get("logprobs"))
        for choice in choices
    ):
        return None
    return {key: value for key, value in chunk.items() if key != "usage"}


class AnthropicToChat(StreamTranslator):
    """Anthropic Messages events translated into OpenAI chat chunks (the client's `model`;
    a usage chunk at the end when the client asked for it)."""

    def __init__(self, *, model: str, include_usage: bool) -> None:
        super().__init__()
        self._model = model
        self._include_usage = include_usage
        self._translator = ChatStreamTranslator(model=model, include_usage=include_usage)
        self._whole_usage: object = None  # a whole JSON answer's usage, as the provider sent it

    def used(self) -> Consumption | None:
        return anthropic_used(self._whole_usage, self._translator, self.deltas)

    def fail(self, message: str, code: str) -> bytes:
        return chat_error_event(message, code)

    def whole(self, answer: dict[str, Any]) -> bytes:
        completion = anthropic_wire.to_chat_completion(answer, model=self._model)
        self._whole_usage = answer.get("usage")
        chunks = completion_chunks(completion, self._include_usage)
        self.chunks = self.deltas = len(chunks)
        self.done = self._closed = True
        return b"".join(encode(chunk) for chunk in chunks) + DONE_EVENT

    def _relay(self, events: list[Event]) -> bytes:
        out = []
        for event in events:
            parsed = decoded(event.data)
            if parsed is None:
                self.malformed += 1
                self._translator.unread(event.event)
                continue
            if parsed.get("type") == "content_block_delta":
                self.deltas += 1
            for chunk in self._translate(self._translator.feed, parsed, self._translator.unread):
                if "error" in chunk:
                    self.error = str(chunk["error"].get("message", "upstream stream failed"))
                else:
                    self.chunks += 1
                out.append(encode(chunk))
        self.done = self._translator.done
        return b"".join(out)

    def _end(self) -> bytes:
        # [DONE] closes the chat stream unless the provider reported an error.
        return b"" if self.error is not None else DONE_EVENT


# -- /v1/messages ------------------------------------------------------------------------------


class MessagesPassThrough(StreamTranslator):
    """Anthropic events passed on whole, metered from message_start and message_delta."""

    def __init__(self) -> None:
        super().__init__()
        self._usage: dict[str, object] = {}
        self._finished = False

    def used(self) -> Consumption | None:
        if not counts.reports_tokens(self._usage):
            return None
        usage = dict(self._usage)
        if not self._finished:  # cut short: message_start's output count is a placeholder
            placeholder = usage.get("output_tokens")
            usage["output_tokens"] = (
                max(placeholder, self.deltas)
                if isinstance(placeholder, int) and not isinstance(placeholder, bool)
                else self.deltas
            )
        return anthropic_consumption(usage)

    def fail(self, message: str, code: str) -> bytes:
        return anthropic_error_event(message)

    def whole(self, answer: dict[str, Any]) -> bytes:
        events = message_events(answer)
        self._count(answer.get("usage"))
        self._finished = self.done = self._closed = True
        self.chunks = self.deltas = len(events)
        return b"".join(encode(event, event["type"]) for event in events)

    def _count(self, usage: object) -> None:
        # Anthropic reports cumulative totals, so later numbers replace earlier ones (a null
        # is no report); whatever else is kept, for anthropic_consumption to check.
        if isinstance(usage, dict):
            self._usage.update({k: v for k, v in usage.items() if v is not None})

    def _relay(self, events: list[Event]) -> bytes:
        out = []
        for event in events:
            name = event.event
            if not framed(event.data):
                self.malformed += 1
                continue
            if name == "content_block_delta":
                self.deltas += 1
            elif name in _METERED:
                parsed = decoded(event.data)
                if parsed is None:
                    self.malformed += 1
                    continue
                if name == "error":
                    problem = parsed.get("error")
                    problem = problem if isinstance(problem, dict) else {}
                    self.error = str(problem.get("message") or "upstream stream failed")
                else:
                    if name == "message_delta":
                        self._finished = True
                    message = parsed.get("message")
                    self._count(
                        parsed.get("usage")
                        or (message.get("usage") if isinstance(message, dict) else None)
                    )
            elif name == "message_stop":
                self.done = True
            if name != "error":
                self.chunks += 1
            out.append(encode(event.data, name))
        return b"".join(out)


def message_events(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    """An Anthropic message as its stream event sequence (message_start ... message_stop)."""
    reported = message.get("usage")
    usage: dict[str, Any] = reported if isinstance(reported, dict) else {}
    start = {key: value for key, value in message.items() if key not in ("content", "usage")}
    start.update(
        content=[], stop_reason=None, stop_sequence=None, usage={**usage, "output_tokens": 0}
    )
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(message.get("content") or ()):
        kind = block.get("type")
        opened: dict[str, Any]
        delta: dict[str, Any] | None
        if kind == "text":
            opened, delta = (
                {"type": "text", "text": ""},
                {"type": "text_delta", "text": block.get("text", "")},
            )
        elif kind == "thinking":
            opened, delta = (
                {"type": "thinking", "thinking": ""},
                {"type": "thinking_delta", "thinking": block.get("thinking", "")},
            )
        elif kind == "tool_use":
            opened = {**block, "input": {}}
            delta = {
                "type": "input_json_delta",
                "partial_json": orjson.dumps(block.get("input") or {}).decode(),
            }
        else:
            opened, delta = dict(block), None
        events.append({"type": "content_block_start", "index": index, "content_block": opened})
        if delta is not None:
            events.append({"type": "content_block_delta", "index": index, "delta": delta})
        if kind == "thinking" and block.get("signature"):
            events.append(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "signature_delta", "signature": block["signature"]},
                }
            )
        events.append({"type": "content_block_stop", "index": index})
    events.append(
        {
            "type": "message_delta",
            "delta": {
                "stop_reason": message.get("stop_reason"),
                "stop_sequence": message.get("stop_sequence"),
            },
            "usage": {"output_tokens": usage.get("output_tokens", 0)},
        }
    )
    events.append({"type": "message_stop"})
    return events


class ChatToMessages(StreamTranslator):
    """OpenAI chat chunks translated into the Anthropic event sequence."""

    def __init__(self, translator: MessageStreamTranslator) -> None:
        super().__init__()
        self._translator = translator

    @property
    def output_tokens(self) -> int:
        return max(self.deltas - 1, 0)  # less the role chunk

    def used(self) -> Consumption | None:
        # The provider's OpenAI usage as it sent it: checked before any translation.
        reported = self._translator.reported
        return consumption(reported) if counts.reports_tokens(reported) else None

    def fail(self, message: str, code: str) -> bytes:
        return anthropic_error_event(message)

    def whole(self, answer: dict[str, Any]) -> bytes:
        self.done = self._closed = True
        events = [
            event
            for chunk in completion_chunks(answer, include_usage=True)
            for event in self._translator.feed(chunk)
        ]
        events += self._translator.finish()
        self.chunks = self.deltas = len(events)
        return _typed(events)

    def _relay(self, events: list[Event]) -> bytes:
        out: list[dict[str, Any]] = []
        for event in events:
            if event.done:
                out += self._translator.finish()
                self.done = True
                continue
            parsed = decoded(event.data)
            if parsed is None:
                self.malformed += 1
                continue
            self.deltas += 1
            translated = self._translate(self._translator.feed, parsed)
            for item in translated:
                if item["type"] == "error":
                    self.error = str(item["error"]["message"])
                    self.done = True
                else:
                    self.chunks += 1
            out += translated
        return _typed(out)

    def _end(self) -> bytes:
        return _typed(self._translator.finish())  # nothing when [DONE] already closed it


def _typed(events: Iterable[dict[str, Any]]) -> bytes:
    # The event name of an Anthropic or Responses stream event is its type.
    return b"".join(encode(event, event["type"]) for event in events)

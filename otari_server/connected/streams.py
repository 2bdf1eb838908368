"""Stream relays, sans I/O: feed upstream bytes, get OpenAI SSE bytes, usage and errors."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import orjson

from otari_server.providers.anthropic import ChatStreamTranslator
from otari_server.providers.sse import DONE_EVENT, Event, SSEParser, encode


class Relay(Protocol):
    """What the attempt loop needs from a stream, whatever the provider's wire format."""

    chunks: int  # data chunks passed on, errors excluded
    error: dict[str, Any] | None  # the provider's in-stream error, once one arrived

    @property
    def usage(self) -> dict[str, Any] | None: ...

    def feed(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


def error_event(message: str, code: str = "stream_interrupted") -> bytes:
    """An OpenAI-style error sent down an already-started stream (SDKs raise it)."""
    return encode({"error": {"message": message, "type": "upstream_error", "param": None,
                             "code": code}})


class OpenAIRelay:
    """Passes OpenAI events on as they come, noting usage; hides the usage chunk on request."""

    def __init__(self, strip_usage: bool) -> None:
        self._parser = SSEParser()
        self._strip_usage = strip_usage
        self._usage: dict[str, Any] | None = None
        self.chunks = 0
        self.error: dict[str, Any] | None = None

    @property
    def usage(self) -> dict[str, Any] | None:
        """The stream's usage chunk, once it arrived."""
        return self._usage

    def feed(self, data: bytes) -> bytes:
        """Relay what `data` completes."""
        return self._relay(self._parser.feed(data))

    def finish(self) -> bytes:
        """Relay a final event that lacked its blank line."""
        return self._relay(self._parser.close())

    def _relay(self, events: Iterable[Event]) -> bytes:
        out = []
        for event in events:
            if event.done:
                out.append(DONE_EVENT)
                continue
            # Parse only the rare events that may carry usage or an error; relay the rest as is.
            if '"usage"' in event.data or '"error"' in event.data:
                parsed = _object(event.data)
                if isinstance(parsed.get("error"), dict):
                    self.error = parsed["error"]
                    out.append(encode(event.data, event.event))
                    continue
                if isinstance(parsed.get("usage"), dict):
                    self._usage = parsed["usage"]
                    if self._strip_usage and not parsed.get("choices"):
                        continue
            self.chunks += 1
            out.append(encode(event.data, event.event))
        return b"".join(out)


class AnthropicRelay:
    """Translates Anthropic Messages events into OpenAI chat chunks."""

    def __init__(self, translator: ChatStreamTranslator) -> None:
        self._parser = SSEParser()
        self._translator = translator
        self.chunks = 0
        self.error: dict[str, Any] | None = None

    @property
    def usage(self) -> dict[str, Any] | None:
        """Usage as OpenAI reports it, from the counts seen so far."""
        return self._translator.usage

    def feed(self, data: bytes) -> bytes:
        """Translate what `data` completes."""
        return self._translate(self._parser.feed(data))

    def finish(self) -> bytes:
        """Translate what is left; end with [DONE] unless the provider reported an error."""
        out = self._translate(self._parser.close())
        return out if self.error is not None else out + DONE_EVENT

    def _translate(self, events: Iterable[Event]) -> bytes:
        out = []
        for event in events:
            decoded = _object(event.data)
            if not decoded:
                self.error = {"message": "the provider sent a malformed stream event"}
                out.append(error_event(self.error["message"], "malformed_event"))
                continue
            for chunk in self._translator.feed(decoded):
                if "error" in chunk:
                    self.error = chunk["error"]
                else:
                    self.chunks += 1
                out.append(encode(chunk))
        return b"".join(out)


def _object(data: str) -> dict[str, Any]:
    """An event's JSON object, or {} when it is not one."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}

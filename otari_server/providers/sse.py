"""Server-sent events: an incremental parser for upstream streams and a serializer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

DONE = "[DONE]"
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched event: its `event:` name (None when absent) and joined `data:` lines."""

    data: str
    event: str | None = None
    id: str | None = None

    @property
    def done(self) -> bool:
        """True for OpenAI's `data: [DONE]` terminator."""
        return self.data == DONE

    def json(self) -> Any:
        """The data decoded as JSON."""
        return json.loads(self.data)


class SSEParser:
    """Feed bytes as they arrive, in any split; get back the events they complete."""

    def __init__(self) -> None:
        self._pending = b""
        self._started = False

    def feed(self, chunk: bytes) -> list[Event]:
        """Parse what `chunk` completes; an unfinished event waits for the next call."""
        buffer = self._pending + chunk if self._pending else chunk
        if not self._started and buffer:
            if len(buffer) < len(_BOM) and _BOM.startswith(buffer):
                self._pending = buffer
                return []
            self._started = True
            buffer = buffer.removeprefix(_BOM)
        held = b""
        if b"\r" in buffer:
            # A trailing CR may be half of a CRLF split across chunks: decide next time.
            if buffer.endswith(b"\r"):
                buffer, held = buffer[:-1], b"\r"
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        blocks = buffer.split(b"\n\n")
        self._pending = blocks.pop() + held
        return [event for block in blocks if (event := _parse(block)) is not None]

    def close(self) -> list[Event]:
        """End of stream: dispatch a final event that lacked its blank line."""
        rest, self._pending = self._pending, b""
        event = _parse(rest.replace(b"\r\n", b"\n").replace(b"\r", b"\n"))
        return [] if event is None else [event]


def _parse(block: bytes) -> Event | None:
    if not block:
        return None
    data: list[str] = []
    name = ident = None
    for line in block.decode("utf-8", "replace").split("\n"):
        if not line or line[0] == ":":
            continue  # blank separator or comment (keep-alive)
        field, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
        elif field == "id" and "\0" not in value:
            ident = value
    if not data:
        return None  # the SSE spec dispatches nothing for an event without data
    return Event(data="\n".join(data), event=name or None, id=ident)


def encode(data: Any, event: str | None = None) -> bytes:
    """Serialize one event; dicts and lists become compact JSON, strings go as they are."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    lines = "".join(f"data: {line}\n" for line in text.split("\n"))
    head = f"event: {event}\n" if event else ""
    return f"{head}{lines}\n".encode()


DONE_EVENT = encode(DONE)

"""Server-sent events: an incremental parser for upstream streams and a serializer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from otari_server import jsonio

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
        return jsonio.parse(self.data)


class SSEParser:
    """Feed bytes as they arrive, in any split; get back the events they complete."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []  # an unfinished event, line endings already normalized
        self._cr = False  # a trailing CR held back: it may be half of a CRLF split across chunks
        self._started = False

    def feed(self, chunk: bytes) -> list[Event]:
        """Parse what `chunk` completes; an unfinished event waits for the next call."""
        return events(self.complete(chunk))

    def complete(self, chunk: bytes) -> bytes:
        """The events `chunk` completes, as bytes: line endings normalized to LF, a leading
        BOM removed, each event ending in its blank line (b"" when none is complete yet).

        For a caller that can relay well-formed events as they are; `events()` parses them.
        """
        # Fast path for a large event arriving in many pieces: remember the piece, scan nothing.
        if (
            self._parts
            and not self._cr
            and b"\r" not in chunk
            and b"\n\n" not in chunk
            and not (chunk[:1] == b"\n" and self._parts[-1][-1:] == b"\n")
        ):
            self._parts.append(chunk)
            return b""
        buffer = (
            b"".join(self._parts) + (b"\r" if self._cr else b"") + chunk
            if self._parts or self._cr
            else chunk
        )
        if not self._started:
            if len(buffer) < len(_BOM) and _BOM.startswith(buffer):
                self._parts, self._cr = [buffer], False
                return b""
            self._started = True
            buffer = buffer.removeprefix(_BOM)
        self._cr = buffer.endswith(b"\r")
        if self._cr:
            buffer = buffer[:-1]
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = buffer.rfind(b"\n\n") + 2
        if end == 1:  # no blank line yet
            self._parts = [buffer] if buffer else []
            return b""
        self._parts = [buffer[end:]] if end < len(buffer) else []
        return buffer[:end]

    def close(self) -> list[Event]:
        """End of stream: dispatch a final event that lacked its blank line."""
        rest = b"".join(self._parts)
        self._parts, self._cr = [], False
        event = _parse(rest)
        return [] if event is None else [event]


def events(complete: bytes) -> list[Event]:
    """The events in `complete` (what `SSEParser.complete` returned)."""
    blocks = complete.split(b"\n\n")
    blocks.pop()  # what follows the last blank line: nothing
    return [event for block in blocks if (event := _parse(block)) is not None]


def plain_prefix(complete: bytes, markers: tuple[bytes, ...], end: bytes) -> tuple[int, int]:
    """The run of plain events `complete` (what `SSEParser.complete` returned) starts with,
    which a pass-through may relay as they came: (its length in bytes, its event count).

    Plain events are `data: {...}` lines of valid UTF-8, one line each, and the run stops
    before the first event holding one of `markers` (what the caller must parse) and before
    `end` (the stream's last event) when `complete` ends with it. (0, 0) when the run is not
    plain throughout (comments, `event:` or `id:` fields, data over several lines): parse it.
    Checked by counting, with no work per event: when the only line breaks are the blank
    lines after each event, every event starts with `data: {` and ends with `}`.
    """
    cut = len(complete)
    for marker in markers:
        found = complete.find(marker, 0, cut)
        if found >= 0:
            cut = found
    if cut < len(complete):
        cut = complete.rfind(b"\n\n", 0, cut) + 2 if cut else 0
    elif complete.endswith(end):
        cut -= len(end)
    run = complete[:cut]
    if not (run.startswith(b"data: {") and run.endswith(b"}\n\n")):
        return 0, 0
    count = run.count(b"}\n\ndata: {") + 1
    if run.count(b"\n") != 2 * count or not (run.isascii() or _utf8(run)):
        return 0, 0
    return cut, count


def _utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def _parse(block: bytes) -> Event | None:
    if not block:
        return None
    # The shapes providers send, without the general loop: `data: ...` (OpenAI) and
    # `event: ...` then `data: ...` (Anthropic), one line each.
    if block.startswith(b"data: ") and b"\n" not in block:
        return Event(data=block[6:].decode("utf-8", "replace"))
    if block.startswith(b"event: ") and block.count(b"\n") == 1:
        head, _, tail = block.partition(b"\n")
        if tail.startswith(b"data: "):
            kind = head[7:].decode("utf-8", "replace")
            return Event(data=tail[6:].decode("utf-8", "replace"), event=kind or None)
    data: list[str] = []
    name: str | None = None
    ident: str | None = None
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


# For what orjson cannot write (an integer past 64 bits, a key that is not a string, a lone
# surrogate such as "\ud83d", which the standard decoder lets through): ASCII with escapes,
# which is valid JSON and UTF-8 whatever the strings hold.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def encode(data: Any, event: str | None = None) -> bytes:
    """Serialize one event; dicts and lists become compact JSON (UTF-8, as the providers
    write it), strings go as they are."""
    if isinstance(data, str):
        if "\n" in data:
            lines = "".join(f"data: {line}\n" for line in data.split("\n")).encode()
        else:
            lines = f"data: {data}\n".encode()
    else:
        try:
            payload = orjson.dumps(data)
        except TypeError:
            payload = _COMPACT.encode(data).encode()
        lines = b"data: " + payload + b"\n"  # compact JSON has no line break
    if event:
        return b"event: " + event.encode() + b"\n" + lines + b"\n"
    return lines + b"\n"


DONE_EVENT = encode(DONE)

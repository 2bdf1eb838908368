"""A provider on loopback that answers with exactly the bytes a test scripts.

For the stream shapes real providers send and the well-behaved fakes do not: a final event
without its blank line, malformed events, usage on a chunk with non-empty choices, a JSON
answer to a stream request, a body that is neither, or a stream that stays open after its
last event. Serves every generation path (chat, messages, responses) the same way.

    with ScriptedProvider() as fake:
        fake.push(Script([b'data: {"a": 1}\\n\\n', b"data: [DONE]"]))
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.support.loopback import LoopbackServer


@dataclass(frozen=True)
class Script:
    """One answer: its content type, the body's pieces (each written and flushed), and
    whether to keep the connection open afterwards (until the client goes away)."""

    parts: tuple[bytes, ...] | list[bytes]
    content_type: str = "text/event-stream"
    hold: bool = False
    # Set by the test: the body's end (the chunked terminator) is written only then, as a
    # provider's can come in a later packet than its last event.
    end_when: threading.Event | None = None


def sse(payload: dict[str, Any], event: str | None = None) -> bytes:
    """One event as a provider writes it."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(payload)}\n\n".encode()


class ScriptedProvider(LoopbackServer):
    """Answers each POST with the next queued `Script`; `closed` counts answers the client
    (the gateway) hung up on before they ended."""

    name = "scripted-provider"

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[dict[str, Any]] = []
        self.peers: list[tuple[str, int]] = []  # the connection (client address) of each request
        self._scripts: deque[Script] = deque()
        self._lock = threading.Lock()
        self._closed = 0
        self._condition = threading.Condition()

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def push(self, script: Script) -> None:
        with self._lock:
            self._scripts.append(script)

    def wait_closed(self, count: int = 1, timeout: float = 10.0) -> None:
        """Block until `count` answers were cut off by the gateway."""
        with self._condition:
            if not self._condition.wait_for(lambda: self._closed >= count, timeout):
                raise TimeoutError(f"{self._closed} of {count} answers were closed")

    def application(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for path in ("/v1/chat/completions", "/v1/messages", "/v1/responses"):
            app.router.add_post(path, self._answer)
        return app

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(json.loads(await request.read()))
        transport = request.transport
        self.peers.append(transport.get_extra_info("peername") if transport else ("", 0))
        with self._lock:
            script = self._scripts.popleft()
        response = web.StreamResponse(headers={"Content-Type": script.content_type})
        await response.prepare(request)
        try:
            for part in script.parts:
                await response.write(part)
            if script.hold:
                await asyncio.Event().wait()  # until the gateway hangs up (cancelled)
            if script.end_when is not None:
                await asyncio.get_running_loop().run_in_executor(None, script.end_when.wait, 10)
        except (asyncio.CancelledError, ConnectionError):
            with self._condition:
                self._closed += 1
                self._condition.notify_all()
            raise
        await response.write_eof()
        return response

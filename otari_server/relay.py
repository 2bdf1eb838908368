"""A streaming response that notices when the client goes away, and stops the relay."""

from __future__ import annotations

import contextlib

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class RelayResponse(StreamingResponse):
    """StreamingResponse that always watches for http.disconnect.

    Starlette skips the watch under ASGI 2.4 and relies on a failing send, which never comes
    while the provider is quiet; we must know at once, to stop paying for tokens nobody reads
    and to record the disconnect.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def stream() -> None:
                # An OSError means the client is gone; the watcher sees the disconnect.
                with contextlib.suppress(OSError):
                    await self.stream_response(send)
                group.cancel_scope.cancel()

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()

            group.start_soon(stream)
            group.start_soon(watch)
        # Close the relay generator now, not at garbage collection, so it settles promptly.
        close = getattr(self.body_iterator, "aclose", None)
        if close is not None:
            await close()

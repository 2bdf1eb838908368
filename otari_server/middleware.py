"""Per-request context as plain ASGI (cheap on the hot path): request id, body size limit."""

from __future__ import annotations

import itertools
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from otari_server.errors import error_body, shape_for
from otari_server.jsonio import dumps

REQUEST_ID_HEADER = b"x-request-id"
# Anthropic's name for it: the anthropic SDK sets `_request_id` (and error.request_id) from it.
ANTHROPIC_REQUEST_ID_HEADER = b"request-id"


class RequestContext:
    """Give every response an X-Request-ID and refuse declared bodies over the limit."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, max_header_bytes: int = 65536,
                 ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_headers = max_header_bytes
        # A random per-process prefix and a counter: unique across instances, and far
        # cheaper than a uuid4 (a urandom call) per request.
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = f"{self._prefix}{next(self._counter):016x}"
        scope["otari.request_id"] = request_id
        headers = [(REQUEST_ID_HEADER, request_id.encode())]
        if shape_for(scope["path"]) == "anthropic":
            headers.append((ANTHROPIC_REQUEST_ID_HEADER, request_id.encode()))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        if b"%00" in scope.get("raw_path", b"") or b"%00" in scope["query_string"]:
            # A NUL can be stored in no database column and means nothing in a path.
            await _refuse(scope, send_with_id, 400, "NUL characters are not allowed in URLs")
            return
        length = _content_length(scope)
        if length is not None and length > self.max_body_bytes:
            await _refuse(scope, send_with_id, 413,
                          f"Request body is over the {self.max_body_bytes}-byte limit")
            return
        if sum(len(name) + len(value) for name, value in scope["headers"]) > self.max_headers:
            await _refuse(scope, send_with_id, 431,
                          f"Request headers are over the {self.max_headers}-byte limit")
            return
        await self.app(scope, receive, send_with_id)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(scope: Scope, send: Send, status: int, message: str) -> None:
    body = dumps(error_body(shape_for(scope["path"]), status, message, "invalid_request_error",
                            "request_too_large", "request_too_large")).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

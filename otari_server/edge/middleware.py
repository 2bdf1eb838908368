"""Per-request context as plain ASGI (cheap on the hot path): request id, body size limit."""

from __future__ import annotations

import itertools
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from otari_server.errors import PayloadTooLarge, error_body, shape_for
from otari_server.jsonio import dumps

REQUEST_ID_HEADER = b"x-request-id"
# Anthropic's name for it: the anthropic SDK sets `_request_id` (and error.request_id) from it.
ANTHROPIC_REQUEST_ID_HEADER = b"request-id"
# Answers to authenticated calls hold one caller's data: no shared cache (proxy, CDN) may
# keep them, and a cache that does must key them by the credential headers.
_PRIVATE = (b"cache-control", b"no-store, private")
_VARY = b"Authorization, x-api-key, Otari-Key, AnyLLM-Key, X-AnyLLM-Key"
# Health answers hold nothing private; a cache may keep them for a few seconds.
_HEALTH = (b"cache-control", b"public, max-age=5")
# ... but not a failed one (a crash's 500, a 503): no cache may repeat it to the next caller.
_FAILED_HEALTH = (b"cache-control", b"no-store")


class RequestContext:
    """Give every response an X-Request-ID and refuse bodies over the limit, chunked or not.

    A declared Content-Length over the limit is refused before anything is read. A body
    without one (chunked) is counted as it arrives: past the limit the app's receive raises
    PayloadTooLarge, whatever the app answers is dropped, and the client gets our 413.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        max_header_bytes: int = 65536,
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
        caching = _caching(scope["path"])

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent = [*message.get("headers", []), *headers]
                if caching is _HEALTH and message["status"] >= 500:
                    sent = _with_caching(sent, _FAILED_HEALTH)
                elif caching is not None:
                    sent = _with_caching(sent, caching)
                message["headers"] = sent
            await send(message)

        if b"%00" in scope.get("raw_path", b"") or b"%00" in scope["query_string"]:
            # A NUL can be stored in no database column and means nothing in a path.
            await _refuse(scope, send_with_id, 400, "NUL characters are not allowed in URLs")
            return
        length = _content_length(scope)
        if length is not None and length > self.max_body_bytes:
            await _refuse(
                scope,
                send_with_id,
                413,
                f"Request body is over the {self.max_body_bytes}-byte limit",
            )
            return
        if sum(len(name) + len(value) for name, value in scope["headers"]) > self.max_headers:
            await _refuse(
                scope,
                send_with_id,
                431,
                f"Request headers are over the {self.max_headers}-byte limit",
            )
            return
        if length is None and _has_body(scope):
            await _LimitedBody(self.max_body_bytes, receive, send_with_id).run(self.app, scope)
            return
        await self.app(scope, receive, send_with_id)


def _caching(path: str) -> tuple[bytes, bytes] | None:
    """The Cache-Control an answer to `path` gets: private for the API, short for health."""
    if path.startswith(("/v1/", "/api/")):
        return _PRIVATE
    if path == "/health" or path.startswith("/health/"):
        return _HEALTH
    return None


def _with_caching(
    headers: list[tuple[bytes, bytes]], caching: tuple[bytes, bytes]
) -> list[tuple[bytes, bytes]]:
    """Set Cache-Control and, for private answers, Vary.

    A private answer is no-store whatever the route said (an event stream's no-cache still
    lets a cache keep it); a health answer keeps a Cache-Control its route set.
    """
    if caching is not _PRIVATE:
        if not any(name.lower() == b"cache-control" for name, _ in headers):
            headers.append(caching)
        return headers
    sent = []
    vary = False
    for name, value in headers:  # one pass: on every API answer
        lowered = name.lower()
        if lowered == b"cache-control":
            continue
        if lowered == b"vary" and not vary:  # CORS adds Vary: Origin; keep it
            value, vary = value + b", " + _VARY, True
        sent.append((name, value))
    sent.append(caching)
    if not vary:
        sent.append((b"vary", _VARY))
    return sent


def _has_body(scope: Scope) -> bool:
    return any(name == b"transfer-encoding" for name, _ in scope["headers"])


class _LimitedBody:
    """One chunked request: its body counted as it is received, cut at the limit."""

    def __init__(self, limit: int, receive: Receive, send: Send) -> None:
        self.limit = limit
        self._receive = receive
        self._send = send
        self.size = 0
        self.over = False
        self.started = False

    async def run(self, app: ASGIApp, scope: Scope) -> None:
        try:
            await app(scope, self.receive, self.send)
        except Exception:
            # Whatever the app made of the cut-off body (its own 400, a re-raised error),
            # the answer is ours.
            if not self.over or self.started:
                raise
        if self.over and not self.started:
            self.started = True
            await _refuse(scope, self._send, 413, self.message)

    @property
    def message(self) -> str:
        return f"Request body is over the {self.limit}-byte limit"

    async def receive(self) -> Message:
        if self.over:
            raise PayloadTooLarge(self.message)
        message = await self._receive()
        if message["type"] == "http.request":
            self.size += len(message.get("body", b""))
            if self.size > self.limit:
                self.over = True
                raise PayloadTooLarge(self.message)
        return message

    async def send(self, message: Message) -> None:
        if self.over and not self.started:
            return  # the app's answer to a cut-off body; run() sends the 413 instead
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


# What the edge refuses before any route runs: status -> (OpenAI type, Anthropic type, code).
# Anthropic documents request_too_large for an oversized request (413); a bad URL and too
# many header bytes are plain invalid requests in both shapes.
_REFUSALS = {
    400: ("invalid_request_error", "invalid_request_error", "invalid_url"),
    413: ("invalid_request_error", "request_too_large", "request_too_large"),
    431: ("invalid_request_error", "invalid_request_error", "request_headers_too_large"),
}


async def _refuse(scope: Scope, send: Send, status: int, message: str) -> None:
    error_type, anthropic_type, code = _REFUSALS[status]
    body = dumps(
        error_body(shape_for(scope["path"]), status, message, error_type, anthropic_type, code)
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

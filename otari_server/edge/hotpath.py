"""Generation endpoints served straight from ASGI, ahead of FastAPI's routing.

FastAPI's per-request machinery (route matching over every management route, dependency
solving, exit stacks) costs about as much as the whole proxy. The generation endpoints need
none of it: they read raw JSON and answer raw bytes. They are still declared as FastAPI routes
(so /openapi.json describes them); this layer just reaches them in fewer hops.

It also refuses a management write (POST/PUT/PATCH/DELETE on keys, users, budgets, pricing)
without the master key before anything reads its body: FastAPI reads the body before it
solves the dependency that checks the key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from otari_server import errors
from otari_server.access.auth import Caller
from otari_server.deps import authenticate, require_master
from otari_server.errors import BudgetExceeded, RateLimited, ServiceUnavailable
from otari_server.generation import audio, chat, messages, moderations, proxy, responses
from otari_server.generation.endpoints import (
    CHAT,
    EMBEDDINGS,
    GENERATION,
    IMAGES_GENERATIONS,
    MESSAGES,
    MODERATIONS,
    PREFIXES,
    RERANK,
    RESPONSES,
    SPEECH,
    TRANSCRIPTIONS,
    Endpoint,
)

if TYPE_CHECKING:
    from otari_server.metrics import Metrics  # prometheus_client: only with metrics on

Handler = Callable[[Request, Caller, Endpoint], Awaitable[Response]]

# The handler of each endpoint in GENERATION (the one list); each is also a FastAPI route in
# generation/routes.py, for the OpenAPI document.
_HANDLERS: dict[Endpoint, Handler] = {
    CHAT: chat.forward_chat,
    MESSAGES: messages.forward,
    RESPONSES: responses.forward,
    EMBEDDINGS: proxy.forward_json,
    MODERATIONS: moderations.forward,
    RERANK: proxy.forward_json,
    IMAGES_GENERATIONS: proxy.forward_json,
    TRANSCRIPTIONS: audio.forward,
    SPEECH: audio.forward,
}
# A KeyError here at import is an endpoint listed without a handler.
ROUTES: dict[str, tuple[Handler, Endpoint]] = {
    prefix + endpoint.path: (_HANDLERS[endpoint], endpoint)
    for endpoint in GENERATION
    for prefix in PREFIXES
}


class HotPath:
    """POSTs to a generation endpoint go straight to their handler; the rest to the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST":
            if (
                scope["type"] == "http"
                and scope["method"] in _WRITES
                and errors.is_management(scope["path"])
            ):
                await _master_first(scope, receive, send, self.app)
                return
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        handler, endpoint = route
        metrics = request.app.state.runtime.metrics
        if metrics is not None:
            await _measured(metrics, request, handler, endpoint, send)
            return
        try:
            caller = await authenticate(request)
            response = await handler(request, caller, endpoint)
        except asyncio.CancelledError:
            response = _cut(request)
        except Exception as exc:
            response = await errors.respond(request, exc)
        await response(scope, receive, send)


def _cut(request: Request) -> Response:
    """A request cancelled before it answered (shutdown_timeout passed): settle it (usage
    row, hold released) and tell the client in JSON, rather than uvicorn's plain-text 500."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()  # the cancellation is handled: the answer below must still be sent
    runtime = request.app.state.runtime
    request_id = request.scope.get("otari.request_id")
    for call in list(runtime.calls.values()):
        if call.request_id == request_id:
            call.settle("error", error="cut at shutdown (shutdown_timeout passed)", status_code=503)
    return errors.render(
        request,
        ServiceUnavailable(
            "The gateway is shutting down and could not finish this request; retry it"
        ),
    )


# Management writes need the master key; FastAPI would read (and buffer) the body before
# solving the dependency that checks it, so the check comes first, here.
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def _master_first(scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
    """Refuse a management write without the master key before its body is read."""
    request = Request(scope, receive)
    try:
        await require_master(await authenticate(request))
    except Exception as exc:
        response = await errors.respond(request, exc)
        await response(scope, receive, send)
        return
    await app(scope, receive, send)


async def _measured(
    metrics: Metrics, request: Request, handler: Handler, endpoint: Endpoint, send: Send
) -> None:
    """The same as HotPath, counting and timing the request."""
    started = time.perf_counter()
    status = 500

    async def timed_send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            metrics.latency.labels(endpoint.path).observe(time.perf_counter() - started)
        await send(message)

    metrics.in_flight.inc()
    try:
        try:
            caller = await authenticate(request)
            response = await handler(request, caller, endpoint)
        except asyncio.CancelledError:
            response = _cut(request)
        except Exception as exc:
            if isinstance(exc, BudgetExceeded | RateLimited):
                metrics.refusals.labels(
                    "budget" if isinstance(exc, BudgetExceeded) else "rate_limit"
                ).inc()
            response = await errors.respond(request, exc)
        await response(request.scope, request.receive, timed_send)
    finally:
        metrics.in_flight.dec()
        metrics.requests.labels(endpoint.path, str(status)).inc()

"""The access log: one line per request (method, path, status, latency, request id, client,
and for generation requests the model, user, key and cost), as text or JSON.

The request's settlement (proxy.Call.settle) adds what it knows through a context variable;
the line is written when the response is finished, so a stream's line carries its cost.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("otari.access")

# What the request's handling adds to its access line (model, user, key, cost, outcome).
FIELDS: ContextVar[dict[str, Any] | None] = ContextVar("otari_access", default=None)


def note(**fields: Any) -> None:
    """Add fields to the current request's access line (nothing outside a request)."""
    current = FIELDS.get()
    if current is not None:
        current.update(fields)


class AccessLog:
    """ASGI middleware writing the access line once the response is finished."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        fields: dict[str, Any] = {}
        FIELDS.set(fields)
        status = 500  # what the server answers when the app fails before it starts a response

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            client = scope.get("client")
            line = {
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "latency_ms": round((time.perf_counter() - started) * 1000, 1),
                "request_id": scope.get("otari.request_id"),
                "client": client[0] if client else None,
                **fields,
            }
            log.info("%s", _text(line), extra={"access": line})


def _text(line: dict[str, Any]) -> str:
    """The line as `METHOD PATH STATUS LATENCYms key=value ...` (None values left out)."""
    head = f"{line['method']} {line['path']} {line['status']} {line['latency_ms']}ms"
    rest = " ".join(
        f"{name}={_plain(value)}"
        for name, value in line.items()
        if name not in ("method", "path", "status", "latency_ms") and value is not None
    )
    return f"{head} {rest}" if rest else head


def _plain(value: Any) -> str:
    # Money is a Decimal: plain notation, never an exponent.
    from decimal import Decimal

    return format(value, "f") if isinstance(value, Decimal) else str(value)

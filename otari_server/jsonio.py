"""Exact JSON for management APIs: numbers in as Decimal, Decimal out as plain JSON numbers."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Coroutine
from datetime import datetime
from decimal import Decimal
from typing import Any

import simplejson
from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number")


def loads(body: bytes | str) -> Any:
    """Parse JSON keeping every non-integer number as an exact Decimal."""
    return json.loads(body, parse_float=Decimal, parse_constant=_reject_constant)


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        # Plain notation (no exponent, no trailing zeros): 25, 0.00000015.
        return simplejson.RawJSON(format(value.normalize(), "f"))
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="python")
    raise TypeError(f"cannot serialize {type(value).__name__}")


def dumps(content: Any) -> str:
    """Serialize with Decimals as exact JSON numbers and datetimes as ISO 8601."""
    return simplejson.dumps(content, default=_default, use_decimal=False, ensure_ascii=False,
                            separators=(",", ":"))


class ExactJSONResponse(Response):
    """A JSON response whose money fields are never routed through float."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content).encode("utf-8")


class ExactRequest(Request):
    """A request whose .json() keeps numbers exact."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = loads(body)
            except (RecursionError, UnicodeDecodeError, ValueError) as exc:
                # Too deeply nested, not UTF-8, or NaN/Infinity: FastAPI answers a
                # JSONDecodeError with a 422 naming the body, as for any malformed JSON.
                if isinstance(exc, json.JSONDecodeError):
                    raise
                raise json.JSONDecodeError(f"invalid JSON: {type(exc).__name__}",
                                           body.decode("utf-8", "replace")[:100], 0) from None
        return self._json


class ExactRoute(APIRoute):
    """Route class for management routers: exact numbers in request bodies."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def exact_handler(request: Request) -> Response:
            return await handler(ExactRequest(request.scope, request.receive))

        return exact_handler

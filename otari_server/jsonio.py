"""Exact JSON for management APIs: numbers in as Decimal, Decimal out as plain JSON numbers;
and `parse`, which reads what providers and tools send.

orjson is the one library that writes money: a Decimal becomes an ``orjson.Fragment`` holding
its plain decimal notation (``0.0000000375``, never ``3.75E-8``).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Coroutine
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number")


def loads(body: bytes | str) -> Any:
    """Parse JSON keeping every non-integer number as an exact Decimal."""
    return json.loads(body, parse_float=Decimal, parse_constant=_reject_constant)


# A \\uXXXX escape of a UTF-16 surrogate: orjson refuses the text when one is unpaired.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def parse(data: bytes | str) -> Any:
    """A provider's or a tool's JSON, as orjson reads it.

    JSON's grammar (RFC 8259, section 7) allows an escaped UTF-16 surrogate without its pair
    (`"\\ud83d"`, half an emoji, which models do emit); orjson refuses such text, the standard
    library reads it into a string no UTF-8 encoder or database can take. Here each unpaired
    surrogate becomes U+FFFD, as undecodable bytes do, so the rest of the answer is kept.

    Raises orjson.JSONDecodeError (a ValueError) for what is not JSON, NaN and Infinity included.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as refused:
        raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
        if _SURROGATE_ESCAPE.search(raw) is None:
            raise
        try:
            parsed = json.loads(raw, parse_constant=_reject_constant)
        except ValueError:
            raise refused from None  # not JSON for another reason: orjson's error says where
        return _mend(parsed)


def _mend(value: Any) -> Any:
    """`value` with every unpaired surrogate in its strings (keys too) replaced by U+FFFD."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {_mend(key): _mend(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_mend(item) for item in value]
    return value


def plain(value: Decimal) -> str:
    """A Decimal in plain notation, no exponent and no trailing zeros: 25, 0.0000000375.

    Raises ValueError for NaN and infinities, which are no JSON number.
    """
    if not value.is_finite():
        raise ValueError(f"{value} is not a finite amount")
    text = format(value.normalize(), "f")
    return "0" if text == "-0" else text


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(plain(value))
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="python")
    raise TypeError(f"cannot serialize {type(value).__name__}")


# Non-string keys (ints) become strings, as the standard library does.
_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME


def dump_bytes(content: Any) -> bytes:
    """UTF-8 JSON with Decimals as exact plain numbers and datetimes as ISO 8601.

    Raises TypeError for a value JSON cannot hold.
    """
    try:
        return orjson.dumps(content, default=_default, option=_OPTIONS)
    except orjson.JSONEncodeError:
        # What orjson alone refuses but JSON holds (a client's metadata may have either):
        # integers past 64 bits and nesting past orjson's 254 levels.
        return orjson.dumps(_portable(content, 0), default=_default, option=_OPTIONS)


_INT_RANGE = range(-(2**63), 2**64)
_DEPTH = 200


def _portable(value: Any, depth: int) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value not in _INT_RANGE:
        return orjson.Fragment(str(value))
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="python")
    if depth >= _DEPTH and isinstance(value, dict | list | tuple):
        return orjson.Fragment(dump_bytes(value))  # written apart: its depth starts over
    if isinstance(value, dict):
        return {key: _portable(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_portable(item, depth + 1) for item in value]
    return value


def dumps(content: Any) -> str:
    """The same as dump_bytes, as text (for the database's JSON columns)."""
    return dump_bytes(content).decode("utf-8")


class ExactJSONResponse(Response):
    """A JSON response whose money fields are never routed through float."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dump_bytes(content)


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
                raise json.JSONDecodeError(
                    f"invalid JSON: {type(exc).__name__}", body.decode("utf-8", "replace")[:100], 0
                ) from None
        return self._json


class ExactRoute(APIRoute):
    """Route class for management routers: exact numbers in request bodies."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def exact_handler(request: Request) -> Response:
            return await handler(ExactRequest(request.scope, request.receive))

        return exact_handler

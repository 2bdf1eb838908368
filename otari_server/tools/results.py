"""Tool results: the failure a tool reports, and the size caps every result passes."""

from __future__ import annotations

import aiohttp


class ToolFailure(Exception):
    """A tool call failed; the message goes back to the model as the tool's output."""


def truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes, saying so when it was cut."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    kept = data[:limit].decode("utf-8", errors="ignore")
    return (
        f"{kept}\n[truncated: the result was {len(data)} bytes, over the gateway's limit "
        f"of {limit}]"
    )


async def read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """A backend's whole answer, or ToolFailure as soon as it passes `limit` bytes."""
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            raise ToolFailure(f"the backend's answer is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def describe(exc: BaseException) -> str:
    """A one-line account of a failure, looking inside exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

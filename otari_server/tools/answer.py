"""The loop's last completion as the client asked for it: one JSON body, or an SSE stream."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from otari_server.generation.proxy import JSON_HEADERS, SSE_HEADERS
from otari_server.tools.loop import Meter
from otari_server.tools.plan import Plan
from otari_server.translate.sse import DONE_EVENT, encode
from otari_server.translate.streams import completion_chunks


def respond(completion: dict[str, Any], plan: Plan, meter: Meter) -> Response:
    """The final answer, with the usage of every model call of the loop summed in."""
    completion = dict(completion, usage=usage(meter))
    if not plan.streaming:
        return Response(orjson.dumps(completion), headers=JSON_HEADERS)
    return Response(
        b"".join(events(completion, plan.include_usage)),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


def usage(meter: Meter) -> dict[str, Any]:
    """An OpenAI usage object for everything the loop used."""
    used = meter.used
    summed: dict[str, Any] = {
        "prompt_tokens": used.prompt_tokens,
        "completion_tokens": used.completion_tokens,
        "total_tokens": used.prompt_tokens + used.completion_tokens,
    }
    if used.cache_read_tokens or used.cache_write_tokens:
        summed["prompt_tokens_details"] = {
            "cached_tokens": used.cache_read_tokens,
            "cache_creation_tokens": used.cache_write_tokens,
        }
    return summed


def events(completion: dict[str, Any], include_usage: bool) -> list[bytes]:
    """A completion as the chunks of a chat stream, ending with [DONE] (pure)."""
    chunks = completion_chunks(completion, include_usage)
    return [*(encode(item) for item in chunks), DONE_EVENT]

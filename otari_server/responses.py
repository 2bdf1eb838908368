"""POST /v1/responses: the OpenAI Responses API.

Providers of type "openai" serve it themselves: the request goes through unchanged (but for the
model), the answer comes back unchanged, typed stream events are relayed as they arrive, and
usage is read from `response.usage` (in a stream, from the terminal response.* event).

Anthropic providers have no Responses API: the request is translated into a chat request
(providers.responses) and that into a Messages request (providers.anthropic); the answer and
the stream come back the same way, chat in the middle.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import orjson
from fastapi import Request
from starlette.responses import Response

from otari_server.auth import Caller
from otari_server.endpoints import Endpoint
from otari_server.errors import InvalidRequest, OtariError
from otari_server.pricing import Consumption
from otari_server.providers import anthropic as anthropic_wire
from otari_server.providers import responses as responses_wire
from otari_server.providers.anthropic import ChatStreamTranslator, TranslationError
from otari_server.providers.presets import ANTHROPIC_VERSION
from otari_server.providers.responses import ResponseStreamTranslator
from otari_server.providers.sse import SSEParser, encode
from otari_server.proxy import (
    JSON_HEADERS,
    SSE_HEADERS,
    Call,
    admit,
    check_fields,
    consumption,
    read_body,
    runtime_of,
    stream_outcome,
)
from otari_server.relay import RelayResponse
from otari_server.upstream import (
    failure,
    malformed,
    parse_upstream,
    read_upstream,
    sanitize,
    scrubbed,
)

# Stream events that end a response and carry it whole, usage included.
TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_STREAM_ERRORS = (aiohttp.ClientError, TimeoutError, OSError, orjson.JSONDecodeError)


async def forward(request: Request, caller: Caller, endpoint: Endpoint) -> Response:
    """POST /v1/responses: the whole story of one request."""
    runtime = runtime_of(request)
    raw, body = await read_body(request, runtime.settings.max_body_bytes)
    check_fields(body, endpoint)
    items = body["input"]
    if not isinstance(items, str) and not (
            isinstance(items, list) and all(isinstance(item, dict) for item in items)):
        raise InvalidRequest("'input' must be a string or an array of objects", param="input")
    call, upstream_model = await admit(runtime, caller, endpoint, raw, body,
                                       request.scope.get("otari.request_id"))
    streaming = body.get("stream") is True
    try:
        if call.provider.type == "anthropic":
            return await _via_messages(call, body, upstream_model, streaming)
        return await _pass_through(call, body, upstream_model, streaming)
    except OtariError as exc:
        call.settle("error", error=exc.message, status_code=exc.status)
        raise


def metered(usage: object) -> Consumption:
    """Consumption from Responses usage; input tokens include cached reads and cache writes."""
    used = consumption(usage)
    details = usage.get("input_tokens_details") if isinstance(usage, dict) else None
    written = details.get("cache_write_tokens") if isinstance(details, dict) else None
    if isinstance(written, int) and written > 0 and not used.cache_write_tokens:
        used = replace(used, cache_write_tokens=written)
    return used


# -- providers that serve the Responses API ---------------------------------------------------


async def _pass_through(call: Call, body: dict[str, Any], upstream_model: str,
                        streaming: bool) -> Response:
    response = await call.runtime.upstream.post(call.provider, call.endpoint.upstream_path,
                                                dict(body, model=upstream_model),
                                                stream=streaming)
    if response.status >= 400:
        await read_upstream(call.provider, response)  # raises the provider's refusal
    if streaming:
        return RelayResponse(_relay(call, response), media_type="text/event-stream",
                             headers=SSE_HEADERS)
    content = await read_upstream(call.provider, response)
    answer = parse_upstream(call.provider, content)
    error = answer.get("error") if answer.get("status") == "failed" else None
    if isinstance(error, dict):
        call.settle("error", metered(answer.get("usage")), _message(error))
    else:
        call.settle("success", metered(answer.get("usage")))
    return Response(content, status_code=response.status, headers=JSON_HEADERS)


def _stream_error(message: str, sequence: int) -> bytes:
    """The Responses stream's own error event, for a relay cut short."""
    return encode({"type": "error", "code": "stream_interrupted", "message": message,
                   "param": None, "sequence_number": sequence}, "error")


async def _relay(call: Call, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """Pass each typed event on as it arrives; read usage from the terminal one; settle."""
    parser = SSEParser()
    usage: dict[str, Any] | None = None
    deltas = events = 0
    status, error = "client_disconnected", None
    try:
        async for data in response.content.iter_any():
            out = []
            for event in parser.feed(data):
                events += 1
                name = event.event
                if name is not None and name.endswith(".delta"):
                    deltas += 1
                elif name in TERMINAL or name == "error" or (
                        name is None and '"type"' in event.data and not event.done):
                    # Servers that omit `event:` lines name the type in the data only.
                    parsed = orjson.loads(event.data)
                    kind = parsed.get("type") if isinstance(parsed, dict) else None
                    if kind in TERMINAL:
                        answer = parsed.get("response") or {}
                        if isinstance(answer.get("usage"), dict):
                            usage = answer["usage"]
                        if kind == "response.failed":
                            error = _message(answer.get("error"))
                    elif kind == "error":
                        error = _message(parsed)
                    elif isinstance(kind, str) and kind.endswith(".delta"):
                        deltas += 1
                out.append(encode(event.data, name))
            if out:
                yield scrubbed(call.provider, b"".join(out))
        if error is not None:
            error = sanitize(call.provider, error)
        status = "error" if error is not None else "success"
    except _STREAM_ERRORS as exc:
        status, error = "error", failure(call.provider, exc).message
        yield _stream_error(sanitize(call.provider, error), events)
    finally:
        response.release()
        status, error = stream_outcome(call, status, error, error)
        if usage is None:
            # Cut off before the final event: bill what we saw (about a token per delta).
            call.settle(status, Consumption(completion_tokens=deltas),
                        error or "stream ended before its usage report")
        else:
            call.settle(status, metered(usage), error)


def _message(error: object) -> str:
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    return "the provider reported a failed response"


# -- anthropic providers: Responses -> chat -> Messages, and back -----------------------------


async def _via_messages(call: Call, body: dict[str, Any], upstream_model: str,
                        streaming: bool) -> Response:
    try:
        chat = responses_wire.to_chat_request(body, model=upstream_model)
        outgoing = anthropic_wire.to_messages_request(
            chat, model=upstream_model,
            default_max_tokens=call.runtime.settings.default_max_tokens)
    except TranslationError as exc:
        raise InvalidRequest(str(exc)) from None
    headers = {"anthropic-version": ANTHROPIC_VERSION}
    response = await call.runtime.upstream.post(call.provider, "/messages", outgoing,
                                                headers, stream=streaming)
    if response.status >= 400:
        await read_upstream(call.provider, response)  # raises the provider's refusal
    if streaming:
        chunks = ChatStreamTranslator(model=body["model"], include_usage=True)
        events = ResponseStreamTranslator(body, model=body["model"])
        return RelayResponse(_relay_messages(call, response, chunks, events),
                             media_type="text/event-stream", headers=SSE_HEADERS)
    message = parse_upstream(call.provider, await read_upstream(call.provider, response))
    try:
        completion = anthropic_wire.to_chat_completion(message, model=body["model"])
        answer = responses_wire.to_response(completion, body, model=body["model"])
    except (AttributeError, TypeError):
        raise malformed(call.provider) from None
    call.settle("success", consumption(completion["usage"]))
    return Response(orjson.dumps(answer), headers=JSON_HEADERS)


async def _relay_messages(call: Call, response: aiohttp.ClientResponse,
                          chunks: ChatStreamTranslator,
                          events: ResponseStreamTranslator) -> AsyncIterator[bytes]:
    """Anthropic events -> chat chunks -> typed Responses events, as they arrive."""
    parser = SSEParser()
    status, error = "client_disconnected", None
    try:
        async for data in response.content.iter_any():
            out = [encode(typed, typed["type"]) for event in parser.feed(data)
                   for chunk in chunks.feed(orjson.loads(event.data))
                   for typed in events.feed(chunk)]
            if out:
                yield scrubbed(call.provider, b"".join(out))
        if events.error is not None:
            status, error = "error", sanitize(call.provider, str(events.error["message"]))
        elif not chunks.done:
            status, error = "error", "stream ended before message_stop"
            yield b"".join(encode(e, e["type"]) for e in events.fail(error))
        else:
            status = "success"
            yield b"".join(encode(e, e["type"]) for e in events.finish())
    except _STREAM_ERRORS as exc:
        status, error = "error", failure(call.provider, exc).message
        failed = events.fail(sanitize(call.provider, error))
        yield b"".join(encode(e, e["type"]) for e in failed)
    finally:
        response.release()
        status, error = stream_outcome(call, status, error,
                                       (events.error or {}).get("message"))
        call.settle(status, consumption(chunks.usage), error)

"""POST /v1/chat/completions: OpenAI-compatible providers pass through, Anthropic translated."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
from fastapi import Request
from starlette.responses import Response

from otari_server import tools
from otari_server.auth import Caller
from otari_server.endpoints import Endpoint
from otari_server.errors import InvalidRequest, OtariError
from otari_server.pricing import Consumption
from otari_server.providers import anthropic as anthropic_wire
from otari_server.providers.anthropic import ChatStreamTranslator, TranslationError
from otari_server.providers.presets import ANTHROPIC_VERSION
from otari_server.providers.sse import DONE_EVENT, SSEParser, encode
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


async def forward_chat(request: Request, caller: Caller, endpoint: Endpoint) -> Response:
    """POST /v1/chat/completions: the whole story of one request."""
    runtime = runtime_of(request)
    raw, body = await read_body(request, runtime.settings.max_body_bytes)
    check_fields(body, endpoint)
    messages = body["messages"]
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise InvalidRequest("'messages' must be an array of objects", param="messages")
    if tools.wanted(body):
        # MCP servers, web search or code execution: the gateway runs the tool loop.
        return await tools.forward(request, caller, endpoint, raw, body)
    call, upstream_model = await admit(runtime, caller, endpoint, raw, body,
                                       request.scope.get("otari.request_id"))
    streaming = body.get("stream") is True
    try:
        if call.provider.type == "anthropic":
            return await _anthropic_chat(call, body, upstream_model, streaming)
        return await _openai_chat(call, body, upstream_model, streaming)
    except OtariError as exc:
        call.settle("error", error=exc.message, status_code=exc.status)
        raise


async def _openai_chat(call: Call, body: dict[str, Any], upstream_model: str,
                       streaming: bool) -> Response:
    outgoing = dict(body, model=upstream_model)
    strip_usage = False
    if streaming:
        options = body.get("stream_options")
        options = dict(options) if isinstance(options, dict) else {}
        # We need the usage chunk to bill the stream; hide it again if nobody asked for it.
        strip_usage = not options.get("include_usage")
        outgoing["stream_options"] = {**options, "include_usage": True}
    response = await call.runtime.upstream.post(call.provider, call.endpoint.upstream_path,
                                                outgoing, stream=streaming)
    if response.status >= 400:
        await read_upstream(call.provider, response)  # raises the provider's refusal
    if streaming:
        return RelayResponse(_relay_openai(call, response, strip_usage),
                             media_type="text/event-stream", headers=SSE_HEADERS)
    content = await read_upstream(call.provider, response)
    call.settle("success", consumption(parse_upstream(call.provider, content).get("usage")))
    return Response(content, status_code=response.status, headers=JSON_HEADERS)


def _error_event(message: str) -> bytes:
    return encode({"error": {"message": message, "type": "upstream_error",
                             "code": "stream_interrupted"}})


async def _relay_openai(call: Call, response: aiohttp.ClientResponse,
                        strip_usage: bool) -> AsyncIterator[bytes]:
    """Pass each SSE event on as it arrives; read usage on the way; settle at the end."""
    parser = SSEParser()
    usage: dict[str, Any] | None = None
    chunks = 0
    status, error = "client_disconnected", None
    try:
        async for data in response.content.iter_any():
            out = []
            for event in parser.feed(data):
                if event.done:
                    out.append(DONE_EVENT)
                    continue
                chunks += 1
                if '"error"' in event.data and error is None:
                    # A provider failure reported inside the stream (OpenAI's shape).
                    problem = orjson.loads(event.data).get("error")
                    if isinstance(problem, dict):
                        error = sanitize(call.provider, str(problem.get("message", problem)))
                if '"usage":{' in event.data or '"usage": {' in event.data:
                    parsed = orjson.loads(event.data)
                    if isinstance(parsed.get("usage"), dict):
                        usage = parsed["usage"]
                        if strip_usage and not parsed.get("choices"):
                            continue
                out.append(encode(event.data, event.event))
            if out:
                yield scrubbed(call.provider, b"".join(out))
        status = "error" if error else "success"
    except (aiohttp.ClientError, TimeoutError, OSError, orjson.JSONDecodeError) as exc:
        status, error = "error", failure(call.provider, exc).message
        yield _error_event(sanitize(call.provider, error))
    finally:
        response.release()
        status, error = stream_outcome(call, status, error, error)
        if usage is None:
            # Cut off before the usage chunk: bill what we saw (about a token per chunk).
            call.settle(status, Consumption(completion_tokens=max(chunks - 1, 0)),
                        error or "stream ended before its usage report")
        else:
            call.settle(status, consumption(usage), error)


async def _anthropic_chat(call: Call, body: dict[str, Any], upstream_model: str,
                          streaming: bool) -> Response:
    try:
        outgoing = anthropic_wire.to_messages_request(
            body, model=upstream_model,
            default_max_tokens=call.runtime.settings.default_max_tokens)
    except TranslationError as exc:
        raise InvalidRequest(str(exc)) from None
    headers = {"anthropic-version": ANTHROPIC_VERSION}
    response = await call.runtime.upstream.post(call.provider, "/messages", outgoing,
                                                headers, stream=streaming)
    if response.status >= 400:
        await read_upstream(call.provider, response)  # raises the provider's refusal
    if streaming:
        options = body.get("stream_options")
        include = isinstance(options, dict) and bool(options.get("include_usage"))
        translator = ChatStreamTranslator(model=body["model"], include_usage=include)
        return RelayResponse(_relay_anthropic(call, response, translator),
                             media_type="text/event-stream", headers=SSE_HEADERS)
    message = parse_upstream(call.provider, await read_upstream(call.provider, response))
    try:
        completion = anthropic_wire.to_chat_completion(message, model=body["model"])
    except (AttributeError, TypeError):
        raise malformed(call.provider) from None
    call.settle("success", consumption(completion["usage"]))
    return Response(orjson.dumps(completion), headers=JSON_HEADERS)


async def _relay_anthropic(call: Call, response: aiohttp.ClientResponse,
                           translator: ChatStreamTranslator) -> AsyncIterator[bytes]:
    """Translate Anthropic events into OpenAI chunks as they arrive."""
    parser = SSEParser()
    status, error = "client_disconnected", None
    try:
        async for data in response.content.iter_any():
            out = [encode(chunk) for event in parser.feed(data)
                   for chunk in translator.feed(orjson.loads(event.data))]
            if out:
                yield scrubbed(call.provider, b"".join(out))
        if translator.error is not None:
            status, error = "error", sanitize(
                call.provider, str(translator.error.get("message", "upstream error")))
        else:
            status = "success"
            yield DONE_EVENT
    except (aiohttp.ClientError, TimeoutError, OSError, orjson.JSONDecodeError) as exc:
        status, error = "error", failure(call.provider, exc).message
        yield _error_event(sanitize(call.provider, error))
    finally:
        response.release()
        status, error = stream_outcome(call, status, error,
                                       (translator.error or {}).get("message"))
        call.settle(status, consumption(translator.usage), error)

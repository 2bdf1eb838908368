"""POST /v1/chat/completions: OpenAI-compatible providers pass through, Anthropic translated."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response

from otari_server import tools
from otari_server.access.auth import Caller
from otari_server.accounting.counts import consumption
from otari_server.errors import InvalidRequest, OtariError
from otari_server.generation.endpoints import Endpoint
from otari_server.generation.proxy import (
    JSON_HEADERS,
    Call,
    admit,
    check_fields,
    read_body,
    runtime_of,
    settle_answer,
)
from otari_server.generation.relay import open_relay
from otari_server.generation.routed import routed
from otari_server.providers.presets import ANTHROPIC_VERSION
from otari_server.providers.upstream import parse_upstream, read_upstream, untranslatable
from otari_server.translate import chat_via_messages as anthropic_wire
from otari_server.translate.chat_via_messages import TranslationError
from otari_server.translate.chat_via_messages_request import to_messages_request
from otari_server.translate.streams import AnthropicToChat, ChatPassThrough
from otari_server.translate.usage import anthropic_consumption


async def forward_chat(request: Request, caller: Caller, endpoint: Endpoint) -> Response:
    """POST /v1/chat/completions: the whole story of one request."""
    runtime = runtime_of(request)
    raw, body = await read_body(request, runtime.settings.max_body_bytes)
    check_fields(body, endpoint)
    messages = body["messages"]
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise InvalidRequest("'messages' must be an array of objects", param="messages")
    model_route = runtime.routes.routes.get(body["model"])
    if tools.wanted(body):
        if model_route is not None:
            raise InvalidRequest(
                f"'{body['model']}' is a route: the gateway-run tool loop needs a provider:model",
                param="model",
            )
        # MCP servers, web search or code execution: the gateway runs the tool loop.
        return await tools.forward(request, caller, endpoint, raw, body)
    streaming = body.get("stream") is True
    if model_route is not None:
        return await routed(
            runtime,
            caller,
            endpoint,
            raw,
            body,
            request.scope.get("otari.request_id"),
            model_route,
            lambda call, model: _dispatch(call, body, model, streaming),
        )
    call, upstream_model = await admit(
        runtime, caller, endpoint, raw, body, request.scope.get("otari.request_id")
    )
    try:
        return await _dispatch(call, body, upstream_model, streaming)
    except OtariError as exc:
        call.settle("error", error=exc.message, status_code=exc.status)
        raise


async def _dispatch(
    call: Call, body: dict[str, Any], upstream_model: str, streaming: bool
) -> Response:
    """Send to the admitted call's provider in its wire format; the client's response."""
    if call.provider.type == "anthropic":
        return await _anthropic_chat(call, body, upstream_model, streaming)
    return await _openai_chat(call, body, upstream_model, streaming)


async def _openai_chat(
    call: Call, body: dict[str, Any], upstream_model: str, streaming: bool
) -> Response:
    outgoing = dict(body, model=upstream_model)
    strip_usage = False
    if streaming:
        options = body.get("stream_options")
        options = dict(options) if isinstance(options, dict) else {}
        # We need the usage chunk to bill the stream; hide it again if nobody asked for it.
        strip_usage = not options.get("include_usage")
        outgoing["stream_options"] = {**options, "include_usage": True}
    response = await call.runtime.upstream.post(
        call.provider, call.endpoint.upstream_path, outgoing, stream=streaming
    )
    if response.status >= 400:
        await read_upstream(call.provider, response)  # raises the provider's refusal
    if streaming:
        return await open_relay(call, response, ChatPassThrough(strip_usage))
    content = await read_upstream(call.provider, response)
    answer = parse_upstream(call.provider, content)
    settle_answer(call, answer.get("usage"), consumption, len(content))
    return Response(content, status_code=response.status, headers=JSON_HEADERS)


async def _anthropic_chat(
    call: Call, body: dict[str, Any], upstream_model: str, streaming: bool
) -> Response:
    try:
        outgoing = to_messages_request(
            body, model=upstream_model, default_max_tokens=call.runtime.settings.default_max_tokens
        )
    except TranslationError as exc:
        raise InvalidRequest(str(exc)) from None
    headers = {"anthropic-version": ANTHROPIC_VERSION}
    response = await call.runtime.upstream.post(
        call.provider, "/messages", outgoing, headers, stream=streaming
    )
    if response.status >= 400:
        await read_upstream(call.provider, response)  # raises the provider's refusal
    if streaming:
        options = body.get("stream_options")
        include = isinstance(options, dict) and bool(options.get("include_usage"))
        translator = AnthropicToChat(model=body["model"], include_usage=include)
        return await open_relay(call, response, translator)
    content = await read_upstream(call.provider, response)
    message = parse_upstream(call.provider, content)
    try:
        completion = anthropic_wire.to_chat_completion(message, model=body["model"])
    except (AttributeError, TypeError) as exc:
        raise untranslatable(call.provider, exc) from None
    settle_answer(call, message.get("usage"), anthropic_consumption, len(content))
    return Response(orjson.dumps(completion), headers=JSON_HEADERS)

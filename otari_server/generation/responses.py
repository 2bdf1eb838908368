"""POST /v1/responses: the OpenAI Responses API.

Providers of type "openai" serve it themselves: the request goes through unchanged (but for the
model), the answer comes back unchanged, typed stream events are relayed as they arrive, and
usage is read from `response.usage` (in a stream, from the terminal response.* event).

Anthropic providers have no Responses API: the request is translated into a chat request
(translate.responses_via_chat_request) and that into a Messages request
(translate.chat_via_messages_request); the answer and
the stream come back the same way, chat in the middle.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response

from otari_server.access.auth import Caller
from otari_server.accounting.prices import Consumption
from otari_server.errors import InvalidRequest, OtariError
from otari_server.generation.endpoints import RESPONSES, Endpoint
from otari_server.generation.proxy import (
    JSON_HEADERS,
    Call,
    admit,
    check_fields,
    read_body,
    route,
    runtime_of,
    settle_answer,
    worst_case,
)
from otari_server.generation.relay import open_relay
from otari_server.generation.routed import routed
from otari_server.generation.stored_responses import check_previous, remember
from otari_server.providers.presets import ANTHROPIC_VERSION
from otari_server.providers.upstream import parse_upstream, read_upstream, untranslatable
from otari_server.runtime import Runtime
from otari_server.translate import chat_via_messages as anthropic_wire
from otari_server.translate import responses_via_chat as responses_wire
from otari_server.translate.chat_via_messages import TranslationError
from otari_server.translate.chat_via_messages_request import to_messages_request
from otari_server.translate.responses_streams import (
    AnthropicToResponses,
    ResponsesPassThrough,
    responses_consumption,
)
from otari_server.translate.responses_via_chat_request import STATEFUL, to_chat_request
from otari_server.translate.usage import anthropic_consumption


async def forward(request: Request, caller: Caller, endpoint: Endpoint) -> Response:
    """POST /v1/responses: the whole story of one request."""
    runtime = runtime_of(request)
    raw, body = await read_body(request, runtime.settings.max_body_bytes)
    check_fields(body, endpoint)
    items = body["input"]
    if not isinstance(items, str) and not (
        isinstance(items, list) and all(isinstance(item, dict) for item in items)
    ):
        raise InvalidRequest("'input' must be a string or an array of objects", param="input")
    streaming = body.get("stream") is True
    model_route = runtime.routes.routes.get(body["model"])
    if model_route is not None:
        stateful = [name for name in STATEFUL if body.get(name) is not None]
        if stateful:
            # State the provider keeps lives with one provider: a route could reach another.
            raise InvalidRequest(
                f"'{stateful[0]}' refers to state one provider keeps: send "
                f"it to that provider:model, not to the route "
                f"'{body['model']}'",
                param=stateful[0],
            )
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
    await check_previous(runtime, caller, route(runtime, caller, body["model"])[0], body)
    call, upstream_model = await admit(
        runtime,
        caller,
        endpoint,
        raw,
        body,
        request.scope.get("otari.request_id"),
        worst=_stored_context_bound(runtime, caller, raw, body),
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
        return await _via_messages(call, body, upstream_model, streaming)
    return await _pass_through(call, body, upstream_model, streaming)


def _stored_context_bound(
    runtime: Runtime, caller: Caller, raw: bytes, body: dict[str, Any]
) -> Consumption | None:
    """The worst case of a request that makes the provider read stored state.

    With `previous_response_id`, `conversation` or a stored `prompt`, the provider bills
    input the gateway never sees; all of it must fit the model's context window, so the
    window (settings.context_window) bounds the prompt. None for any other request (the
    usual body estimate applies) and for providers reached by translation, which refuse
    stored state (translate.responses_via_chat_request.STATEFUL).
    """
    if not any(body.get(name) is not None for name in STATEFUL):
        return None
    provider, _, model_key = route(runtime, caller, body["model"])
    if provider.type != "openai":
        return None
    worst = worst_case(RESPONSES, raw, body, runtime.settings.default_max_tokens)
    window = runtime.settings.context_window(model_key)
    return replace(worst, prompt_tokens=max(worst.prompt_tokens, window))


def metered(usage: object) -> Consumption:
    """Consumption from Responses usage; input tokens include cached reads and cache writes."""
    return responses_consumption(usage)


# -- providers that serve the Responses API ---------------------------------------------------


async def _pass_through(
    call: Call, body: dict[str, Any], upstream_model: str, streaming: bool
) -> Response:
    response = await call.runtime.upstream.post(
        call.provider,
        call.endpoint.upstream_path,
        dict(body, model=upstream_model),
        stream=streaming,
    )
    if response.status >= 400:
        await read_upstream(call.provider, response)  # raises the provider's refusal
    if streaming:
        events = ResponsesPassThrough()

        async def route_later_gets() -> None:  # to the provider that stores the response
            await remember(call, events.stored_id, translated=False)

        return await open_relay(call, response, events, route_later_gets)
    content = await read_upstream(call.provider, response)
    answer = parse_upstream(call.provider, content)
    error = answer.get("error") if answer.get("status") == "failed" else None
    if isinstance(error, dict):
        call.settle("error", metered(answer.get("usage")), _message(error))
    else:
        settle_answer(call, answer.get("usage"), metered, len(content))
    if answer.get("store") is not False:
        await remember(call, answer.get("id"), translated=False)
    return Response(content, status_code=response.status, headers=JSON_HEADERS)


def _message(error: object) -> str:
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    return "the provider reported a failed response"


# -- anthropic providers: Responses -> chat -> Messages, and back -----------------------------


async def _via_messages(
    call: Call, body: dict[str, Any], upstream_model: str, streaming: bool
) -> Response:
    try:
        chat = to_chat_request(body, model=upstream_model)
        outgoing = to_messages_request(
            chat, model=upstream_model, default_max_tokens=call.runtime.settings.default_max_tokens
        )
    except TranslationError as exc:
        raise InvalidRequest(str(exc)) from None
    # The id is ours, recorded (before the provider is asked, so that no stream waits on it)
    # so that a later GET of it says why nothing is stored.
    response_id = f"resp_{uuid.uuid4().hex}"
    await remember(call, response_id, translated=True)
    headers = {"anthropic-version": ANTHROPIC_VERSION}
    response = await call.runtime.upstream.post(
        call.provider, "/messages", outgoing, headers, stream=streaming
    )
    if response.status >= 400:
        await read_upstream(call.provider, response)  # raises the provider's refusal
    if streaming:
        return await open_relay(
            call, response, AnthropicToResponses(body, model=body["model"], response_id=response_id)
        )
    content = await read_upstream(call.provider, response)
    message = parse_upstream(call.provider, content)
    try:
        completion = anthropic_wire.to_chat_completion(message, model=body["model"])
        answer = responses_wire.to_response(
            completion, body, model=body["model"], response_id=response_id
        )
    except (AttributeError, TypeError) as exc:
        raise untranslatable(call.provider, exc) from None
    settle_answer(call, message.get("usage"), anthropic_consumption, len(content))
    return Response(orjson.dumps(answer), headers=JSON_HEADERS)

"""POST /v1/messages: Anthropic providers pass through, OpenAI-compatible ones translated.

Also the count_tokens estimate (POST /v1/messages/count_tokens), which calls no provider.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response

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
    route,
    runtime_of,
    settle_answer,
)
from otari_server.generation.relay import open_relay
from otari_server.generation.routed import routed
from otari_server.providers import Provider
from otari_server.providers.presets import ANTHROPIC_VERSION
from otari_server.providers.upstream import parse_upstream, read_upstream, untranslatable
from otari_server.translate.chat_via_messages import TranslationError
from otari_server.translate.messages_via_chat import (
    MessageStreamTranslator,
    to_chat_request,
    to_message,
)
from otari_server.translate.streams import ChatToMessages, MessagesPassThrough
from otari_server.translate.usage import anthropic_consumption

# Client headers an Anthropic upstream must see: the API version and opted-in beta features.
_CLIENT_HEADERS = ("anthropic-version", "anthropic-beta")
# Images cost about width x height / 750 tokens, and are scaled down to stay near 1,600.
_MEDIA_TOKENS = 1600


async def forward(request: Request, caller: Caller, endpoint: Endpoint) -> Response:
    """POST /v1/messages: the whole story of one request."""
    runtime = runtime_of(request)
    raw, body = await read_body(request, runtime.settings.max_body_bytes)
    check_fields(body, endpoint)
    _check(body)
    admitted = dict(body, user=_attribution(body, caller))
    streaming = body.get("stream") is True
    model_route = runtime.routes.routes.get(body["model"])
    if model_route is not None:

        async def attempt(call: Call, upstream_model: str) -> Response:
            body["max_tokens"] = admitted["max_tokens"]  # the budget clamp may have lowered it
            return await _dispatch(call, body, upstream_model, streaming, request.headers)

        return await routed(
            runtime,
            caller,
            endpoint,
            raw,
            admitted,
            request.scope.get("otari.request_id"),
            model_route,
            attempt,
        )
    call, upstream_model = await admit(
        runtime, caller, endpoint, raw, admitted, request.scope.get("otari.request_id")
    )
    body["max_tokens"] = admitted["max_tokens"]  # the budget clamp may have lowered it
    try:
        return await _dispatch(call, body, upstream_model, streaming, request.headers)
    except OtariError as exc:
        call.settle("error", error=exc.message, status_code=exc.status)
        raise


async def _dispatch(
    call: Call,
    body: dict[str, Any],
    upstream_model: str,
    streaming: bool,
    headers: Mapping[str, str],
) -> Response:
    """Send to the admitted call's provider in its wire format; the client's response."""
    if call.provider.type == "anthropic":
        return await _pass_through(call, body, upstream_model, streaming, headers)
    return await _translated(call, body, upstream_model, streaming)


async def count_tokens(request: Request, caller: Caller) -> Response:
    """POST /v1/messages/count_tokens: an estimate, with no provider call and no charge."""
    runtime = runtime_of(request)
    _, body = await read_body(request, runtime.settings.max_body_bytes)
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("'model' is required and must be a string", param="model")
    _check(body)
    if body["model"] not in runtime.routes.routes:
        route(runtime, caller, body["model"])  # an unknown or forbidden model is refused too
    return Response(orjson.dumps({"input_tokens": estimate(body)}), headers=JSON_HEADERS)


def estimate(body: Mapping[str, Any]) -> int:
    """Input tokens of a Messages request, estimated: four bytes of JSON text per token."""
    return sum(_size(body.get(field)) for field in ("system", "messages", "tools")) // 4 + 1


def _size(value: object) -> int:
    """Bytes of text in a JSON value, counting each media source as a large image."""
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, list):
        return sum(_size(item) for item in value)
    if isinstance(value, dict):
        source = value.get("source")
        if isinstance(source, dict) and source.get("type") in ("base64", "url", "file"):
            return _MEDIA_TOKENS * 4
        return sum(len(key) + _size(item) for key, item in value.items())
    return 4


def _check(body: Mapping[str, Any]) -> None:
    """The shape of what every provider needs: a list of messages, a string or list system."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' is required", param="messages")
    if not all(isinstance(m, dict) for m in messages):
        raise InvalidRequest("'messages' must be an array of objects", param="messages")
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise InvalidRequest("'system' must be a string or an array of text blocks", param="system")


def _attribution(body: Mapping[str, Any], caller: Caller) -> str | None:
    """The user the master key bills: `metadata.user_id` (an API key's own user always pays)."""
    metadata = body.get("metadata")
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise InvalidRequest("'metadata' must be an object", param="metadata")
    user = metadata.get("user_id")
    if user is not None and not isinstance(user, str):
        raise InvalidRequest("'metadata.user_id' must be a string", param="metadata.user_id")
    # Unlike OpenAI's `user`, a mismatch is no refusal: clients such as Claude Code fill
    # user_id with their own opaque session ids.
    return (user or None) if caller.is_master else None


def limit_field(provider: Provider) -> str:
    """The chat field that caps output for an OpenAI-compatible provider."""
    # OpenAI's own API refuses max_tokens for reasoning models; many other servers know
    # only max_tokens.
    if provider.base_url.startswith("https://api.openai.com/"):
        return "max_completion_tokens"
    return "max_tokens"


# -- anthropic providers: pass-through -------------------------------------------------------


async def _pass_through(
    call: Call,
    body: dict[str, Any],
    upstream_model: str,
    streaming: bool,
    client_headers: Mapping[str, str],
) -> Response:
    headers = {name: value for name in _CLIENT_HEADERS if (value := client_headers.get(name))}
    headers.setdefault("anthropic-version", ANTHROPIC_VERSION)
    response = await call.runtime.upstream.post(
        call.provider,
        call.endpoint.upstream_path,
        dict(body, model=upstream_model),
        headers,
        stream=streaming,
    )
    if response.status >= 400:
        await read_upstream(call.provider, response)  # raises the provider's refusal
    if streaming:
        return await open_relay(call, response, MessagesPassThrough())
    content = await read_upstream(call.provider, response)
    answer = parse_upstream(call.provider, content)
    settle_answer(call, answer.get("usage"), anthropic_consumption, len(content))
    return Response(content, status_code=response.status, headers=JSON_HEADERS)


# -- OpenAI-compatible providers: translated -------------------------------------------------


async def _translated(
    call: Call, body: dict[str, Any], upstream_model: str, streaming: bool
) -> Response:
    try:
        outgoing = to_chat_request(
            body, model=upstream_model, limit_field=limit_field(call.provider)
        )
    except TranslationError as exc:
        raise InvalidRequest(str(exc)) from None
    response = await call.runtime.upstream.post(
        call.provider, "/chat/completions", outgoing, stream=streaming
    )
    if response.status >= 400:
        await read_upstream(call.provider, response)  # raises the provider's refusal
    if streaming:
        translator = MessageStreamTranslator(model=body["model"], input_tokens=estimate(body))
        return await open_relay(call, response, ChatToMessages(translator))
    content = await read_upstream(call.provider, response)
    completion = parse_upstream(call.provider, content)
    try:
        message = to_message(completion, model=body["model"])
    except (AttributeError, TypeError, IndexError) as exc:
        raise untranslatable(call.provider, exc) from None
    settle_answer(call, completion.get("usage"), consumption, len(content))
    return Response(orjson.dumps(message), headers=JSON_HEADERS)

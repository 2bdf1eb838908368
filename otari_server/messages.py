"""POST /v1/messages: Anthropic providers pass through, OpenAI-compatible ones translated.

Also the count_tokens estimate (POST /v1/messages/count_tokens), which calls no provider.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson
from fastapi import Request
from starlette.responses import Response

from otari_server.auth import Caller
from otari_server.endpoints import Endpoint
from otari_server.errors import InvalidRequest, OtariError
from otari_server.pricing import Consumption
from otari_server.providers import Provider
from otari_server.providers.anthropic import TranslationError, chat_usage
from otari_server.providers.messages import MessageStreamTranslator, to_chat_request, to_message
from otari_server.providers.presets import ANTHROPIC_VERSION
from otari_server.providers.sse import Event, SSEParser, encode
from otari_server.proxy import (
    JSON_HEADERS,
    SSE_HEADERS,
    Call,
    admit,
    check_fields,
    consumption,
    read_body,
    route,
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

# Client headers an Anthropic upstream must see: the API version and opted-in beta features.
_CLIENT_HEADERS = ("anthropic-version", "anthropic-beta")
# Events of a passed-through stream that carry usage or an error; the rest are not decoded.
_METERED = frozenset({"message_start", "message_delta", "error"})
# Images cost about width x height / 750 tokens, and are scaled down to stay near 1,600.
_MEDIA_TOKENS = 1600
_STREAM_ERRORS = (aiohttp.ClientError, TimeoutError, OSError, orjson.JSONDecodeError)


async def forward(request: Request, caller: Caller, endpoint: Endpoint) -> Response:
    """POST /v1/messages: the whole story of one request."""
    runtime = runtime_of(request)
    raw, body = await read_body(request, runtime.settings.max_body_bytes)
    check_fields(body, endpoint)
    _check(body)
    call, upstream_model = await admit(runtime, caller, endpoint, raw,
                                       dict(body, user=_attribution(body, caller)),
                                       request.scope.get("otari.request_id"))
    streaming = body.get("stream") is True
    try:
        if call.provider.type == "anthropic":
            return await _pass_through(call, body, upstream_model, streaming, request.headers)
        return await _translated(call, body, upstream_model, streaming)
    except OtariError as exc:
        call.settle("error", error=exc.message, status_code=exc.status)
        raise


async def count_tokens(request: Request, caller: Caller) -> Response:
    """POST /v1/messages/count_tokens: an estimate, with no provider call and no charge."""
    runtime = runtime_of(request)
    _, body = await read_body(request, runtime.settings.max_body_bytes)
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("'model' is required and must be a string", param="model")
    _check(body)
    route(runtime, caller, body["model"])  # an unknown or forbidden model is refused here too
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
        raise InvalidRequest("'system' must be a string or an array of text blocks",
                             param="system")


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


def _used(usage: object) -> Consumption:
    """Consumption from an Anthropic usage object (prompt tokens include cache traffic)."""
    return consumption(chat_usage(usage)) if isinstance(usage, dict) else Consumption()


def limit_field(provider: Provider) -> str:
    """The chat field that caps output for an OpenAI-compatible provider."""
    # OpenAI's own API refuses max_tokens for reasoning models; many other servers know
    # only max_tokens.
    if provider.base_url.startswith("https://api.openai.com/"):
        return "max_completion_tokens"
    return "max_tokens"


def _encoded(events: list[dict[str, Any]]) -> bytes:
    # The event name of an Anthropic stream event is its type.
    return b"".join(encode(event, event["type"]) for event in events)


def _error_event(kind: str, message: str) -> bytes:
    return _encoded([{"type": "error", "error": {"type": kind, "message": message}}])


# -- anthropic providers: pass-through -------------------------------------------------------

async def _pass_through(call: Call, body: dict[str, Any], upstream_model: str, streaming: bool,
                        client_headers: Mapping[str, str]) -> Response:
    headers = {name: value for name in _CLIENT_HEADERS if (value := client_headers.get(name))}
    headers.setdefault("anthropic-version", ANTHROPIC_VERSION)
    response = await call.runtime.upstream.post(
        call.provider, call.endpoint.upstream_path, dict(body, model=upstream_model), headers,
        stream=streaming)
    if response.status >= 400:
        await read_upstream(call.provider, response)  # raises the provider's refusal
    if streaming:
        return RelayResponse(_relay(call, response), media_type="text/event-stream",
                             headers=SSE_HEADERS)
    content = await read_upstream(call.provider, response)
    call.settle("success", _used(parse_upstream(call.provider, content).get("usage")))
    return Response(content, status_code=response.status, headers=JSON_HEADERS)


class _Meter:
    """What a passed-through Anthropic stream reports about its usage and failure."""

    def __init__(self) -> None:
        self.usage: dict[str, int] = {}
        self.deltas = 0
        self.finished = False
        self.error: str | None = None

    def read(self, event: Event) -> None:
        if event.event == "content_block_delta":
            self.deltas += 1
        if event.event not in _METERED:
            return
        data = orjson.loads(event.data)
        if event.event == "error":
            error = data.get("error") or {}
            self.error = str(error.get("message") or "upstream stream failed")
            return
        if event.event == "message_delta":
            self.finished = True
        reported = data.get("usage") or (data.get("message") or {}).get("usage") or {}
        # Anthropic reports cumulative totals, so later numbers replace earlier ones.
        self.usage.update({k: v for k, v in reported.items() if isinstance(v, int)})

    def consumption(self) -> Consumption:
        if not self.finished:  # cut short: message_start's output count is a placeholder
            self.usage["output_tokens"] = max(self.usage.get("output_tokens", 0), self.deltas)
        return _used(self.usage)


def _whole(buffer: bytes) -> int:
    """How many leading bytes of `buffer` are complete events (LF or CRLF framing)."""
    ends = [i + len(sep) for sep in (b"\n\n", b"\n\r\n") if (i := buffer.rfind(sep)) >= 0]
    return max(ends, default=0)


async def _relay(call: Call, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """Pass the provider's events on unchanged, whole events only; meter them on the way."""
    parser = SSEParser()
    meter = _Meter()
    pending = b""
    status, error = "client_disconnected", None
    try:
        async for data in response.content.iter_any():
            data = pending + data
            cut = _whole(data)
            data, pending = data[:cut], data[cut:]
            if data:
                for event in parser.feed(data):
                    meter.read(event)
                yield scrubbed(call.provider, data)
        if pending:
            yield scrubbed(call.provider, pending)
        status, error = (("error", sanitize(call.provider, meter.error)) if meter.error
                         else ("success", None))
    except _STREAM_ERRORS as exc:
        status, error = "error", failure(call.provider, exc).message
        yield _error_event("api_error", sanitize(call.provider, error))
    finally:
        response.release()
        status, error = stream_outcome(call, status, error, meter.error)
        call.settle(status, meter.consumption(), error)


# -- OpenAI-compatible providers: translated -------------------------------------------------

async def _translated(call: Call, body: dict[str, Any], upstream_model: str,
                      streaming: bool) -> Response:
    try:
        outgoing = to_chat_request(body, model=upstream_model,
                                   limit_field=limit_field(call.provider))
    except TranslationError as exc:
        raise InvalidRequest(str(exc)) from None
    response = await call.runtime.upstream.post(call.provider, "/chat/completions", outgoing,
                                                stream=streaming)
    if response.status >= 400:
        await read_upstream(call.provider, response)  # raises the provider's refusal
    if streaming:
        translator = MessageStreamTranslator(model=body["model"], input_tokens=estimate(body))
        return RelayResponse(_relay_translated(call, response, translator),
                             media_type="text/event-stream", headers=SSE_HEADERS)
    completion = parse_upstream(call.provider, await read_upstream(call.provider, response))
    try:
        message = to_message(completion, model=body["model"])
    except (AttributeError, TypeError, IndexError):
        raise malformed(call.provider) from None
    call.settle("success", consumption(completion.get("usage")))
    return Response(orjson.dumps(message), headers=JSON_HEADERS)


async def _relay_translated(call: Call, response: aiohttp.ClientResponse,
                            translator: MessageStreamTranslator) -> AsyncIterator[bytes]:
    """Turn OpenAI chunks into the Anthropic event sequence as they arrive."""
    parser = SSEParser()
    deltas = 0
    status, error = "client_disconnected", None
    try:
        async for data in response.content.iter_any():
            events = []
            for sse in parser.feed(data):
                events += (translator.finish() if sse.done
                           else translator.feed(orjson.loads(sse.data)))
            if events:
                deltas += sum(event["type"] == "content_block_delta" for event in events)
                yield scrubbed(call.provider, _encoded(events))
        if closing := translator.finish():  # the provider ended without [DONE]
            yield _encoded(closing)
        if translator.error is not None:
            status, error = "error", sanitize(call.provider, str(translator.error["message"]))
        else:
            status = "success"
    except _STREAM_ERRORS as exc:
        status, error = "error", failure(call.provider, exc).message
        yield _error_event("api_error", sanitize(call.provider, error))
    finally:
        response.release()
        status, error = stream_outcome(call, status, error,
                                       (translator.error or {}).get("message"))
        if translator.usage is None:
            # Cut off before the usage report: bill what we saw (about a token per delta).
            call.settle(status, Consumption(completion_tokens=deltas),
                        error or "stream ended before its usage report")
        else:
            call.settle(status, _used(translator.usage), error)

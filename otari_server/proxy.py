"""The hot path: authenticate (done by the route), reserve, forward, relay, settle."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp
import orjson
from fastapi import Request
from starlette.responses import Response

from otari_server import tokens
from otari_server.auth import Caller
from otari_server.endpoints import Endpoint
from otari_server.errors import InvalidRequest, OtariError, PayloadTooLarge, PermissionDenied
from otari_server.ledger import NO_HOLD, Hold, Settlement
from otari_server.pricing import Price
from otari_server.providers import ModelAddressError, Provider, resolve
from otari_server.providers import anthropic as anthropic_wire
from otari_server.providers.anthropic import ChatStreamTranslator, TranslationError
from otari_server.providers.presets import ANTHROPIC_VERSION
from otari_server.providers.sse import DONE_EVENT, SSEParser, encode
from otari_server.relay import RelayResponse
from otari_server.runtime import Runtime
from otari_server.tables import utcnow
from otari_server.upstream import failure, refusal, sanitize

JSON_HEADERS = {"content-type": "application/json"}
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


@dataclass(slots=True)
class Call:
    """Everything known about one request once it is admitted."""

    runtime: Runtime
    endpoint: Endpoint
    provider: Provider
    model_key: str
    user_id: str | None
    key_id: str | None
    price: Price | None
    hold: Hold
    request_id: str | None
    started: float
    counts: bool = True

    def settle(self, status: str, usage: dict[str, Any] | None = None,
               error: str | None = None) -> None:
        """Queue the usage row and the reservation's release (never blocks)."""
        usage = usage or {}
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        details = usage.get("prompt_tokens_details")
        details = details if isinstance(details, dict) else {}
        read = details.get("cached_tokens") if isinstance(details.get("cached_tokens"),
                                                          int) else None
        written = (details.get("cache_creation_tokens")
                   if isinstance(details.get("cache_creation_tokens"), int) else None)
        cost = None
        if self.price is not None:
            cost = self.price.cost(_int(prompt), _int(completion), read or 0, written or 0)
        self.runtime.ledger.record(Settlement(
            hold=self.hold, user_id=self.user_id, api_key_id=self.key_id,
            model=self.model_key, provider=self.provider.name, endpoint=self.endpoint.path,
            status=status, prompt_tokens=_int_or_none(prompt),
            completion_tokens=_int_or_none(completion), cache_read_tokens=read,
            cache_write_tokens=written, cost=cost, counts_toward_budget=self.counts,
            error_message=error, latency_ms=int((time.perf_counter() - self.started) * 1000),
            request_id=self.request_id))


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


async def read_body(request: Request, limit: int) -> tuple[bytes, dict[str, Any]]:
    """The raw body and its JSON object; 413 over the limit, 400 when not a JSON object."""
    raw = await request.body()
    if len(raw) > limit:
        raise PayloadTooLarge(f"Request body is over the {limit}-byte limit")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("Request body must be a JSON object")
    return raw, body


def check_chat(body: dict[str, Any]) -> None:
    """The minimum a chat request needs before we spend anything on it."""
    if not isinstance(body.get("model"), str):
        raise InvalidRequest("'model' is required and must be a string", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    if not all(isinstance(m, dict) for m in messages):
        raise InvalidRequest("each message must be an object", param="messages")
    if not isinstance(body.get("stream", False), bool):
        raise InvalidRequest("'stream' must be a boolean", param="stream")
    for name in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < 1):
            raise InvalidRequest(f"'{name}' must be a positive integer", param=name)


def billed_user(caller: Caller, requested: object) -> str | None:
    """Who pays: the key's user; the master key may name any user in the `user` field."""
    if requested is not None and not isinstance(requested, str):
        raise InvalidRequest("'user' must be a string", param="user")
    if caller.is_master:
        return requested or None
    if requested and caller.user_id is not None and requested != caller.user_id:
        raise PermissionDenied(
            f"This API key belongs to user '{caller.user_id}' and cannot bill '{requested}'")
    return caller.user_id


async def admit(runtime: Runtime, caller: Caller, endpoint: Endpoint, raw: bytes,
                body: dict[str, Any], request_id: str | None) -> tuple[Call, str]:
    """Resolve provider and price, then reserve the worst case; raises if it cannot run."""
    settings = runtime.settings
    try:
        provider, upstream_model = resolve(body["model"], runtime.providers)
    except ModelAddressError as exc:
        raise InvalidRequest(str(exc), param="model", code="model_not_found") from None
    model_key = f"{provider.name}:{upstream_model}"
    if not caller.may_use(model_key):
        raise PermissionDenied(f"This API key may not use model '{model_key}'",
                               code="model_not_allowed")
    user_id = billed_user(caller, body.get("user"))
    now = utcnow()
    price = await runtime.prices.at(model_key, now)
    if price is None and settings.require_pricing:
        raise InvalidRequest(
            f"Model '{model_key}' has no price, and require_pricing is on: set one with "
            "POST /v1/pricing (otari pricing set) or turn require_pricing off",
            param="model", code="model_not_priced")
    hold = NO_HOLD
    counts = not caller.exclude_from_budget
    if counts and user_id is not None and (caller.is_master or caller.budgeted):
        worst = Decimal(0)
        if price is not None:
            worst = price.cost(tokens.input_tokens(raw),
                               tokens.output_tokens(body, settings.default_max_tokens,
                                                    *endpoint.output_limits))
        hold = await runtime.ledger.reserve(user_id, worst)
    call = Call(runtime, endpoint, provider, model_key, user_id, caller.key_id, price, hold,
                request_id, time.perf_counter(), counts)
    return call, upstream_model


async def forward_chat(request: Request, caller: Caller, endpoint: Endpoint) -> Response:
    """POST /v1/chat/completions: the whole story of one request."""
    runtime: Runtime = request.app.state.runtime
    raw, body = await read_body(request, runtime.settings.max_body_bytes)
    check_chat(body)
    call, upstream_model = await admit(runtime, caller, endpoint, raw, body,
                                       request.scope.get("otari.request_id"))
    streaming = body.get("stream") is True
    try:
        if call.provider.type == "anthropic":
            return await _anthropic_chat(call, body, upstream_model, streaming)
        return await _openai_chat(call, body, upstream_model, streaming)
    except OtariError as exc:
        call.settle("error", error=exc.message)
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
        raise refusal(call.provider, response.status, await _read(call, response))
    if streaming:
        return RelayResponse(_relay_openai(call, response, strip_usage),
                                 media_type="text/event-stream", headers=SSE_HEADERS)
    content = await _read(call, response)
    call.settle("success", _usage_of(call, content))
    return Response(content, status_code=response.status, headers=JSON_HEADERS)


async def _read(call: Call, response: aiohttp.ClientResponse) -> bytes:
    try:
        return await response.read()
    except Exception as exc:
        raise failure(call.provider, exc) from None
    finally:
        response.release()


def _usage_of(call: Call, content: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(content)
    except orjson.JSONDecodeError:
        raise failure_malformed(call) from None
    usage = parsed.get("usage") if isinstance(parsed, dict) else None
    return usage if isinstance(usage, dict) else {}


def failure_malformed(call: Call) -> OtariError:
    """The provider answered 200 with something that is not JSON."""
    from otari_server.errors import BadGateway

    return BadGateway(f"Provider '{call.provider.name}' returned a malformed response")


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
                if '"usage":{' in event.data or '"usage": {' in event.data:
                    parsed = orjson.loads(event.data)
                    if isinstance(parsed.get("usage"), dict):
                        usage = parsed["usage"]
                        if strip_usage and not parsed.get("choices"):
                            continue
                out.append(encode(event.data, event.event))
            if out:
                yield b"".join(out)
        status = "success"
    except (aiohttp.ClientError, TimeoutError, OSError, orjson.JSONDecodeError) as exc:
        status, error = "error", failure(call.provider, exc).message
        yield _error_event(sanitize(call.provider, error))
    finally:
        response.release()
        if usage is None:
            # Cut off before the usage chunk: bill what we saw (about a token per chunk).
            call.settle(status, {"completion_tokens": max(chunks - 1, 0)},
                        error or "stream ended before its usage report")
        else:
            call.settle(status, usage, error)


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
        raise refusal(call.provider, response.status, await _read(call, response))
    if streaming:
        options = body.get("stream_options")
        include = isinstance(options, dict) and bool(options.get("include_usage"))
        translator = ChatStreamTranslator(model=body["model"], include_usage=include)
        return RelayResponse(_relay_anthropic(call, response, translator),
                                 media_type="text/event-stream", headers=SSE_HEADERS)
    content = await _read(call, response)
    try:
        message = orjson.loads(content)
        completion = anthropic_wire.to_chat_completion(message, model=body["model"])
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        raise failure_malformed(call) from None
    call.settle("success", completion["usage"])
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
                yield b"".join(out)
        if translator.error is not None:
            status, error = "error", str(translator.error.get("message", "upstream error"))
        else:
            status = "success"
            yield DONE_EVENT
    except (aiohttp.ClientError, TimeoutError, OSError, orjson.JSONDecodeError) as exc:
        status, error = "error", failure(call.provider, exc).message
        yield _error_event(sanitize(call.provider, error))
    finally:
        response.release()
        call.settle(status, translator.usage, error)

"""The connected hot path: authorize with the platform, then try its attempts in order."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import orjson
from starlette.requests import Request
from starlette.responses import Response

from otari_server.connected.failures import (
    CLIENT_DISCONNECTED,
    INVALID_REQUEST,
    MALFORMED,
    STREAM_ERROR,
    TIMEOUT,
    UNSUPPORTED_PROVIDER,
    AttemptFailure,
    exhausted,
    http_failure,
    transport_failure,
)
from otari_server.connected.platform import TRANSPORT_ERRORS
from otari_server.connected.reports import Reporter, usage_numbers
from otari_server.connected.routing import Attempt, provider_for
from otari_server.connected.runtime import ConnectedRuntime, runtime_of
from otari_server.connected.streams import AnthropicRelay, OpenAIRelay, Relay, error_event
from otari_server.errors import (
    AuthenticationFailed,
    BadGateway,
    GatewayTimeout,
    InvalidRequest,
    OtariError,
)
from otari_server.providers import Provider
from otari_server.providers import anthropic as anthropic_wire
from otari_server.providers.presets import ANTHROPIC_VERSION
from otari_server.proxy import read_body
from otari_server.relay import RelayResponse
from otari_server.upstream import failure, refusal, sanitize

log = logging.getLogger("otari.connected")

JSON_HEADERS = {"content-type": "application/json"}
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
ANTHROPIC_HEADERS = {"anthropic-version": ANTHROPIC_VERSION}


async def forward_chat(request: Request) -> Response:
    """POST /v1/chat/completions: the whole story of one request in connected mode."""
    runtime = runtime_of(request)
    user_token = bearer_token(request.headers.get("authorization"))
    _, body = await read_body(request, runtime.settings.max_body_bytes)
    check_chat(body)
    route = await runtime.platform.resolve(user_token, body["model"])
    ids = {"X-Otari-Request-ID": route.request_id}
    if not route.attempts:
        raise _tagged(BadGateway("Authorization service returned no provider to try"), ids)
    last: AttemptFailure | None = None
    for attempt in route.attempts:
        try:
            response = await _attempt(runtime, attempt, body)
        except AttemptFailure as failed:
            runtime.reporter.error(attempt.attempt_id, failed.error_class)
            log.warning("request %s attempt %d (%s:%s) failed: %s (%s)", route.request_id,
                        attempt.position, attempt.provider, attempt.model, failed.error_class,
                        "next attempt" if failed.retryable else "not retryable")
            if not failed.retryable:
                raise _tagged(failed.error, ids) from None
            last = failed
            continue
        except asyncio.CancelledError:
            runtime.reporter.error(attempt.attempt_id, CLIENT_DISCONNECTED)
            raise
        response.headers.update({**ids, "X-Correlation-ID": attempt.attempt_id})
        return response
    assert last is not None
    raise _tagged(exhausted(last, len(route.attempts)), ids)


def bearer_token(header: str | None) -> str:
    """The user token of `Authorization: Bearer <token>`; 401 when missing or malformed."""
    scheme, _, token = (header or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or any(c.isspace() for c in token):
        raise AuthenticationFailed("Missing or malformed credentials: send "
                                   "'Authorization: Bearer <token>' with your otari token")
    return token


def check_chat(body: dict[str, Any]) -> None:
    """The minimum a chat request needs before we ask the platform about it."""
    model = body.get("model")
    if not isinstance(model, str) or not model.strip() or model.endswith(":"):
        raise InvalidRequest("'model' is required and must name a model", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    if not all(isinstance(m, dict) for m in messages):
        raise InvalidRequest("each message must be an object", param="messages")
    if not isinstance(body.get("stream", False), bool):
        raise InvalidRequest("'stream' must be a boolean", param="stream")


def _tagged(error: OtariError, ids: dict[str, str]) -> OtariError:
    error.headers.update(ids)
    return error


@dataclass(frozen=True, slots=True)
class Call:
    """One attempt in flight: where it goes and the key it uses (also for redaction)."""

    runtime: ConnectedRuntime
    attempt: Attempt
    provider: Provider

    @property
    def reporter(self) -> Reporter:
        """Where this attempt's usage report goes."""
        return self.runtime.reporter

    async def post(self, path: str, body: dict[str, Any], stream: bool) -> aiohttp.ClientResponse:
        """Send the request; transport failures become retryable attempt failures."""
        # The shared client caches headers per provider name, and keys differ between
        # attempts: the key travels with each request instead of in that cache.
        headers = self.provider.request_headers()
        if self.provider.type == "anthropic":
            headers.update(ANTHROPIC_HEADERS)
        keyless = replace(self.provider, api_key=None)
        try:
            return await self.runtime.upstream.post(keyless, path, body, headers, stream=stream)
        except OtariError as exc:
            raise transport_failure(exc) from None

    async def read(self, response: aiohttp.ClientResponse) -> bytes:
        """The whole body, released afterwards."""
        try:
            return await response.read()
        except TRANSPORT_ERRORS as exc:
            raise transport_failure(failure(self.provider, exc)) from None
        finally:
            response.release()

    def refused(self, status: int, content: bytes,
                headers: Mapping[str, str] | None = None) -> AttemptFailure:
        """The provider's non-2xx answer, its key redacted from the message."""
        return http_failure(refusal(self.provider, status, content, headers), status)

    def broken(self, problem: str, error_class: str, *, retryable: bool) -> AttemptFailure:
        """A failure of ours to make sense of the provider's answer."""
        return AttemptFailure(BadGateway(f"Provider '{self.provider.name}' {problem}"),
                              error_class, retryable)


async def _attempt(runtime: ConnectedRuntime, attempt: Attempt, body: dict[str, Any]) -> Response:
    provider = provider_for(attempt, runtime.settings.request_timeout)
    if provider is None:
        error = BadGateway(f"Provider '{attempt.provider}' is not known to this gateway and "
                           "the platform gave no api_base for it")
        raise AttemptFailure(error, UNSUPPORTED_PROVIDER, retryable=True)
    call = Call(runtime, attempt, provider)
    path, outgoing, relay = _request(call, body)
    if relay is not None:
        return await _stream(call, path, outgoing, relay)
    return await _complete(call, path, outgoing, body)


def _request(call: Call, body: dict[str, Any]) -> tuple[str, dict[str, Any], Relay | None]:
    """Upstream path and body for the attempt's model, and a relay when the client streams."""
    streaming = body.get("stream") is True
    if call.provider.type == "anthropic":
        try:
            outgoing = anthropic_wire.to_messages_request(
                body, model=call.attempt.model,
                default_max_tokens=call.runtime.settings.default_max_tokens)
        except anthropic_wire.TranslationError as exc:
            raise AttemptFailure(InvalidRequest(str(exc)), INVALID_REQUEST,
                                 retryable=False) from None
        if not streaming:
            return "/messages", outgoing, None
        options = body.get("stream_options")
        include = isinstance(options, dict) and bool(options.get("include_usage"))
        translator = anthropic_wire.ChatStreamTranslator(model=body["model"],
                                                         include_usage=include)
        return "/messages", outgoing, AnthropicRelay(translator)
    outgoing = dict(body, model=call.attempt.model)
    if not streaming:
        return "/chat/completions", outgoing, None
    options = body.get("stream_options")
    options = dict(options) if isinstance(options, dict) else {}
    # The usage chunk is what the platform bills by; hide it again if nobody asked for it.
    outgoing["stream_options"] = {**options, "include_usage": True}
    return "/chat/completions", outgoing, OpenAIRelay(strip_usage=not options.get("include_usage"))


async def _complete(call: Call, path: str, outgoing: dict[str, Any],
                    body: dict[str, Any]) -> Response:
    response = await call.post(path, outgoing, stream=False)
    content = await call.read(response)
    if response.status >= 400:
        raise call.refused(response.status, content, response.headers)
    try:
        answer = orjson.loads(content)
        if call.provider.type == "anthropic":
            answer = anthropic_wire.to_chat_completion(answer, model=body["model"])
            content = orjson.dumps(answer)
        usage = answer.get("usage")
    except (orjson.JSONDecodeError, AttributeError, TypeError, KeyError):
        raise call.broken("returned a malformed response", MALFORMED, retryable=False) from None
    call.reporter.success(call.attempt.attempt_id,
                          usage_numbers(usage if isinstance(usage, dict) else None))
    return Response(content, headers=JSON_HEADERS)


async def _stream(call: Call, path: str, outgoing: dict[str, Any], relay: Relay) -> Response:
    """Open the stream and wait for its first chunk: until then, another attempt may run."""
    wait = call.runtime.config.first_chunk_timeout
    response: aiohttp.ClientResponse | None = None
    committed = False
    try:
        async with asyncio.timeout(wait):
            response = await call.post(path, outgoing, stream=True)
            if response.status >= 400:
                raise call.refused(response.status, await call.read(response),
                                   response.headers)
            first = await _first_chunk(call, response, relay)
        committed = True
    except TimeoutError:
        error = GatewayTimeout(f"Provider '{call.provider.name}' sent nothing within {wait:g}s")
        raise AttemptFailure(error, TIMEOUT, retryable=True) from None
    finally:
        if response is not None and not committed:
            response.release()
    return RelayResponse(_relay(call, response, relay, first), media_type="text/event-stream",
                         headers=SSE_HEADERS)


async def _first_chunk(call: Call, response: aiohttp.ClientResponse, relay: Relay) -> bytes:
    while True:
        try:
            data = await response.content.readany()
        except TRANSPORT_ERRORS as exc:
            raise transport_failure(failure(call.provider, exc)) from None
        if not data:
            raise call.broken("ended the stream before its first chunk", STREAM_ERROR,
                              retryable=True)
        out = relay.feed(data)
        if relay.error is not None and not relay.chunks:
            message = sanitize(call.provider, str(relay.error.get("message", "stream error")))
            raise call.broken(f"failed: {message}", STREAM_ERROR, retryable=True)
        if relay.chunks:
            return out


async def _relay(call: Call, response: aiohttp.ClientResponse, relay: Relay,
                 first: bytes) -> AsyncIterator[bytes]:
    """Pass the committed stream on; errors now go down the stream; report once it ends."""
    error_class: str | None = CLIENT_DISCONNECTED
    try:
        yield first
        async for data in response.content.iter_any():
            out = relay.feed(data)
            if out:
                yield out
        tail = relay.finish()
        if tail:
            yield tail
        error_class = STREAM_ERROR if relay.error is not None else None
    except TRANSPORT_ERRORS as exc:
        failed = transport_failure(failure(call.provider, exc))
        error_class = failed.error_class
        yield error_event(sanitize(call.provider, failed.error.message))
    finally:
        response.release()
        if error_class is None:
            call.reporter.success(call.attempt.attempt_id,
                                  usage_numbers(relay.usage, relay.chunks))
        else:
            call.reporter.error(call.attempt.attempt_id, error_class)

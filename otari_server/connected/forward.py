"""The connected hot path: authorize with the platform, then try its attempts in order."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import orjson
from starlette.requests import Request
from starlette.responses import Response

from otari_server import jsonio
from otari_server.accounting import counts
from otari_server.accounting.counts import consumption
from otari_server.accounting.estimates import estimated_prompt, output_tokens
from otari_server.accounting.prices import Consumption
from otari_server.connected.addresses import url_refusal
from otari_server.connected.attempts import Attempt, Route, provider_for
from otari_server.connected.config import redacted
from otari_server.connected.failures import (
    ADDRESS_REFUSED,
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
from otari_server.connected.runtime import ConnectedRuntime, runtime_of
from otari_server.errors import (
    AuthenticationFailed,
    BadGateway,
    GatewayTimeout,
    InvalidRequest,
    OtariError,
    ServiceUnavailable,
)
from otari_server.generation.proxy import read_body
from otari_server.generation.relay import SUCCESS, Ending, RelayResponse, relay, stream_start
from otari_server.providers import Provider
from otari_server.providers.presets import ANTHROPIC_VERSION
from otari_server.providers.upstream import failure, refusal, sanitize
from otari_server.translate import chat_via_messages as anthropic_wire
from otari_server.translate.chat_via_messages_request import to_messages_request
from otari_server.translate.streams import AnthropicToChat, ChatPassThrough, StreamTranslator
from otari_server.translate.usage import anthropic_consumption

log = logging.getLogger("otari.connected")

JSON_HEADERS = {"content-type": "application/json"}
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
ANTHROPIC_HEADERS = {"anthropic-version": ANTHROPIC_VERSION}


async def forward_chat(request: Request) -> Response:
    """POST /v1/chat/completions: the whole story of one request in connected mode."""
    runtime = runtime_of(request)
    user_token = bearer_token(request.headers.get("authorization"))
    raw, body = await read_body(request, runtime.settings.max_body_bytes)
    check_chat(body)
    if runtime.reporter.full:
        # Nothing is served that could not be billed: the queue keeps what it has.
        raise ServiceUnavailable(
            "The gateway cannot record usage right now; try again later", code="usage_queue_full"
        )
    route = await runtime.platform.resolve(user_token, body["model"])
    ids = {"X-Otari-Request-ID": route.request_id}
    if not route.attempts:
        raise _tagged(BadGateway("Authorization service returned no provider to try"), ids)
    last: AttemptFailure | None = None
    attempts = allowed_attempts(runtime, route)
    for attempt in attempts:
        try:
            response = await _attempt(runtime, attempt, body, estimated_prompt(raw))
        except AttemptFailure as failed:
            runtime.reporter.error(attempt.attempt_id, failed.error_class)
            log.warning(
                "request %s attempt %d (%s:%s) failed: %s (%s)",
                route.request_id,
                attempt.position,
                attempt.provider,
                attempt.model,
                failed.error_class,
                "next attempt" if failed.retryable else "not retryable",
            )
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
    raise _tagged(exhausted(last, len(attempts)), ids)


def allowed_attempts(runtime: ConnectedRuntime, route: Route) -> tuple[Attempt, ...]:
    """The attempts to make: only the first without fallback, never over `max_attempts`."""
    attempts = route.attempts if route.fallback_enabled else route.attempts[:1]
    cap = runtime.config.max_attempts
    if len(attempts) > cap:
        log.warning(
            "request %s: the platform asked for %d attempts; trying the first %d "
            "(platform.max_attempts)",
            route.request_id,
            len(attempts),
            cap,
        )
        attempts = attempts[:cap]
    return attempts


# Tokens are visible ASCII (they travel in headers); longer than any real token is malformed.
MAX_TOKEN_CHARS = 4096


def bearer_token(header: str | None) -> str:
    """The user token of `Authorization: Bearer <token>`; 401 when missing or malformed."""
    scheme, _, token = (header or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or any(c.isspace() for c in token):
        raise AuthenticationFailed(
            "Missing or malformed credentials: send "
            "'Authorization: Bearer <token>' with your otari token"
        )
    if len(token) > MAX_TOKEN_CHARS or not token.isascii() or not token.isprintable():
        raise AuthenticationFailed(
            f"Malformed token: an otari token is printable ASCII of "
            f"at most {MAX_TOKEN_CHARS} characters"
        )
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

    def refused(
        self, status: int, content: bytes, headers: Mapping[str, str] | None = None
    ) -> AttemptFailure:
        """The provider's non-2xx answer, its key redacted from the message."""
        return http_failure(refusal(self.provider, status, content, headers), status)

    def broken(self, problem: str, error_class: str, *, retryable: bool) -> AttemptFailure:
        """A failure of ours to make sense of the provider's answer."""
        return AttemptFailure(
            BadGateway(f"Provider '{self.provider.name}' {problem}"), error_class, retryable
        )


async def _attempt(
    runtime: ConnectedRuntime, attempt: Attempt, body: dict[str, Any], prompt_estimate: int
) -> Response:
    provider = provider_for(attempt, runtime.settings.request_timeout)
    if provider is None:
        error = BadGateway(
            f"Provider '{attempt.provider}' is not known to this gateway and "
            "the platform gave no api_base for it"
        )
        raise AttemptFailure(error, UNSUPPORTED_PROVIDER, retryable=True)
    if reason := url_refusal(provider.base_url, runtime.config):
        # Names are checked as they resolve (GuardedResolver); literals here, before any I/O.
        log.warning(
            "attempt %s: provider address %s not called: %s",
            attempt.attempt_id,
            redacted(provider.base_url),
            reason,
        )
        error = BadGateway(
            f"Provider '{attempt.provider}' has an address this gateway does not call"
        )
        raise AttemptFailure(error, ADDRESS_REFUSED, retryable=True)
    call = Call(runtime, attempt, provider)
    path, outgoing, translator = _request(call, body)
    if translator is not None:
        return await _stream(call, path, outgoing, translator, prompt_estimate)
    return await _complete(call, path, outgoing, body, prompt_estimate)


def _request(
    call: Call, body: dict[str, Any]
) -> tuple[str, dict[str, Any], StreamTranslator | None]:
    """Upstream path and body for the attempt's model, and a relay when the client streams."""
    streaming = body.get("stream") is True
    if call.provider.type == "anthropic":
        try:
            outgoing = to_messages_request(
                body,
                model=call.attempt.model,
                default_max_tokens=call.runtime.settings.default_max_tokens,
            )
        except anthropic_wire.TranslationError as exc:
            raise AttemptFailure(
                InvalidRequest(str(exc)), INVALID_REQUEST, retryable=False
            ) from None
        if not streaming:
            return "/messages", outgoing, None
        options = body.get("stream_options")
        include = isinstance(options, dict) and bool(options.get("include_usage"))
        return "/messages", outgoing, AnthropicToChat(model=body["model"], include_usage=include)
    outgoing = dict(body, model=call.attempt.model)
    if not streaming:
        return "/chat/completions", outgoing, None
    options = body.get("stream_options")
    options = dict(options) if isinstance(options, dict) else {}
    # The usage chunk is what the platform bills by; hide it again if nobody asked for it.
    outgoing["stream_options"] = {**options, "include_usage": True}
    return (
        "/chat/completions",
        outgoing,
        ChatPassThrough(strip_usage=not options.get("include_usage")),
    )


async def _complete(
    call: Call, path: str, outgoing: dict[str, Any], body: dict[str, Any], prompt_estimate: int
) -> Response:
    response = await call.post(path, outgoing, stream=False)
    content = await call.read(response)
    if response.status >= 400:
        raise call.refused(response.status, content, response.headers)
    try:
        answer = jsonio.parse(content)
        if call.provider.type == "anthropic":
            # Metered from the provider's own numbers: the translation writes one it cannot
            # carry (text, a fraction) as 0.
            usage = answer.get("usage")
            used = None if usage is None else anthropic_consumption(usage)
            answer = anthropic_wire.to_chat_completion(answer, model=body["model"])
            content = orjson.dumps(answer)
        else:
            usage = answer.get("usage")
            used = consumption(usage) if isinstance(usage, dict) else None
    except (orjson.JSONDecodeError, AttributeError, TypeError, KeyError):
        raise call.broken("returned a malformed response", MALFORMED, retryable=False) from None
    if used is not None and used.invalid is None and counts.reports_tokens(usage):
        call.reporter.success(call.attempt.attempt_id, usage_numbers(used))
    else:  # no usage, or refused numbers: the gateway's estimate, a token per 4 bytes of output
        if used is not None and used.invalid is not None:
            _refused(call, used.invalid)
        # At most the output the request allowed, as standalone mode's estimate: the answer's
        # JSON around its text is no output.
        limit = output_tokens(
            body, call.runtime.settings.default_max_tokens, "max_completion_tokens", "max_tokens"
        )
        output = min(-(-len(content) // 4), limit)
        estimate = Consumption(prompt_tokens=prompt_estimate, completion_tokens=output)
        call.reporter.success(call.attempt.attempt_id, usage_numbers(estimate), estimated=True)
    return Response(content, headers=JSON_HEADERS)


async def _stream(
    call: Call,
    path: str,
    outgoing: dict[str, Any],
    translator: StreamTranslator,
    prompt_estimate: int,
) -> Response:
    """Open the stream and wait for its first chunk: until then, another attempt may run."""
    wait = call.runtime.config.first_chunk_timeout
    response: aiohttp.ClientResponse | None = None
    committed = False
    try:
        async with asyncio.timeout(wait):
            response = await call.post(path, outgoing, stream=True)
            if response.status >= 400:
                raise call.refused(response.status, await call.read(response), response.headers)
            try:
                first = await stream_start(call.provider, response, translator)
            except OtariError as exc:  # neither an event stream nor JSON, or broken JSON
                raise AttemptFailure(exc, MALFORMED, retryable=True) from None
            if first:
                response = None  # a whole JSON answer, read and released
            else:
                first = await _first_chunk(call, response, translator)
        committed = True
    except TimeoutError:
        error = GatewayTimeout(f"Provider '{call.provider.name}' sent nothing within {wait:g}s")
        raise AttemptFailure(error, TIMEOUT, retryable=True) from None
    finally:
        if response is not None and not committed:
            response.release()

    def settle(ending: Ending) -> None:
        _report(call, ending, prompt_estimate, translator.output_tokens)

    return RelayResponse(
        relay(
            call.provider,
            response,
            translator,
            settle,
            prompt_estimate=prompt_estimate,
            first=first,
        ),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


async def _first_chunk(
    call: Call, response: aiohttp.ClientResponse, translator: StreamTranslator
) -> bytes:
    out = b""
    while True:
        try:
            data = await response.content.readany()
        except TRANSPORT_ERRORS as exc:
            raise transport_failure(failure(call.provider, exc)) from None
        if not data:
            out += translator.finish()
            if translator.chunks:
                return out
            raise call.broken(
                "ended the stream before its first chunk", STREAM_ERROR, retryable=True
            )
        out += translator.feed(data)
        if translator.error is not None and not translator.chunks:
            message = sanitize(call.provider, translator.error)
            raise call.broken(f"failed: {message}", STREAM_ERROR, retryable=True)
        if translator.chunks:
            return out


def _refused(call: Call, reason: str | None) -> None:
    log.warning(
        "provider %s: usage refused (%s); reported the gateway's estimate",
        call.provider.name,
        reason,
    )


def _report(call: Call, ending: Ending, prompt_estimate: int, output_tokens: int) -> None:
    """The attempt's usage report: what was consumed, however the stream ended (provider
    usage when seen, else the gateway's estimate, marked `usage_estimated`): `output_tokens`
    is the output relayed (about a token per content event)."""
    used, estimated = ending.used, ending.estimated
    if used.invalid is not None:
        _refused(call, used.invalid)
        used = Consumption(prompt_tokens=prompt_estimate, completion_tokens=output_tokens)
        estimated = True
    usage = usage_numbers(used)
    if ending.status == SUCCESS:
        call.reporter.success(call.attempt.attempt_id, usage, estimated=estimated)
        return
    if ending.cause == "client":
        error_class = CLIENT_DISCONNECTED
    elif ending.failure is not None:
        error_class = transport_failure(ending.failure).error_class
    else:
        error_class = STREAM_ERROR
    call.reporter.error(call.attempt.attempt_id, error_class, usage=usage, estimated=estimated)

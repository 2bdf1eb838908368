"""Streams to clients: the one relay loop every endpoint and both modes use, and a streaming
response that notices when the client goes away and stops the relay."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from otari_server.accounting.prices import Consumption
from otari_server.errors import BadGateway, OtariError
from otari_server.generation.proxy import ESTIMATED, SSE_HEADERS, Call
from otari_server.providers import Provider
from otari_server.providers.scrub import is_secret, scrub_bytes
from otari_server.providers.upstream import (
    failure,
    parse_upstream,
    read_upstream,
    sanitize,
    untranslatable,
)
from otari_server.translate.streams import StreamTranslator

log = logging.getLogger("otari.relay")


class RelayResponse(StreamingResponse):
    """StreamingResponse that always watches for http.disconnect.

    Starlette skips the watch under ASGI 2.4 and relies on a failing send, which never comes
    while the provider is quiet; we must know at once, to stop paying for tokens nobody reads
    and to record the disconnect. The watch is one asyncio task that cancels the stream's own
    task: an anyio task group (two more tasks, cancel scopes, a task repr per cancel) was a
    large share of a streamed request's CPU (bench/README, "streams at the floor").

    The relay's `Last` bytes go out with the end of the body, in one write: the client has
    its whole answer before the relay lets go of the provider's connection and settles.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        streaming, gone = True, False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            if streaming:  # uvicorn also answers http.disconnect once the response is complete
                gone = True
                task.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await self.stream_response(send)
        except OSError:
            pass  # a send failed: the client is gone
        except asyncio.CancelledError:
            # Ours (the client left) is handled here; any other (shutdown) goes on.
            if not gone or task.uncancel() > 0:
                raise
        finally:
            # Set before anything can await: the watcher must not cancel what comes next.
            streaming = False
            watcher.cancel()
        # Close the relay generator now, not at garbage collection, so it settles promptly.
        close = getattr(self.body_iterator, "aclose", None)
        if close is not None:
            await close()

    async def stream_response(self, send: Send) -> None:
        """Starlette's, but the relay's `Last` bytes go with the end of the body."""
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        async for chunk in self.body_iterator:
            last = isinstance(chunk, Last)
            await send({"type": "http.response.body", "body": chunk, "more_body": not last})
            if last:
                return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


# -- the one relay loop --------------------------------------------------------------------------

# What ends a stream on the provider's side: a dropped connection, a stalled read.
TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)
SUCCESS, ERROR, CLIENT_DISCONNECTED = "success", "error", "client_disconnected"


@dataclass(frozen=True, slots=True)
class Ending:
    """How a relayed stream ended, once, for the settlement (or the platform's report).

    `status` is success, error or client_disconnected; `error` the message to record
    (sanitized); `cause` None, "provider" (an error event from the provider), "transport"
    (dropped or stalled), "output_limit" (cut past the reserved output) or "client";
    `failure` the transport error when there was one; `used` what was consumed, and
    `estimated` whether `used` is the gateway's estimate (the provider reported no usage).
    """

    status: str
    error: str | None
    cause: str | None
    used: Consumption
    estimated: bool
    malformed: int = 0
    failure: OtariError | None = None

    @property
    def note(self) -> str | None:
        """The usage row's error_message: the error, and whether usage is estimated."""
        parts = [self.error] if self.error else []
        if self.malformed:
            parts.append(f"skipped {self.malformed} malformed provider event(s)")
        if self.estimated:
            reason = (
                "client disconnected before the usage report"
                if self.status == CLIENT_DISCONNECTED and not self.error
                else "no usage report from the provider"
            )
            parts.append(f"{ESTIMATED} ({reason})")
        return "; ".join(parts) or None


async def relay(
    provider: Provider,
    response: aiohttp.ClientResponse | None,
    translator: StreamTranslator,
    settle: Callable[[Ending], None],
    *,
    prompt_estimate: int = 0,
    max_output: int | None = None,
    first: bytes = b"",
    finished: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[bytes]:
    """Relay one provider stream to the client through `translator`; settle exactly once.

    Every endpoint and both modes behave the same: a final event without its blank line is
    flushed, a malformed event is skipped and counted, a provider error is relayed and decides
    the outcome, a dropped or stalled upstream ends with the client format's error event, a
    client that leaves stops the relay (and closes the upstream request), and output past
    `max_output` (the reserved output tokens; one event of slack for the closing chunk) cuts
    the stream with an error event of code `output_limit_exceeded`. Once the provider's last
    event is in hand the outcome is success (or the provider's error), even if the client
    hangs up while it is written. Every relayed byte is scrubbed of the provider's key
    (`otari_server.providers.scrub`). `first` is output already produced (connected mode's first
    chunk, or a whole JSON answer turned into events, with `response` None). `finished` runs once
    the provider's last event is in hand, before the client is sent it (e.g. recording
    where a stored response lives, so a GET right after the stream finds it).
    """
    key = provider.api_key if translator.text and is_secret(provider.api_key) else None
    # The usual case costs one substring search per read: scrub only when the key is there.
    needle = key.encode() if key else None

    def scrub(out: bytes) -> bytes:
        return out if needle is None or needle not in out else scrub_bytes(key, out)

    status = CLIENT_DISCONNECTED
    cause: str | None = "client"
    error: str | None = None
    failed: OtariError | None = None
    try:
        if first:
            if translator.done:
                status, error, cause = _closed(provider, translator)
                if finished is not None:
                    await finished()
            out = scrub(first + (translator.finish() if translator.done else b""))
            yield Last(out) if response is None or translator.done else out
        if response is not None and not translator.done:
            async for data in response.content.iter_any():
                out = translator.feed(data)
                if max_output is not None and translator.output_tokens > max_output + 1:
                    status, cause = ERROR, "output_limit"
                    error = f"stream cut: the output passed the {max_output} reserved output tokens"
                    yield Last(scrub(out + translator.fail(error, "output_limit_exceeded")))
                    return
                if translator.done:
                    break
                if out:  # the hot path: the scrub's test inlined
                    yield out if needle is None or needle not in out else scrub_bytes(key, out)
            else:
                out = b""
            out += translator.finish()
            status, error, cause = _closed(provider, translator)
            if finished is not None and translator.done:
                await finished()
            if out:
                yield Last(scrub(out))
    except TRANSPORT_ERRORS as exc:
        failed = failure(provider, exc)
        status, error, cause = ERROR, failed.message, "transport"
        if not translator.text:
            raise ConnectionAbortedError(error) from None  # no in-band error: break the transfer
        yield Last(scrub(translator.fail(sanitize(provider, error), "stream_interrupted")))
    finally:
        try:
            if response is not None:
                await _let_go(response, translator.done)
        finally:
            if status == CLIENT_DISCONNECTED and translator.error is not None:
                # The client read the provider's error, then left before the stream closed.
                status, error, cause = ERROR, sanitize(provider, translator.error), "provider"
            used = translator.used()
            estimated = used is None
            if used is None:
                used = Consumption(
                    prompt_tokens=prompt_estimate, completion_tokens=translator.output_tokens
                )
            if translator.malformed:
                log.warning(
                    "provider %s: skipped %d malformed stream event(s)",
                    provider.name,
                    translator.malformed,
                )
            settle(Ending(status, error, cause, used, estimated, translator.malformed, failed))


class Last(bytes):
    """The last bytes of a relayed stream: `RelayResponse` sends them with the end of the
    body, in one write, and then closes the relay (which settles)."""


# A stream's body once its last event is in hand: what may still come (the chunked
# terminator, normally already here) is read, within these bounds, so that the connection
# goes back to aiohttp's pool; closing it with bytes unread would reset it, and the next
# request would pay for a new connection (and, to a real provider, a TLS handshake).
DRAIN_SECONDS = 1.0
DRAIN_BYTES = 65536


async def _let_go(response: aiohttp.ClientResponse, done: bool) -> None:
    """Give the provider's connection back (a finished stream) or close it (cut short)."""
    if not done:
        response.close()  # stop the provider generating what nobody will read
        return
    try:
        if not response.content.at_eof():
            async with asyncio.timeout(DRAIN_SECONDS):
                left = DRAIN_BYTES
                while not response.content.at_eof() and left >= 0:
                    data = await response.content.readany()
                    if not data:
                        break
                    left -= len(data)
    except TRANSPORT_ERRORS:
        pass  # the stream is whole: a failing drain only costs the connection
    except asyncio.CancelledError:
        response.close()
        raise
    if response.content.at_eof():
        response.release()
    else:
        response.close()


def _closed(provider: Provider, translator: StreamTranslator) -> tuple[str, str | None, str | None]:
    """The outcome of a stream the provider ended: its error if it reported one."""
    if translator.error is not None:
        return ERROR, sanitize(provider, translator.error), "provider"
    return SUCCESS, None, None


async def stream_start(
    provider: Provider, response: aiohttp.ClientResponse, translator: StreamTranslator
) -> bytes:
    """Check what the provider answered a stream request with, before anything is relayed.

    An event stream gives b"" (relay it). A JSON answer (a provider that ignored `stream`)
    is read whole and given back as the client's complete event stream, usage noted in
    `translator`. Anything else is a 502 naming the content type.
    """
    kind = response.content_type
    if kind == "text/event-stream":
        return b""
    if kind == "application/json":
        answer = parse_upstream(provider, await read_upstream(provider, response))
        try:
            return translator.whole(answer)
        except (AttributeError, TypeError, KeyError, IndexError, ValueError) as exc:
            raise untranslatable(provider, exc) from None
    response.close()
    raise BadGateway(
        f"Provider '{provider.name}' answered a stream request with "
        f"'{kind}', neither an event stream nor JSON"
    )


def relayed(
    call: Call,
    response: aiohttp.ClientResponse | None,
    translator: StreamTranslator,
    first: bytes = b"",
    media_type: str = "text/event-stream",
    finished: Callable[[], Awaitable[None]] | None = None,
) -> RelayResponse:
    """The client's event stream for an admitted standalone call, settled through `call`."""

    def settle(ending: Ending) -> None:
        call.settle(ending.status, ending.used, ending.note)

    return RelayResponse(
        relay(
            call.provider,
            response,
            translator,
            settle,
            prompt_estimate=call.prompt_estimate,
            max_output=call.max_output,
            first=first,
            finished=finished,
        ),
        media_type=media_type,
        headers=SSE_HEADERS if translator.text else None,
    )


async def open_relay(
    call: Call,
    response: aiohttp.ClientResponse,
    translator: StreamTranslator,
    finished: Callable[[], Awaitable[None]] | None = None,
) -> RelayResponse:
    """Relay the provider's 2xx answer to a stream request (event stream or whole JSON)."""
    first = await stream_start(call.provider, response, translator)
    if first:
        return relayed(call, None, translator, first, finished=finished)
    if call.route is not None:  # a route may still move on: nothing is sent before output
        first = await first_output(call.provider, response, translator)
    return relayed(call, response, translator, first, finished=finished)


async def first_output(
    provider: Provider, response: aiohttp.ClientResponse, translator: StreamTranslator
) -> bytes:
    """Read an event stream until it has output for the client (a routed request).

    Raises, with the response closed, when the stream fails first: dropped or stalled
    (the transport error), closed without an event, or opened with the provider's error
    event (BadGateway); another target may then serve.
    """
    try:
        out = b""
        while not out and not translator.done:
            data = await response.content.readany()
            if not data:
                raise BadGateway(
                    f"Provider '{provider.name}' ended the stream before its first event"
                )
            out = translator.feed(data)
        if translator.error is not None:
            raise BadGateway(
                f"Provider '{provider.name}' failed before the first event: "
                f"{sanitize(provider, translator.error)}"
            )
        return out
    except TRANSPORT_ERRORS as exc:
        response.close()
        raise failure(provider, exc) from None
    except BaseException:  # our error, or the route's deadline cancelling the read
        response.close()
        raise

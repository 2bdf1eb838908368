"""The one pooled HTTP client to providers, and how its failures become our errors."""

from __future__ import annotations

import email.utils
import functools
import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiohttp.abc import AbstractResolver
from yarl import URL

from otari_server import jsonio
from otari_server.errors import (
    BadGateway,
    GatewayTimeout,
    OtariError,
    ProviderCredentialRejected,
    UpstreamError,
)
from otari_server.providers import Provider
from otari_server.providers.error_bodies import error_details
from otari_server.providers.scrub import scrub_bytes, scrub_text

if TYPE_CHECKING:
    from prometheus_client import Histogram  # only with metrics on

log = logging.getLogger("otari.upstream")

_MAX_MESSAGE = 1000


class Upstream:
    """Owns the aiohttp session: opened and closed with the app, shared by every request.

    Redirects are never followed: every call carries a provider key, which must reach no
    other origin. A 3xx answer is a 502, logged.
    """

    def __init__(self, resolver: AbstractResolver | None = None) -> None:
        # Connected mode passes a resolver that refuses forbidden provider addresses.
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None
        # Per provider name, built once: headers (with the provider's key) and timeouts are
        # the same for every request. Connected mode, whose keys vary per request, passes
        # key-less providers and sends the key in extra_headers.
        self._headers: dict[str, dict[str, str]] = {}
        self._timeouts: dict[tuple[str, bool], aiohttp.ClientTimeout] = {}
        # A Prometheus histogram of provider answer times, when metrics are on.
        self.observe: Histogram | None = None

    async def open(self) -> None:
        """Create the connection pool (must run inside the event loop)."""
        connector = aiohttp.TCPConnector(
            limit=0,
            limit_per_host=0,
            ttl_dns_cache=300,
            keepalive_timeout=60,
            resolver=self._resolver,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
            # A provider's cookies (a load balancer's session, a bot-check token) must not
            # be kept and sent again with other users' requests; and no jar is cheaper.
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        """Close pooled connections."""
        if self._session is not None:
            await self._session.close()

    async def post(
        self,
        provider: Provider,
        path: str,
        body: dict[str, Any],
        extra_headers: dict[str, str] | None = None,
        *,
        stream: bool = False,
    ) -> aiohttp.ClientResponse:
        """POST JSON to a provider; the caller reads (and releases) the response."""
        assert self._session is not None, "upstream client used before open()"
        headers = self._headers.get(provider.name)
        if headers is None:
            headers = self._headers[provider.name] = {
                **provider.request_headers(),
                "Content-Type": "application/json",
            }
        if extra_headers:
            headers = {**headers, **extra_headers}
        timeout = self._timeouts.get((provider.name, stream))
        if timeout is None:
            timeout = self._timeouts[provider.name, stream] = _timeout(provider.timeout, stream)
        started = time.perf_counter()
        try:
            response = await self._session.post(
                _url(provider.url(path)),
                data=orjson.dumps(body),
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            )
        except TRANSPORT_ERRORS as exc:
            raise failure(provider, exc) from None
        if self.observe is not None:
            self.observe.labels(provider.name).observe(time.perf_counter() - started)
        return unredirected(provider, response)

    async def post_form(
        self, provider: Provider, path: str, form: aiohttp.FormData, *, stream: bool = False
    ) -> aiohttp.ClientResponse:
        """POST multipart form data (uploads); the caller reads (and releases) the response."""
        return await self._send(provider, "POST", path, data=form, stream=stream)

    async def get(
        self,
        provider: Provider,
        path: str,
        params: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        *,
        stream: bool = False,
    ) -> aiohttp.ClientResponse:
        """GET from a provider (status, lists, file contents); the caller releases it."""
        return await self._send(provider, "GET", path, params=params, stream=stream)

    async def delete(self, provider: Provider, path: str) -> aiohttp.ClientResponse:
        """DELETE at a provider (stored responses); the caller releases the response."""
        return await self._send(provider, "DELETE", path, stream=False)

    async def _send(
        self,
        provider: Provider,
        method: str,
        path: str,
        *,
        data: aiohttp.FormData | None = None,
        params: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        stream: bool,
    ) -> aiohttp.ClientResponse:
        assert self._session is not None, "upstream client used before open()"
        # No Content-Type of ours: aiohttp sets the multipart boundary itself.
        try:
            response = await self._session.request(
                method,
                provider.url(path),
                data=data,
                params=params,
                headers=provider.request_headers(),
                timeout=_timeout(provider.timeout, stream),
                allow_redirects=False,
            )
        except TRANSPORT_ERRORS as exc:
            raise failure(provider, exc) from None
        return unredirected(provider, response)


# What talking to a provider can raise: connection, protocol and payload errors (all
# aiohttp.ClientError), socket errors and timeouts. Nothing broader: an exception of any other
# kind here is our own bug, and must surface as a 500 (and fail a test), not pass as a 502.
TRANSPORT_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)


@functools.lru_cache(maxsize=1024)
def _url(text: str) -> URL:
    """A provider endpoint's URL, parsed once (aiohttp would parse the string per request)."""
    return URL(text)


def unredirected(provider: Provider, response: aiohttp.ClientResponse) -> aiohttp.ClientResponse:
    """The response, unless it is a redirect: then BadGateway (released, logged)."""
    if not 300 <= response.status < 400:
        return response
    response.release()
    log.warning(
        "provider %s answered a redirect (HTTP %d); not followed: its key stays "
        "with its own origin",
        provider.name,
        response.status,
    )
    raise BadGateway(
        f"Provider '{provider.name}' answered with a redirect "
        f"(HTTP {response.status}), which is not followed"
    )


def _timeout(seconds: float, stream: bool) -> aiohttp.ClientTimeout:
    # A stream may run long; what must not stall is each read, not the whole answer.
    if stream:
        return aiohttp.ClientTimeout(total=None, sock_connect=min(seconds, 30), sock_read=seconds)
    return aiohttp.ClientTimeout(total=seconds)


async def read_upstream(provider: Provider, response: aiohttp.ClientResponse) -> bytes:
    """A provider's whole answer, released, with the provider's key scrubbed (a model may be
    made to repeat it: the same rule as for streams); non-2xx answers become our errors."""
    try:
        content = await response.read()
    except TRANSPORT_ERRORS as exc:
        raise failure(provider, exc) from None
    finally:
        response.release()
    if response.status >= 400:
        raise refusal(provider, response.status, content, response.headers, url=str(response.url))
    return scrubbed(provider, content)


def parse_upstream(provider: Provider, content: bytes) -> dict[str, Any]:
    """A provider's JSON object; anything else, or an error body sent with a 2xx status
    (`{"error": ...}`, Anthropic's `{"type": "error"}`), is a 502. A Responses object keeps
    its `error` field: a failed response is an answer."""
    try:
        parsed = jsonio.parse(content)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise malformed(provider)
    if parsed.get("object") != "response" and (
        parsed.get("type") == "error" or parsed.get("error") not in (None, {}, "")
    ):
        kind, message = error_details(parsed)
        said = sanitize(provider, message or kind or "no details")
        raise BadGateway(f"Provider '{provider.name}' answered with an error: {said}")
    return parsed


def malformed(provider: Provider) -> BadGateway:
    """The error for a provider answer we cannot read."""
    return BadGateway(f"Provider '{provider.name}' returned a malformed response")


def untranslatable(provider: Provider, exc: BaseException) -> BadGateway:
    """The 502 for a provider answer a translator failed on, with the traceback logged.

    From the exception alone, an answer of a shape the translator does not expect and a bug
    in the translator look the same; the client gets a 502 either way, the operator the
    traceback (no secrets: code lines and the exception's message) to tell them apart.
    """
    log.warning(
        "could not translate an answer of provider '%s' (%s)",
        provider.name,
        type(exc).__name__,
        exc_info=exc,
    )
    return malformed(provider)


def failure(provider: Provider, exc: BaseException) -> OtariError:
    """A transport-level failure talking to a provider, as the error we answer with."""
    if isinstance(exc, TimeoutError):
        return GatewayTimeout(f"Provider '{provider.name}' did not answer in time")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return BadGateway(f"Could not reach provider '{provider.name}': {type(exc).__name__}")
    return BadGateway(f"Provider '{provider.name}' failed: {type(exc).__name__}")


def sanitize(provider: Provider, message: str) -> str:
    """A provider message safe to show: its key removed, its length bounded."""
    return scrub_text(provider.api_key, message)[:_MAX_MESSAGE]


def scrubbed(provider: Provider, data: bytes) -> bytes:
    """Stream bytes with the provider's key removed (a provider may echo it in an error),
    by the rule of `otari_server.providers.scrub`."""
    return scrub_bytes(provider.api_key, data)


def error_message(body: bytes) -> str:
    """The human message inside a provider error body, whatever its shape."""
    try:
        parsed = jsonio.parse(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace").strip() or "no details"
    _, message = error_details(parsed)
    return message or body.decode("utf-8", "replace")[:_MAX_MESSAGE]


# Statuses whose retry advice the client needs: it is relayed as the provider gave it.
_RETRY_STATUSES = frozenset({429, 503, 529})
# Provider 5xx statuses kept as they are (each means something to a client's retry logic);
# any other 5xx becomes our 502.
_KEPT_5XX = frozenset({503, 504, 529})


def refusal(
    provider: Provider,
    status: int,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    *,
    url: str | None = None,
) -> OtariError:
    """A provider's non-2xx answer as our error, in every wire shape the same way.

    4xx keeps its status and message (401/403, a refusal of the gateway's own provider key,
    become a 502 "provider credential rejected"); 503, 504 and 529 keep their status; other
    5xx become 502. Retry-After and retry-after-ms of a 429, 503 or 529 are relayed. A 404
    for the endpoint itself (not for a model) names the path called, and the whole `url` in
    the operator's log, since it usually means a wrong base_url.
    """
    message = sanitize(provider, error_message(body))
    if status == 404 and url is not None and _no_such_endpoint(message):
        log.warning("provider '%s' answered 404 for %s: is its base_url right?", provider.name, url)
        return UpstreamError(
            f"Provider '{provider.name}': Not Found: the provider has no "
            f"endpoint {urlsplit(url).path} (check its base_url)",
            404,
            code="upstream_endpoint_not_found",
        )
    if status in (401, 403):
        return ProviderCredentialRejected(
            f"Provider '{provider.name}' rejected the gateway's credential (HTTP {status}): "
            "provider credential rejected; the operator must fix the provider's api_key",
            provider.name,
            message,
        )
    advice = retry_advice(headers) if status in _RETRY_STATUSES and headers else {}
    if 400 <= status < 500:
        return UpstreamError(f"Provider '{provider.name}': {message}", status, headers=advice)
    if status in _KEPT_5XX:
        return UpstreamError(
            f"Provider '{provider.name}' failed with HTTP {status}: {message}",
            status,
            headers=advice,
        )
    return BadGateway(f"Provider '{provider.name}' failed with HTTP {status}: {message}")


# What web servers say for a path they do not serve (as opposed to a model they lack).
_GENERIC_404 = frozenset(
    {"not found", "404 not found", "404: not found", "404 page not found", "no details"}
)


def _no_such_endpoint(message: str) -> bool:
    return message.strip().lower() in _GENERIC_404 or message.lstrip().startswith("<")


_MAX_RETRY_SECONDS = 86_400


def retry_advice(headers: Mapping[str, str]) -> dict[str, str]:
    """Retry-After (seconds or an HTTP date) and retry-after-ms from a provider's answer.

    Provider headers are input: a value that is not a plain non-negative number (or, for
    Retry-After, an HTTP date) or is over a day is dropped, never relayed.
    """
    advice = {}
    after = headers.get("retry-after", "").strip()
    if after.isdigit() and int(after) <= _MAX_RETRY_SECONDS:
        advice["Retry-After"] = str(int(after))
    elif after and _http_date(after):
        advice["Retry-After"] = after
    after_ms = headers.get("retry-after-ms", "").strip()
    try:
        milliseconds = float(after_ms) if after_ms else -1.0
    except ValueError:
        milliseconds = -1.0
    if 0 <= milliseconds <= _MAX_RETRY_SECONDS * 1000:
        advice["retry-after-ms"] = after_ms
    return advice


def _http_date(text: str) -> bool:
    try:
        email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return False
    return True

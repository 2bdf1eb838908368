"""The HTTP client to the platform: resolve a request, post a usage report, probe reachability."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import orjson

from otari_server import jsonio
from otari_server.connected.attempts import MalformedRoute, Route, parse_route, split_model
from otari_server.connected.config import PlatformConfig, redacted
from otari_server.errors import (
    AuthenticationFailed,
    BadGateway,
    BudgetExceeded,
    NotFound,
    OtariError,
    PermissionDenied,
    RateLimited,
)

log = logging.getLogger("otari.platform")

RESOLVE_PATH = "/gateway/provider-keys/resolve"
USAGE_PATH = "/gateway/usage"
UNAVAILABLE = "Authorization service unavailable"

# Platform refusals the client sees as they are (status and detail); anything else is our
# problem with the platform, answered 502.
REJECTIONS: dict[int, type[OtariError]] = {
    401: AuthenticationFailed,
    402: BudgetExceeded,
    403: PermissionDenied,
    404: NotFound,
    429: RateLimited,
}
TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)


class Platform:
    """Owns the connection pools to the platform, opened and closed with the app.

    Resolve (and the readiness probe) and usage reports use separate pools: reports, however
    many wait and however slowly the platform takes them, hold at most `usage_concurrency`
    connections and never the ones requests need to be authorized. No call follows a
    redirect: each carries the gateway's token (and resolve the user's), which must reach
    no other origin; a 3xx answer is a failure.
    """

    def __init__(self, config: PlatformConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None
        self._usage_session: aiohttp.ClientSession | None = None
        self._gateway = {"X-Gateway-Token": config.token, "Content-Type": "application/json"}
        self._resolve_timeout = aiohttp.ClientTimeout(total=config.resolve_timeout)
        self._usage_timeout = aiohttp.ClientTimeout(total=config.usage_timeout)
        self._health_timeout = aiohttp.ClientTimeout(total=config.health_timeout)
        self._probe_lock = asyncio.Lock()
        self._probed_at: float | None = None
        self._reachable = False

    async def open(self) -> None:
        """Create the connection pools (must run inside the event loop)."""
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
        self._session = aiohttp.ClientSession(
            connector=connector, skip_auto_headers=("User-Agent",)
        )
        reports = aiohttp.TCPConnector(
            limit=self.config.usage_concurrency, ttl_dns_cache=300, keepalive_timeout=60
        )
        self._usage_session = aiohttp.ClientSession(
            connector=reports, skip_auto_headers=("User-Agent",)
        )

    async def close(self) -> None:
        """Close pooled connections."""
        for session in (self._session, self._usage_session):
            if session is not None:
                await session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The open pool for resolve and readiness."""
        assert self._session is not None, "platform client used before open()"
        return self._session

    async def resolve(self, user_token: str, model: str) -> Route:
        """Ask which providers may serve `model` for this user; raise what the client gets."""
        provider, name = split_model(model)
        body: dict[str, Any] = {"model": name}
        if provider is not None:
            body["provider"] = provider
        headers = {**self._gateway, "X-User-Token": user_token}
        try:
            async with self.session.post(
                self.config.url(RESOLVE_PATH),
                data=orjson.dumps(body),
                headers=headers,
                timeout=self._resolve_timeout,
                allow_redirects=False,
            ) as response:
                status, content = response.status, await response.read()
                retry_after = response.headers.get("Retry-After")
        except TRANSPORT_ERRORS as exc:
            log.warning("platform resolve failed: %s", type(exc).__name__)
            raise BadGateway(UNAVAILABLE, code="authorization_unavailable") from None
        if status == 200:
            try:
                return parse_route(jsonio.parse(content))
            except (orjson.JSONDecodeError, MalformedRoute) as exc:
                log.warning("platform resolve answered an unusable body: %s", exc)
                raise BadGateway(UNAVAILABLE, code="authorization_unavailable") from None
        rejection = REJECTIONS.get(status)
        if 300 <= status < 400:
            log.warning(
                "platform resolve answered a redirect (HTTP %d); not followed: "
                "credentials stay with %s",
                status,
                redacted(self.config.base_url),
            )
            raise BadGateway(UNAVAILABLE, code="authorization_unavailable")
        if rejection is None:
            log.warning("platform resolve answered HTTP %d", status)
            raise BadGateway(UNAVAILABLE, code="authorization_unavailable")
        keep = {"Retry-After": retry_after} if status == 429 and retry_after else None
        raise rejection(_detail(content), headers=keep)

    async def post_usage(self, body: bytes, key: str) -> tuple[int, str | None]:
        """Send one usage report once, under its idempotency key.

        Returns the HTTP status and Retry-After header; transport errors propagate.
        """
        assert self._usage_session is not None, "platform client used before open()"
        headers = {**self._gateway, "Idempotency-Key": key}
        async with self._usage_session.post(
            self.config.url(USAGE_PATH),
            data=body,
            headers=headers,
            timeout=self._usage_timeout,
            allow_redirects=False,
        ) as response:
            await response.read()
            return response.status, response.headers.get("Retry-After")

    async def reachable(self) -> bool:
        """Whether the platform answers, probed at most once per `health_cache` seconds."""
        if self._fresh():
            return self._reachable
        async with self._probe_lock:  # concurrent readiness checks share one probe
            if not self._fresh():
                self._reachable = await self._probe()
                self._probed_at = time.monotonic()
        return self._reachable

    def _fresh(self) -> bool:
        return (
            self._probed_at is not None
            and time.monotonic() - self._probed_at < self.config.health_cache
        )

    async def _probe(self) -> bool:
        try:
            async with self.session.get(
                self.config.url(self.config.health_path),
                timeout=self._health_timeout,
                allow_redirects=False,
            ) as response:
                return response.status < 500
        except TRANSPORT_ERRORS:
            return False


def _detail(content: bytes) -> str:
    """The platform's `detail` message, or a generic one when it sent none."""
    try:
        parsed = jsonio.parse(content)
    except orjson.JSONDecodeError:
        parsed = None
    detail = parsed.get("detail") if isinstance(parsed, dict) else None
    return detail if isinstance(detail, str) and detail else "Authorization request rejected"

"""A fake otari platform on loopback: the resolve and usage endpoints, scripted and recorded.

Like the fake providers (tests/support/fakes.py) it is an aiohttp server in a background thread,
bound to 127.0.0.1 on a free port, so the gateway under test (in this process or another)
talks to it over real sockets.

    with FakePlatform() as platform, FakeOpenAI(api_key=KEY) as provider:
        platform.route(attempt(provider, "att-1", api_key=KEY))  # every resolve, by default
        platform.reject(429, "Slow down", retry_after="7")       # only the next resolve
        platform.fail_usage(2)                                   # next two reports: 503
        ...
        [report] = platform.wait_usage(1)

Resolve answers the attempts given to `route` (the current shape), or exactly a queued
`Reply`. Usage reports answer 200 unless a reply is queued or an `outage` runs; `usage`
holds the delivered bodies (2xx answered), once per `Idempotency-Key` as a platform that
dedupes records them, and `usage_requests` every try.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
from aiohttp import web

from otari_server import settings as settings_module
from otari_server.settings import Settings
from tests.support.fakes import FakeOpenAI, FakeServer
from tests.support.loopback import LoopbackServer

GATEWAY_TOKEN = "gw-platform-token-0123456789"
USER_TOKEN = "otari-user-token-alice"
PROVIDER_KEY = "sk-platform-issued-key-0123456789"  # the provider key the platform hands out


@dataclass(frozen=True)
class Reply:
    """What the fake answers to one call. Body None: the scripted route (resolve) or {}."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (cancelled when the gateway gives up)
    drop: bool = False  # close the connection without an answer
    landed: bool = False  # usage: record the report first, then delay (a slow 200)


@dataclass(frozen=True)
class Seen:
    """One request as the fake received it."""

    path: str
    headers: dict[str, str]  # keys lower-cased
    body: Any


def attempt(
    provider: FakeServer | None,
    attempt_id: str,
    *,
    name: str = "openai",
    model: str = "gpt-4o-mini",
    api_key: str = "sk-platform-key",
    position: int | None = None,
    api_base: str | None = None,
) -> dict[str, Any]:
    """One attempt of a resolve answer, pointing at a fake provider (or at `api_base`)."""
    base = api_base if api_base is not None else (provider.base_url if provider else None)
    entry: dict[str, Any] = {
        "attempt_id": attempt_id,
        "provider": name,
        "model": model,
        "api_key": api_key,
        "api_base": base,
        "managed": True,
    }
    if position is not None:
        entry["position"] = position
    return entry


def platform_table(platform: FakePlatform, **keys: Any) -> dict[str, Any]:
    """The [platform] table of a gateway connected to `platform`, with `keys` added."""
    # Fake providers listen on loopback, which connected mode refuses unless allowed.
    return {
        "token": platform.token,
        "base_url": platform.url,
        "usage_backoff": 0.01,
        "allow_loopback": True,
        **keys,
    }


def connected_settings(
    platform: FakePlatform, overrides: Mapping[str, Any] | None = None, **keys: Any
) -> Settings:
    """Settings for an in-process gateway connected to `platform`; `keys` go in [platform]."""
    values = {**(overrides or {}), "platform": platform_table(platform, **keys)}
    return settings_module.load(None, values, environ={})


def connected_config(
    directory: Path, platform: FakePlatform, overrides: Mapping[str, Any] | None = None, **keys: Any
) -> Path:
    """The same settings as a config file, for an `otari serve` process (tests/procs.py)."""
    values = {
        "log_level": "warning",
        **(overrides or {}),
        "platform": platform_table(platform, **keys),
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"connected-{uuid.uuid4().hex[:8]}.toml"
    path.write_text(tomli_w.dumps(values), encoding="utf-8")
    return path


def platform_fixture() -> Iterator[FakePlatform]:
    """The `platform` fixture (tests/server/conftest.py): a fake platform for one test."""
    with FakePlatform() as fake:
        yield fake


def provider_fixture(platform: FakePlatform) -> Iterator[FakeOpenAI]:
    """The `provider` fixture: a fake OpenAI provider expecting PROVIDER_KEY, to which the
    platform routes every request as attempt `att-1`."""
    with FakeOpenAI(api_key=PROVIDER_KEY) as fake:
        platform.route(attempt(fake, "att-1", api_key=PROVIDER_KEY))
        yield fake


class FakePlatform(LoopbackServer):
    """The platform's gateway API: POST resolve, POST usage, GET / and /health."""

    name = "fake-platform"

    def __init__(self, token: str = GATEWAY_TOKEN) -> None:
        super().__init__()
        self.token = token
        self.healthy = True
        self.attempts: list[dict[str, Any]] = []
        self.resolves: list[Seen] = []
        self.usage_requests: list[Seen] = []
        self.usage: list[dict[str, Any]] = []
        self.usage_keys: set[str] = set()  # Idempotency-Key of every recorded report
        self.outage: Reply | None = None  # while set, every usage try gets this reply
        self.usage_in_flight = 0
        self.usage_peak = 0  # most usage tries held open at once
        self._resolve_replies: deque[Reply] = deque()
        self._usage_replies: deque[Reply] = deque()
        self._ids = itertools.count(1)
        self._condition = threading.Condition()

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/gateway/provider-keys/resolve", self._resolve)
        app.router.add_post("/gateway/usage", self._usage)
        app.router.add_get("/", self._health)
        app.router.add_get("/health", self._health)
        return app

    # -- scripting -------------------------------------------------------------------------

    def route(self, *attempts: dict[str, Any]) -> None:
        """Answer every unscripted resolve with these attempts, in order."""
        self.attempts = [{"position": i, **a} for i, a in enumerate(attempts)]

    def push_resolve(self, reply: Reply | None = None, **fields: Any) -> None:
        """Queue the answer to the next resolve."""
        with self._condition:
            self._resolve_replies.append(reply or Reply(**fields))

    def reject(self, status: int, detail: Any, retry_after: str | None = None) -> None:
        """Queue a refusal of the next resolve, FastAPI style: {"detail": ...}."""
        headers = {"Retry-After": retry_after} if retry_after else {}
        self.push_resolve(Reply(status, {"detail": detail}, headers))

    def fail_usage(self, times: int, status: int = 503, **fields: Any) -> None:
        """The next `times` usage reports answer `status` (or as `fields` say)."""
        with self._condition:
            for _ in range(times):
                self._usage_replies.append(Reply(status, {"detail": "try later"}, **fields))

    def wait_usage(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Block until `count` reports were delivered; exactly those bodies."""
        with self._condition:
            if not self._condition.wait_for(lambda: len(self.usage) >= count, timeout):
                raise TimeoutError(f"{len(self.usage)} of {count} usage reports delivered")
            assert len(self.usage) == count, self.usage
            return list(self.usage)

    def wait_usage_tries(self, count: int, timeout: float = 10.0) -> list[Seen]:
        """Block until `count` usage requests arrived, delivered or not."""
        with self._condition:
            if not self._condition.wait_for(lambda: len(self.usage_requests) >= count, timeout):
                raise TimeoutError(f"{len(self.usage_requests)} of {count} usage tries arrived")
            return list(self.usage_requests)

    def settle(self, quiet: float = 0.3) -> None:
        """Return once no usage request arrived for `quiet` seconds (to assert nothing more)."""
        with self._condition:
            seen = len(self.usage_requests)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                self._condition.wait(quiet)
                if len(self.usage_requests) == seen:
                    return
                seen = len(self.usage_requests)

    @property
    def last_resolve(self) -> Seen:
        """The most recent resolve request."""
        return self.resolves[-1]

    # -- handlers --------------------------------------------------------------------------

    async def _seen(self, request: web.Request) -> Seen:
        raw = await request.read()
        return Seen(
            request.path,
            {k.lower(): v for k, v in request.headers.items()},
            json.loads(raw) if raw else None,
        )

    def _refuse(self, seen: Seen) -> web.Response | None:
        if seen.headers.get("x-gateway-token") != self.token:
            return web.json_response({"detail": "Invalid gateway token"}, status=401)
        return None

    async def _resolve(self, request: web.Request) -> web.StreamResponse:
        seen = await self._seen(request)
        with self._condition:
            self.resolves.append(seen)
            reply = self._resolve_replies.popleft() if self._resolve_replies else Reply()
        if (refused := self._refuse(seen)) is not None:
            return refused
        body = reply.body
        if body is None:
            body = {
                "request_id": f"req-{next(self._ids)}",
                "fallback_enabled": len(self.attempts) > 1,
                "attempts": self.attempts,
            }
        return await self._answer(request, reply, body)

    async def _usage(self, request: web.Request) -> web.StreamResponse:
        seen = await self._seen(request)
        with self._condition:
            self.usage_requests.append(seen)
            reply = (
                self._usage_replies.popleft() if self._usage_replies else (self.outage or Reply())
            )
            self.usage_in_flight += 1
            self.usage_peak = max(self.usage_peak, self.usage_in_flight)
            self._condition.notify_all()
        try:
            if (refused := self._refuse(seen)) is not None:
                return refused
            body = (
                reply.body
                if reply.body is not None
                else {"correlation_id": seen.body.get("correlation_id"), "status": "recorded"}
            )
            if reply.landed:
                self._record(seen)
            response = await self._answer(request, reply, body)
            if 200 <= reply.status < 300 and not reply.drop:
                self._record(seen)
            return response
        finally:
            with self._condition:
                self.usage_in_flight -= 1

    def _record(self, seen: Seen) -> None:
        """Keep a report once per idempotency key (a retry of a landed report is not new)."""
        key = seen.headers.get("idempotency-key")
        with self._condition:
            if key is None or key not in self.usage_keys:
                if key is not None:
                    self.usage_keys.add(key)
                self.usage.append(seen.body)
            self._condition.notify_all()

    async def _health(self, request: web.Request) -> web.StreamResponse:
        if self.healthy:
            return web.json_response({"status": "ok"})
        return web.json_response({"detail": "maintenance"}, status=503)

    async def _answer(self, request: web.Request, reply: Reply, body: Any) -> web.StreamResponse:
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.drop:
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        if isinstance(body, bytes | str):
            return web.Response(
                body=body,
                status=reply.status,
                headers=dict(reply.headers),
                content_type="application/json",
            )
        return web.json_response(body, status=reply.status, headers=dict(reply.headers))


__all__ = [
    "GATEWAY_TOKEN",
    "PROVIDER_KEY",
    "USER_TOKEN",
    "FakePlatform",
    "Reply",
    "Seen",
    "attempt",
    "connected_config",
    "connected_settings",
    "platform_fixture",
    "platform_table",
    "provider_fixture",
]

"""Connected mode's state, owned by the app: the HTTP clients and the usage report queue."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from starlette.requests import Request

from otari_server.connected.addresses import GuardedResolver
from otari_server.connected.config import PlatformConfig
from otari_server.connected.platform import Platform
from otari_server.connected.queue import UsageQueue
from otari_server.connected.reports import Reporter
from otari_server.providers.upstream import Upstream
from otari_server.settings import Settings


@dataclass
class ConnectedRuntime:
    """Everything a connected-mode request may need, created once per app."""

    settings: Settings
    config: PlatformConfig
    platform: Platform
    reporter: Reporter
    upstream: Upstream
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def build(cls, settings: Settings, config: PlatformConfig) -> ConnectedRuntime:
        """A runtime whose clients are not open yet."""
        platform = Platform(config)
        queue = UsageQueue(config.queue_path, config.usage_queue_max_bytes)
        return cls(
            settings=settings,
            config=config,
            platform=platform,
            reporter=Reporter(platform, queue),
            upstream=Upstream(resolver=GuardedResolver(config)),
        )

    async def open(self) -> None:
        """Open the connection pools and the usage queue (inside the event loop).

        Raises OSError or sqlite3.Error when the usage queue file cannot be used.
        """
        await self.upstream.open()
        await self.platform.open()
        self.reporter.open()

    async def close(self) -> None:
        """Deliver what reports we can within the drain timeout, then close the pools."""
        await self.reporter.close(self.config.usage_drain_timeout)
        await self.upstream.close()
        await self.platform.close()


def runtime_of(request: Request) -> ConnectedRuntime:
    """The app's connected-mode state."""
    runtime: ConnectedRuntime = request.app.state.connected
    return runtime

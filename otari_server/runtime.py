"""The daemon's state, owned by the app: database, caches, background work."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from anyio import to_thread
from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from otari_server.access.auth import KeyActivity, KeyCache, MasterKey, generate_key
from otari_server.accounting import price_import, rate_limits, retention, settlements, spool
from otari_server.accounting.budget_alerts import Alerts, parse_settings
from otari_server.accounting.ledger import Ledger
from otari_server.accounting.prices import PriceBook
from otari_server.providers import Provider, ProviderConfigError, build_providers
from otari_server.providers.upstream import Upstream
from otari_server.routing.book import RouteBook
from otari_server.routing.cooldowns import Cooldowns
from otari_server.routing.model import RouteError, parse_config
from otari_server.settings import ConfigError, Settings, master_key_path, state_dir
from otari_server.storage import db, secret_files
from otari_server.storage.tables import APIKey, utcnow

if TYPE_CHECKING:
    from otari_server.metrics import Metrics

log = logging.getLogger("otari")


@dataclass
class Runtime:
    """Everything a request may need, created once per app by `open_runtime`."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    master: MasterKey
    keys: KeyCache
    activity: KeyActivity
    prices: PriceBook
    ledger: Ledger
    providers: dict[str, Provider]
    upstream: Upstream = field(default_factory=Upstream)
    metrics: Metrics | None = None
    # Budget alerts ([alerts] with a webhook_url), else None.
    alerts: Alerts | None = None
    routes: RouteBook = field(default_factory=RouteBook)
    cooldowns: Cooldowns = field(default_factory=Cooldowns)
    schema: str = field(default_factory=db.schema_head)
    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started_at: datetime = field(default_factory=utcnow)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # Admitted requests not settled yet (proxy.Call by id): settled at shutdown if cut.
    calls: dict[int, Any] = field(default_factory=dict)
    # Sessions that only read: on SQLite they never take the write lock (see db.read_only).
    reads: sessionmaker[Session] = field(init=False)

    def __post_init__(self) -> None:
        self.reads = db.read_session_factory(self.engine)

    def changed(self) -> None:
        """Management data changed: drop cached auth and prices so this instance sees it."""
        self.keys.clear()
        self.prices.clear()


def resolve_master_key(settings: Settings, announce: bool = True) -> str:
    """The configured master key, else the one generated on first start (file mode 0600).

    `announce` logs where it came from (once per serving process: `prepare` does not).
    """
    if settings.master_key:
        if announce:
            log.info("master key: from the configuration (config file or OTARI_MASTER_KEY)")
        return settings.master_key
    path = master_key_path()
    if path.exists():
        if announce:
            log.info("master key: from the generated key file %s", path)
        return path.read_text(encoding="utf-8").strip()
    key = "sk-otari-" + generate_key()[3:]
    secret_files.write(path, key + "\n")
    log.warning("no master key configured: generated one and saved it to %s", path)
    return key


def bootstrap_api_key(sessions: sessionmaker[Session]) -> None:
    """When no API key exists yet, mint one and show it once (never through the log)."""
    with sessions.begin() as session:
        if session.scalar(select(func.count()).select_from(APIKey)):
            return
        from otari_server.access.minting import create_key  # keys imports runtime's callers

        created = create_key(
            session,
            key_name="bootstrap",
            user_id=None,
            expires_at=None,
            metadata={"bootstrap": True},
        )
    if sys.stdout.isatty():
        print(f"Created a first API key (shown once): {created.key}", flush=True)
        return
    path = state_dir() / "bootstrap_api_key"
    secret_files.write(path, created.key + "\n")
    log.warning("created a first API key; it is in %s (mode 0600), shown nowhere else", path)


def providers_of(settings: Settings) -> dict[str, Provider]:
    """Configured providers, plus well-known ones whose key is in the environment."""
    table = {
        name: {"timeout": settings.request_timeout, **dict(values)}
        if isinstance(values, dict)
        else values
        for name, values in settings.providers.items()
    }
    try:
        return build_providers(table, os.environ, autodetect=True)
    except ProviderConfigError as exc:
        raise ConfigError(str(exc)) from None


def routes_of(settings: Settings, providers: dict[str, Provider]) -> RouteBook:
    """The config file's routes; ConfigError for a bad one or one naming no known provider."""
    try:
        routes = parse_config(settings.routes)
    except RouteError as exc:
        raise ConfigError(str(exc)) from None
    for route in routes.values():
        for index, target in enumerate(route.targets):
            if target.provider not in providers:
                raise ConfigError(
                    f"routes.{route.name}.targets[{index}]: unknown provider "
                    f"'{target.provider}' in '{target.model}'"
                )
    return RouteBook(routes)


def announce(providers: dict[str, Provider], settings: Settings) -> None:
    """Say at start-up which providers requests can reach, and warn when none can."""
    if not providers:
        log.warning(
            "no providers configured: every generation request will be refused; add "
            "a [providers.NAME] table or set a preset's key variable (OPENAI_API_KEY, ...)"
        )
        return
    log.info(
        "providers: %s",
        ", ".join(
            f"{name} ({provider.type}, {'config' if name in settings.providers else 'environment'})"
            for name, provider in sorted(providers.items())
        ),
    )


def node_name(settings: Settings) -> str:
    """This host and port: stable across restarts, so a restart can reclaim its holds."""
    return f"{socket.gethostname()}:{settings.port}"


def instance_name(settings: Settings) -> str:
    """The name this process's holds are recorded under (workers add their pid)."""
    name = node_name(settings)
    return name if settings.workers == 1 else f"{name}:{os.getpid()}"


def prepare(settings: Settings) -> None:
    """Start-up work done once per host and port, before any worker serves.

    Migrate (unless switched off), make sure a master key exists, mint the bootstrap key,
    and give back budget holds an earlier run left behind. With --workers the parent runs
    this once; each worker then skips it.
    """
    if settings.auto_migrate:
        db.migrate(settings.database_url)
    resolve_master_key(settings, announce=False)  # generated here on a first start
    engine = db.create_db_engine(settings.database_url)
    try:
        if settings.bootstrap_api_key:
            bootstrap_api_key(db.session_factory(engine))
        with engine.begin() as conn:
            reclaimed = settlements.reclaim(conn, node_name(settings), utcnow())
        if reclaimed:
            log.warning("gave back %d budget reservation(s) left by an earlier run", reclaimed)
        # After the reclaim: spooled rows then release nothing that was given back already.
        spool.replay_spool(engine, node_name(settings), node_name(settings))
    except DBAPIError as exc:
        # Without auto-migration the database may be down or not migrated yet: serve anyway
        # (readiness says 503) rather than refuse to start; the periodic sweep reclaims later.
        log.warning("database not usable at start-up (%s); continuing", type(exc.orig).__name__)
    finally:
        engine.dispose()


def open_runtime(settings: Settings) -> Runtime:
    """Prepare (single process only) and build the app's state."""
    providers = providers_of(settings)
    alert_settings = parse_settings(settings.alerts)  # a bad [alerts] table stops start-up
    routes = routes_of(settings, providers)
    announce(providers, settings)
    if settings.workers == 1:
        prepare(settings)
    engine = db.create_db_engine(settings.database_url)
    sessions = db.session_factory(engine)
    runtime = Runtime(
        settings=settings,
        engine=engine,
        sessions=sessions,
        master=MasterKey(resolve_master_key(settings)),
        keys=KeyCache(settings.auth_cache_ttl),
        activity=KeyActivity(),
        prices=PriceBook(
            db.read_session_factory(engine),
            ttl=max(settings.auth_cache_ttl, 1.0),
            fallback=price_import.fallback_price if settings.pricing.get("fallback") else None,
        ),
        ledger=Ledger(
            engine,
            instance_name(settings),
            settings.reservation_ttl,
            settings.usage_flush_interval,
            spool.spool_path(instance_name(settings)),
        ),
        providers=providers,
        routes=routes,
        instance_id=instance_name(settings),
    )
    if alert_settings is not None:
        runtime.alerts = Alerts(engine, alert_settings)
    if settings.metrics:
        from otari_server.metrics import Metrics  # prometheus_client only when asked for

        runtime.metrics = Metrics(lambda: runtime.ledger.depth, lambda: runtime.ledger.rejected)
        runtime.upstream.observe = runtime.metrics.upstream_latency
    return runtime


def flush_activity(runtime: Runtime) -> None:
    """Write pending last_used_at values in one transaction."""
    pending = runtime.activity.drain()
    if not pending:
        return
    with runtime.sessions.begin() as session:
        for key_id, used_at in pending.items():
            session.execute(update(APIKey).where(APIKey.id == key_id).values(last_used_at=used_at))


async def _flush_activity_forever(runtime: Runtime, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await to_thread.run_sync(flush_activity, runtime)
        except Exception:  # a database outage must not kill the loop; we retry next tick
            log.warning("could not record key activity; will retry", exc_info=True)


async def _reclaim_expired_forever(runtime: Runtime, interval: float) -> None:
    def reclaim_expired() -> int:
        with runtime.engine.begin() as conn:
            rate_limits.prune(conn, utcnow())
            return settlements.reclaim(conn, None, utcnow())

    while True:
        await asyncio.sleep(interval)
        try:
            await to_thread.run_sync(reclaim_expired)
        except Exception:
            log.warning("could not reclaim expired reservations; will retry", exc_info=True)


def load_routes(runtime: Runtime) -> None:
    """Read the API-defined routes (other instances may have changed them)."""
    with runtime.sessions() as session:
        runtime.routes.load(session)


async def _load_routes_forever(runtime: Runtime, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await to_thread.run_sync(load_routes, runtime)
        except Exception:  # the database may be down; the routes we have keep serving
            log.warning("could not read the routes; will retry", exc_info=True)


async def start_background(runtime: Runtime) -> None:
    """Open the upstream client and start the periodic writers."""
    await runtime.upstream.open()
    if runtime.settings.pricing.get("fallback"):
        # Load the package's price data now, not on the first unpriced request.
        await to_thread.run_sync(price_import.fallback_price, "openai:gpt-4o", utcnow())
    runtime.ledger.start()
    if runtime.alerts is not None:
        runtime.ledger.on_settled = runtime.alerts.touch
        runtime.tasks.append(runtime.alerts.start())
    with contextlib.suppress(DBAPIError):  # not migrated yet: the loop below retries
        await to_thread.run_sync(load_routes, runtime)
    runtime.tasks += [
        asyncio.create_task(
            _load_routes_forever(runtime, max(runtime.settings.auth_cache_ttl, 1.0) * 5)
        ),
        asyncio.create_task(_flush_activity_forever(runtime, 5.0)),
        asyncio.create_task(_reclaim_expired_forever(runtime, 60.0)),
    ]
    if runtime.settings.usage_retention_days is not None:
        runtime.tasks.append(
            asyncio.create_task(
                retention.retain_forever(runtime.sessions, runtime.settings.usage_retention_days)
            )
        )


async def settle_cut_calls(runtime: Runtime, wait: float = 1.0) -> None:
    """Give every request still admitted at shutdown its usage row and release its hold.

    Requests cut past shutdown_timeout settle themselves as their tasks unwind (a stream as
    client_disconnected); those that have not after `wait` seconds are settled here as
    errors answered 503.
    """
    deadline = asyncio.get_running_loop().time() + wait
    while runtime.calls and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    for call in list(runtime.calls.values()):
        call.settle("error", error="cut at shutdown (shutdown_timeout passed)", status_code=503)


async def close_runtime(runtime: Runtime) -> None:
    """Stop background work, flush what is pending, release the database."""
    for task in runtime.tasks:
        task.cancel()
    for task in runtime.tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await settle_cut_calls(runtime)
    await runtime.upstream.close()
    await to_thread.run_sync(runtime.ledger.stop, runtime.settings.shutdown_timeout)
    with contextlib.suppress(Exception):
        await to_thread.run_sync(flush_activity, runtime)
    runtime.engine.dispose()

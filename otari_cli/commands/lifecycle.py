"""`otari serve|start|stop|restart|status|logs`: run the daemon, here or in the background."""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from otari_cli import daemon
from otari_cli.client import Gateway
from otari_cli.durations import format_duration
from otari_cli.errors import CliError, NotRunning, UsageError
from otari_cli.output import cell
from otari_cli.runtime import Runtime, runtime

app = typer.Typer()


def log_level(text: str) -> str:
    """A logging level name (info, DEBUG) or number (10), as the daemon accepts it."""
    if text.isdigit() or text.upper() in logging.getLevelNamesMapping() or text.lower() == "trace":
        return text.lower()
    raise typer.BadParameter(f"{text!r} is not a level name (debug, info, ...) or a number")


Config = Annotated[Path | None, typer.Option("--config", "-c", help="Config TOML file.")]
Host = Annotated[str | None, typer.Option("--host", help="Address to listen on.")]
Port = Annotated[int | None, typer.Option("--port", min=1, max=65535, help="Port to listen on.")]
DatabaseUrl = Annotated[
    str | None, typer.Option("--database-url", help="SQLite or PostgreSQL URL.")
]
MasterKey = Annotated[str | None, typer.Option("--master-key", help="The master key.")]
LogLevel = Annotated[
    str | None, typer.Option("--log-level", parser=log_level, help="Level name or number.")
]
AutoMigrate = Annotated[
    bool | None,
    typer.Option("--auto-migrate/--no-auto-migrate", help="Migrate the database at startup."),
]
Workers = Annotated[int | None, typer.Option("--workers", min=1, help="Worker processes.")]
Wait = Annotated[
    float, typer.Option("--wait", min=1.0, help="Seconds to wait for readiness before failing.")
]


@dataclass(frozen=True)
class ServeFlags:
    """The daemon options the user gave (None: not given)."""

    config: Path | None = None
    host: str | None = None
    port: int | None = None
    database_url: str | None = None
    master_key: str | None = None
    log_level: str | None = None
    auto_migrate: bool | None = None
    workers: int | None = None

    def overrides(self) -> dict[str, object]:
        """Settings overrides for otari_server.daemon.run: only what was given."""
        given = {
            "host": self.host,
            "port": self.port,
            "database_url": self.database_url,
            "master_key": self.master_key,
            "log_level": self.log_level,
            "auto_migrate": self.auto_migrate,
            "workers": self.workers,
        }
        return {k: v for k, v in given.items() if v is not None}

    def args(self) -> list[str]:
        """`otari serve` arguments for the background daemon; the master key and the
        database URL (which may hold a password) are left out: they go through the
        environment, never a command line others can read."""
        args: list[str] = []
        if self.config is not None:
            args += ["--config", str(self.config.resolve())]
        for flag, value in (
            ("--host", self.host),
            ("--port", self.port),
            ("--log-level", self.log_level),
            ("--workers", self.workers),
        ):
            if value is not None:
                args += [flag, str(value)]
        if self.auto_migrate is not None:
            args.append("--auto-migrate" if self.auto_migrate else "--no-auto-migrate")
        return args

    def given(self) -> bool:
        """Whether any option was given."""
        return bool(self.overrides()) or self.config is not None

    def over(self, record: daemon.Record) -> ServeFlags:
        """These options over those `record`'s daemon was started with (its `args` and
        database URL): what `otari restart --workers 2` runs, the rest kept."""
        kept: dict[str, Any] = {"database_url": record.database_url}
        args = iter(record.args)
        for arg in args:
            if arg in ("--auto-migrate", "--no-auto-migrate"):
                kept["auto_migrate"] = arg == "--auto-migrate"
                continue
            name = arg.removeprefix("--").replace("-", "_")
            value = next(args, None)
            if name in ("port", "workers") and value is not None:
                kept[name] = int(value)
            elif name == "config" and value is not None:
                kept[name] = Path(value)
            elif name in ("host", "log_level"):
                kept[name] = value
        given = {k: v for k, v in asdict(self).items() if v is not None}
        return replace(ServeFlags(**kept), **given)


@app.command("serve")
def serve(
    ctx: typer.Context,
    config: Config = None,
    host: Host = None,
    port: Port = None,
    database_url: DatabaseUrl = None,
    master_key: MasterKey = None,
    log_level: LogLevel = None,
    auto_migrate: AutoMigrate = None,
    workers: Workers = None,
) -> None:
    """Run the gateway in the foreground (Ctrl-C or SIGTERM stops it gracefully)."""
    flags = ServeFlags(
        config, host, port, database_url, master_key, log_level, auto_migrate, workers
    )
    if os.name == "posix" and sys.executable:
        _exec_daemon(flags, runtime(ctx).options.debug)
    # The only import of the server: management commands stay fast without it.
    from otari_server.daemon import run
    from otari_server.settings import ConfigError

    try:
        run(config, flags.overrides())
    except ConfigError as exc:
        raise UsageError(f"invalid configuration: {exc}") from None


# Settings that may hold a secret, and the variables that carry them to the daemon
# (otari_server/daemon.py reads the same names; a test keeps the two equal).
SECRET_VARIABLES = {
    "master_key": "_OTARI_SERVE_MASTER_KEY",
    "database_url": "_OTARI_SERVE_DATABASE_URL",
}


def _exec_daemon(flags: ServeFlags, debug: bool) -> None:
    """Become `python -m otari_server.daemon serve` (same pid, signals, exit codes; no return).

    The serving process then holds only the server's libraries: the CLI's (Typer, Rich,
    httpx, these modules) cost the daemon some 5 MiB of RSS for as long as it runs.
    """
    overrides = flags.overrides()
    env = dict(os.environ)
    for name, variable in SECRET_VARIABLES.items():  # never on a command line others can read
        if name in overrides:
            env[variable] = str(overrides.pop(name))
    request = {
        "config": str(flags.config) if flags.config is not None else None,
        "overrides": overrides,
        "debug": debug,
    }
    sys.stdout.flush()
    sys.stderr.flush()
    # -P: the daemon's imports never come from the current directory.
    os.execve(
        sys.executable,
        [sys.executable, "-P", "-m", "otari_server.daemon", "serve", json.dumps(request)],
        env,
    )


@app.command("start")
def start(
    ctx: typer.Context,
    config: Config = None,
    host: Host = None,
    port: Port = None,
    database_url: DatabaseUrl = None,
    master_key: MasterKey = None,
    log_level: LogLevel = None,
    auto_migrate: AutoMigrate = None,
    workers: Workers = None,
    wait: Wait = 30.0,
) -> None:
    """Run the gateway in the background; return once it is ready."""
    flags = ServeFlags(
        config, host, port, database_url, master_key, log_level, auto_migrate, workers
    )
    _launch(runtime(ctx), flags, None, wait)


@app.command("stop")
def stop(
    ctx: typer.Context,
    grace: Annotated[
        float, typer.Option("--grace", min=0.0, help="Seconds after SIGTERM before SIGKILL.")
    ] = 40.0,
) -> None:
    """Stop the background gateway (SIGTERM, then SIGKILL after --grace seconds)."""
    rt = runtime(ctx)
    with daemon.locked(rt.dirs.pidfile):
        stopped = daemon.stop(rt.dirs.pidfile, grace)
    if stopped is None:
        rt.output.message("otari is not running")
        return
    how = f" (SIGKILL after {grace:g}s)" if stopped.killed else ""
    rt.output.message(f"Stopped otari (pid {stopped.record.pid}){how}")
    rt.output.item(
        {"pid": stopped.record.pid, "stopped": True, "killed": stopped.killed}, id_field="pid"
    )


@app.command("restart")
def restart(
    ctx: typer.Context,
    config: Config = None,
    host: Host = None,
    port: Port = None,
    database_url: DatabaseUrl = None,
    master_key: MasterKey = None,
    log_level: LogLevel = None,
    auto_migrate: AutoMigrate = None,
    workers: Workers = None,
    wait: Wait = 30.0,
    grace: Annotated[float, typer.Option("--grace", min=0.0)] = 40.0,
) -> None:
    """Stop and start again, with the options it was started with; options given here
    replace those (--master-key is never stored: give it again, or keep it in the config
    file)."""
    rt = runtime(ctx)
    flags = ServeFlags(
        config, host, port, database_url, master_key, log_level, auto_migrate, workers
    )
    with daemon.locked(rt.dirs.pidfile):
        stopped = daemon.stop(rt.dirs.pidfile, grace)
    previous = None
    if stopped:
        how = f" (SIGKILL after {grace:g}s)" if stopped.killed else ""
        rt.output.message(f"Stopped otari (pid {stopped.record.pid}){how}")
        if flags.given():
            flags = flags.over(stopped.record)  # what was given, over how it was started
        else:
            previous = stopped.record
    _launch(rt, flags, previous, wait)


def _launch(rt: Runtime, flags: ServeFlags, previous: daemon.Record | None, wait: float) -> None:
    pidfile = rt.dirs.pidfile
    if previous is not None:
        record = daemon.Record(
            0, previous.url, None, previous.config, previous.args, previous.database_url
        )
    else:
        local = rt.local(flags.config, flags.overrides())
        config = str(local.config_file.resolve()) if local.config_file else None
        record = daemon.Record(0, local.url, None, config, flags.args(), flags.database_url)
    host, port = _listen_address(rt, flags, previous)
    # Secrets reach the daemon through its environment (readable by its owner only), and
    # take precedence over the config file there as --master-key and --database-url would.
    env = dict(os.environ)
    if flags.master_key:
        env["OTARI_MASTER_KEY"] = flags.master_key
    if record.database_url:
        env["OTARI_DATABASE_URL"] = record.database_url
    with daemon.locked(pidfile):
        running, stale = daemon.check(pidfile)
        if stale:
            rt.output.warning("removed a stale pidfile (its process is gone)")
        if running:
            rt.output.message(
                f"otari is already running (pid {running.pid}) at {running.url}; nothing changed"
            )
            rt.output.item(_describe(rt, running), id_field="pid")
            return
        if _probe(record.url, 2.0).health:
            raise UsageError(  # a busy port, as below: exit 2
                f"a gateway already answers at {record.url} but was not started by "
                "`otari start`: stop it first, or choose another --port"
            )
        if daemon.port_in_use(host, port):
            raise UsageError(
                f"port {port} is in use: stop what listens there, or choose another --port"
            )
        debug = ["--debug"] if rt.options.debug else []
        command = [sys.executable, "-m", "otari_cli", *debug, "serve", *record.args]
        started = daemon.start(
            pidfile,
            rt.dirs.logfile,
            command,
            record,
            lambda pid: ready_as(record.url, pid),
            wait,
            env,
        )
    rt.output.message(
        f"otari is running at {started.url} (pid {started.pid}); logs: {rt.dirs.logfile}"
    )
    rt.output.item(_describe(rt, started), id_field="pid")


def _listen_address(
    rt: Runtime, flags: ServeFlags, previous: daemon.Record | None
) -> tuple[str, int]:
    """Where the daemon will listen (the previous run's address on a plain restart)."""
    if previous is not None:
        parts = urlsplit(previous.url)
        return parts.hostname or "127.0.0.1", parts.port or 80
    local = rt.local(flags.config, flags.overrides())
    return local.host, local.port


def _describe(rt: Runtime, record: daemon.Record) -> dict[str, Any]:
    return {
        "pid": record.pid,
        "url": record.url,
        "logfile": str(rt.dirs.logfile),
        "pidfile": str(rt.dirs.pidfile),
    }


@dataclass(frozen=True)
class Probe:
    """What a gateway's /health and /health/readiness said."""

    health: dict[str, Any]  # {} if /health did not answer
    ready: bool
    error: str | None = None  # why /health or /health/readiness did not answer


def _probe(url: str, timeout: float) -> Probe:
    """Ask the gateway at `url` for /health and /health/readiness (`timeout` in seconds)."""
    with Gateway(url, None, timeout=timeout) as gateway:
        try:
            health = gateway.get("/health")
            ready, _ = gateway.readiness()
        except CliError as exc:
            return Probe({}, False, str(exc))
    return Probe(health if isinstance(health, dict) else {}, ready)


def ready_as(url: str, pid: int) -> bool:
    """Whether the gateway at `url` is ready and is the process `pid` (or its worker)."""
    probe = _probe(url, 2.0)
    return probe.ready and daemon.serves_for(pid, probe.health.get("pid"))


def uptime(value: object) -> str:
    """uptime_seconds as a human duration."""
    try:
        return format_duration(int(float(str(value))))
    except ValueError:
        return cell(value)


@app.command("status")
def status(ctx: typer.Context) -> None:
    """Whether the background gateway runs (exit 0) or not (exit 3), and how it is (`ready`
    is false, with a warning saying why, when it runs but does not answer)."""
    rt = runtime(ctx)
    record, stale = daemon.check(rt.dirs.pidfile)
    fields = ("version", "database", "started_at", "uptime_seconds")
    if record is None:
        # A gateway may answer at the configured URL without `otari start` (a systemd unit,
        # `otari serve` in another terminal): report it rather than "not running".
        url = rt.local().url
        probe = _probe(url, min(rt.options.timeout, 2.0))
        health, ready = probe.health, probe.ready
        if "version" in health and "pid" in health:  # an otari gateway's /health, not any JSON
            rt.output.item(
                {
                    "running": True,
                    "pid": health.get("pid"),
                    "url": url,
                    **{f: health.get(f) for f in fields},
                    "ready": ready,
                    "started_by": "not `otari start` (no pidfile)",
                },
                id_field="pid",
                shows={"uptime_seconds": uptime},
            )
            return
        rt.output.item({"running": False, "pidfile": str(rt.dirs.pidfile)}, id_field="running")
        raise NotRunning("otari is not running" + (" (removed a stale pidfile)" if stale else ""))
    probe = _probe(record.url, rt.options.timeout)
    health, ready = probe.health, probe.ready
    if probe.error:
        rt.output.warning(
            f"otari (pid {record.pid}) does not answer at {record.url}: {probe.error}"
        )
    elif not daemon.serves_for(record.pid, health.get("pid")):
        # The port was taken by another program: its answers are not this daemon's.
        rt.output.warning(
            f"{record.url} is answered by another process (pid {health.get('pid')}), "
            f"not by otari (pid {record.pid})"
        )
        health, ready = {}, False
    rt.output.item(
        {
            "running": True,
            "pid": record.pid,
            "url": record.url,
            **{f: health.get(f) for f in fields},
            "ready": ready,
            "logfile": str(rt.dirs.logfile),
        },
        id_field="pid",
        shows={"uptime_seconds": uptime},
    )


@app.command("logs")
def logs(
    ctx: typer.Context,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="Lines to show.")] = 50,
) -> None:
    """Show the background gateway's log."""
    rt = runtime(ctx)
    if not rt.dirs.logfile.exists():
        rt.output.message(f"no log yet at {rt.dirs.logfile}")
        return
    logfile = rt.dirs.logfile
    rt.output.text(daemon.follow(logfile, lines) if follow else daemon.tail(logfile, lines))

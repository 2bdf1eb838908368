"""Run the daemon in the foreground (what `otari serve` calls)."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import traceback
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from otari_server import settings
from otari_server.app import check_config, create_app
from otari_server.edge import logs
from otari_server.runtime import prepare
from otari_server.storage import db

__all__ = ["ConfigError", "run", "worker_app"]
ConfigError = settings.ConfigError


def run(config_path: Path | None, overrides: Mapping[str, Any]) -> None:
    """Resolve settings and serve until SIGINT/SIGTERM; exit non-zero if start-up fails."""
    resolved = settings.load(config_path, overrides)
    logs.configure(resolved.log_level, resolved.log_format, resolved.access_log)
    if not resolved.connected:
        check_config(resolved)  # one line naming the key, before anything is served
    options: dict[str, Any] = {
        "host": resolved.host,
        "port": resolved.port,
        "log_level": logs.level_number(resolved.log_level),
        "log_config": None,
        "timeout_graceful_shutdown": int(resolved.shutdown_timeout),
        "server_header": False,
        "access_log": False,
        "proxy_headers": True,
        "forwarded_allow_ips": resolved.forwarded_allow_ips,
    }
    target = (
        "connected to a platform"
        if resolved.connected
        else (f"database {db.redact(resolved.database_url)}")
    )
    # Said once the socket is bound and start-up is done (the database reached, migrated):
    # a start that fails on the way says only why.
    where = f"http://{resolved.host}:{resolved.port} ({target})"
    # Bound before any start-up work, so a port in use stops the start in one line before
    # the database is touched (uvicorn binds after the lifespan). Connections are refused
    # until the server listens on it.
    listening = _bound(resolved.host, resolved.port) if resolved.workers == 1 else None
    if resolved.auto_migrate and not resolved.connected:
        migrate_apart(resolved)
    if listening is None:
        # uvicorn starts the workers and says when each one has started.
        _say(f"otari: starting {resolved.workers} workers on {where}")
        _serve_workers(resolved, config_path, overrides, options)
        return
    server = _Server(uvicorn.Config(create_app(resolved), **options), f"otari: serving on {where}")
    server.run(sockets=[listening])
    if not server.started:
        raise SystemExit(1)


class _Server(uvicorn.Server):
    """uvicorn's server, minus re-raising SIGTERM/SIGINT after a clean graceful shutdown.

    uvicorn re-raises the caught signal on exit, which makes a clean stop look like a crash
    (exit status 143) to supervisors and scripts.
    """

    def __init__(self, config: uvicorn.Config, serving: str) -> None:
        super().__init__(config)
        self._serving = serving

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            _say(self._serving)
        settle_heap()


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def settle_heap() -> None:
    """Move everything start-up made (modules, app, settings, caches) out of the collector's
    reach, once the app is serving.

    Otherwise every full collection walks those ~160,000 long-lived objects again: on the
    2-core bench machine each took 175-240 ms with the event loop stopped, which was the
    whole p99 at concurrency 16 (bench/README.md, 2026-12-01). Objects made per request
    are still collected as before.
    """
    gc.collect()
    gc.freeze()


class MigrationFailed(RuntimeError):
    """The schema upgrade failed; the message is the migration's own error."""


class PortUnavailable(RuntimeError):
    """The address to serve on cannot be bound (in use, or not this host's)."""


def _bound(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port, as uvicorn binds it (IPv6 for a host with a colon).
    Raises PortUnavailable."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise PortUnavailable(f"cannot serve on {host}:{port}: {reason.lower()}") from None
    return sock


def migrate_apart(resolved: settings.Settings) -> None:
    """Bring the schema to the head in a child process, when it is behind (a first start).

    Alembic, Mako and every SQL dialect they import (about 12 MiB) would otherwise stay in the
    serving process for its whole life; a database already at the head costs one query and
    no child. The URL goes to the child on stdin, never on a command line. Its log lines go
    where this process's go. The child is in a process group of its own (a terminal's Ctrl-C
    reaches this process, which kills it) and dies with this process (Linux).

    Raises MigrationFailed with the first line of the migration's error (the whole of it is
    logged); the schema is left as it was.
    """
    engine = db.create_db_engine(resolved.database_url)
    try:
        if db.ping(engine) == db.schema_head():
            return
    finally:
        engine.dispose()
    request = {
        "database_url": resolved.database_url,
        "log_level": resolved.log_level,
        "log_format": resolved.log_format,
        "parent": os.getpid(),
    }
    done = subprocess.run(
        [sys.executable, "-P", "-m", "otari_server.daemon", "migrate"],
        input=json.dumps(request),
        stdout=subprocess.PIPE,
        text=True,
        check=False,
        process_group=0,
    )
    if done.returncode != 0:
        said = done.stdout.strip().splitlines()
        raise MigrationFailed(said[-1] if said else f"exit status {done.returncode}")


# PR_SET_PDEATHSIG (linux/prctl.h): the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> None:
    """Have the kernel send SIGTERM when `parent` ends (Linux); exit now if it has ended.
    For the migrate child and the uvicorn workers."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # it ended before the line above took effect
        raise SystemExit(1)


def _migrate(stdin: str) -> int:
    """The child of `migrate_apart`: migrate; on failure, log the whole error and print its
    first line (the cause, without SQLAlchemy's SQL and link lines) on stdout; exit 1."""
    request = json.loads(stdin)
    _die_with(int(request["parent"]))
    logs.configure(request["log_level"], request["log_format"], access_log=False)
    # Alembic announces each of its plugins at INFO: noise in the 20 lines `otari start`
    # shows when a start fails.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    try:
        db.migrate(request["database_url"])
    except Exception as exc:  # reported by the parent, which stops start-up
        logging.getLogger("otari").error("migration failed: %s: %s", type(exc).__name__, exc)
        cause = next((line for line in str(exc).splitlines() if line.strip()), "")
        print(f"{type(exc).__name__}: {cause}".rstrip(": "), flush=True)
        return 1
    return 0


# The environment variable through which `_serve_workers` tells its workers its pid.
_DAEMON_PID = "OTARI_DAEMON_PID"


def _serve_workers(
    resolved: settings.Settings,
    config_path: Path | None,
    overrides: Mapping[str, Any],
    options: dict[str, Any],
) -> None:
    """Prepare once here, then let uvicorn run N worker processes of `worker_app`."""
    if not resolved.connected:
        prepare(resolved)
    # Workers resolve the same settings from the environment, and skip what was just done.
    if config_path is not None:
        os.environ["OTARI_CONFIG"] = str(config_path)
    for key, value in overrides.items():
        os.environ[f"OTARI_{key.upper()}"] = str(value)
    os.environ["OTARI_AUTO_MIGRATE"] = "false"
    os.environ["OTARI_BOOTSTRAP_API_KEY"] = "false"
    # The workers' parent, named here: a worker that asked os.getppid() after this process
    # died (while it was still importing) would get its new parent and serve on, orphaned.
    os.environ[_DAEMON_PID] = str(os.getpid())
    uvicorn.run("otari_server.daemon:worker_app", factory=True, workers=resolved.workers, **options)


def worker_app() -> FastAPI:
    """The app of one worker process (settings from the environment set by the parent)."""
    _die_with(int(os.environ[_DAEMON_PID]))  # an orphaned worker would go on serving
    resolved = settings.load()
    logs.configure(resolved.log_level, resolved.log_format, resolved.access_log)
    app = create_app(resolved)
    settle_heap()  # what the lifespan opens later is left to the collector
    return app


# The serving process of `otari serve`: `python -P -m otari_server.daemon serve JSON` (and
# `... migrate`, the child of `migrate_apart`, with its JSON on stdin).
#
# `otari serve` parses its options with the CLI (Typer), then replaces itself with this entry
# point (same pid, same signals and exit codes), so that the long-running daemon never holds
# the CLI's libraries (Typer, Click's command tree, Rich, httpx, the CLI modules) in memory.
# JSON is `{"config": path | null, "overrides": {setting: value}, "debug": bool}`; a
# `--master-key` or `--database-url` (which may hold a password) given on the command line
# travels in an environment variable of SECRET_VARIABLES instead (command lines are readable
# by every user), removed at once. The CLI's `otari serve` (otari_cli/commands/lifecycle.py)
# sets the same names. Errors are reported as the CLI reports them: `error: invalid
# configuration: ...` with exit status 2, any other start-up error as `error: unexpected ...`
# with exit status 1.
SECRET_VARIABLES = {
    "master_key": "_OTARI_SERVE_MASTER_KEY",
    "database_url": "_OTARI_SERVE_DATABASE_URL",
}


def _error(text: str) -> None:
    line = f"error: {text}"
    if sys.stderr.isatty():  # what the CLI's Rich console prints: bold red
        line = f"\x1b[1;31m{line}\x1b[0m"
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def main(argv: list[str]) -> int:
    """Serve with the options in argv[1] (see the module docstring); the exit status."""
    if argv == ["migrate"]:
        return _migrate(sys.stdin.read())
    if len(argv) != 2 or argv[0] != "serve":
        sys.stderr.write("usage: python -m otari_server.daemon serve JSON (use `otari serve`)\n")
        return 2
    request = json.loads(argv[1])
    overrides = dict(request.get("overrides") or {})
    for name, variable in SECRET_VARIABLES.items():
        secret = os.environ.pop(variable, None)
        if secret is not None:
            overrides[name] = secret
    config = Path(request["config"]) if request.get("config") else None
    try:
        try:
            run(config, overrides)
        except settings.ConfigError as exc:
            _error(f"invalid configuration: {exc}")
            return 2
        except MigrationFailed as exc:
            _error(f"the database could not be migrated: {exc}")
            return 1
        except PortUnavailable as exc:
            _error(str(exc))
            return 1
    except (EOFError, KeyboardInterrupt):  # as Click reports an interrupt before serving
        sys.stderr.write("\nAborted!\n")
        return 1
    except Exception as exc:  # the CLI's rendering of an unexpected error
        if request.get("debug"):
            sys.stderr.write("".join(traceback.format_exception(exc)))
        # The first line: a database error goes on with its SQL and a link.
        cause = next((line for line in str(exc).splitlines() if line.strip()), "")
        _error(f"unexpected {type(exc).__name__}: {cause} (run with --debug for details)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

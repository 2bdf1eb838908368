"""The background daemon: pidfile, logfile, start/stop/status/tail. No Typer, no Rich."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from otari_cli.config import write_private
from otari_cli.errors import ExitCode, StartFailed

POLL_INTERVAL = 0.1


@dataclass(frozen=True)
class Record:
    """What the pidfile says about a daemon started by `otari start`."""

    pid: int
    url: str
    started: str | None = None  # kernel start time of pid, to tell a reused pid apart
    config: str | None = None
    args: list[str] = field(default_factory=list)
    # --database-url as given to `otari start` (it may hold a password: never in `args`,
    # which become a command line; this file is mode 0600, as the config file).
    database_url: str | None = None


@dataclass(frozen=True)
class Stopped:
    """How a stop went."""

    record: Record
    killed: bool


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass; whether it held."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL)


# processes ------------------------------------------------------------------------------------


def port_in_use(host: str, port: int) -> bool:
    """Whether something already listens on (host, port): binding there fails."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # Same option uvicorn sets, so a port in TIME_WAIT is not reported as taken.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name, or None without /proc."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot), if the platform has /proc."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def serves_for(pid: int, answering: object) -> bool:
    """Whether the process that answered (its /health `pid`, a string) is `pid` or one of its
    uvicorn workers (a child of `pid`).

    A port freed by a restart can be taken by another program before the new daemon binds it;
    without this check its answers would pass for ours. Without /proc, any pid is accepted.
    """
    try:
        other = int(str(answering))
    except ValueError:
        return False
    if other == pid:
        return True
    fields = _proc_stat(other)
    if fields is None:
        return not Path("/proc/self/stat").exists()
    return len(fields) > 1 and fields[1] == str(pid)  # field 4 of stat: the parent's pid


def is_alive(record: Record) -> bool:
    """Whether the recorded daemon still runs: the pid exists, is no zombie, and is the same
    process (same start time, or an otari command line where start times are unavailable)."""
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else: the checks below decide
    fields = _proc_stat(record.pid)
    if fields is None:
        return not Path("/proc/self/stat").exists()  # no /proc: trust kill(0)
    if fields[0] in ("Z", "X"):
        return False
    if record.started is not None:
        return start_time(record.pid) == record.started
    try:
        cmdline = Path(f"/proc/{record.pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"otari" in cmdline


# pidfile --------------------------------------------------------------------------------------


def read_record(pidfile: Path) -> Record | None:
    """The pidfile's record; None if there is none or it is unreadable (treated as stale)."""
    try:
        data = json.loads(pidfile.read_text(encoding="utf-8"))
        return Record(
            pid=int(data["pid"]),
            url=str(data["url"]),
            started=data.get("started"),
            config=data.get("config"),
            args=[str(a) for a in data.get("args", [])],
            database_url=data.get("database_url"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_record(pidfile: Path, record: Record) -> None:
    """Write the pidfile (0600)."""
    write_private(pidfile, json.dumps(asdict(record)) + "\n")


def check(pidfile: Path) -> tuple[Record | None, bool]:
    """The running daemon's record, and whether a stale pidfile was found and removed."""
    if not pidfile.exists():
        return None, False
    record = read_record(pidfile)
    if record is not None and is_alive(record):
        return record, False
    pidfile.unlink(missing_ok=True)
    return None, True


@contextlib.contextmanager
def locked(pidfile: Path) -> Iterator[None]:
    """Serialize start/stop between concurrent `otari` invocations."""
    pidfile.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(pidfile.with_suffix(".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# lifecycle ------------------------------------------------------------------------------------


def spawn(
    command: list[str], logfile: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Run `command` detached from this terminal (own session), output appended to `logfile`."""
    logfile.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as log:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=env,
        )


def start(
    pidfile: Path,
    logfile: Path,
    command: list[str],
    record: Record,
    ready: Callable[[int], bool],
    timeout: float,
    env: Mapping[str, str] | None = None,
) -> Record:
    """Spawn the daemon, record it, and return once `ready(pid)` holds for the spawned pid.

    `record` describes it (pid is filled in). On an early exit or after `timeout` the daemon is
    stopped, the pidfile removed, and StartFailed carries this run's last log lines.
    """
    offset = logfile.stat().st_size if logfile.exists() else 0
    proc = spawn(command, logfile, env)
    started = replace(record, pid=proc.pid, started=start_time(proc.pid))
    write_record(pidfile, started)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not ready(proc.pid):
        if time.monotonic() >= deadline:
            terminate(started, grace=5.0)
            proc.wait()
            pidfile.unlink(missing_ok=True)
            raise StartFailed(
                f"the daemon did not become ready within {timeout:g}s",
                ExitCode.UNREACHABLE,
                tail(logfile, 20, offset),
            )
        time.sleep(POLL_INTERVAL)
    if proc.returncode is not None:
        pidfile.unlink(missing_ok=True)
        code = ExitCode.USAGE if proc.returncode == ExitCode.USAGE else ExitCode.SERVER
        raise StartFailed(
            f"the daemon exited with status {proc.returncode} while starting",
            code,
            tail(logfile, 20, offset),
        )
    # The daemon outlives this process by design: it is not ours to reap or warn about.
    proc.returncode = 0
    return started


def terminate(record: Record, grace: float) -> bool:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL; whether SIGKILL was needed."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGTERM)
    if wait_until(lambda: not is_alive(record), grace):
        return False
    with contextlib.suppress(ProcessLookupError):
        # The daemon leads its own process group (spawn starts a session): its uvicorn
        # workers go with it, where they would go on serving the port on their own.
        if os.getpgid(record.pid) == record.pid:
            os.killpg(record.pid, signal.SIGKILL)
        else:
            os.kill(record.pid, signal.SIGKILL)
    wait_until(lambda: not is_alive(record), 5.0)
    return True


def stop(pidfile: Path, grace: float) -> Stopped | None:
    """Stop the recorded daemon; None if none was running (a stale pidfile is removed)."""
    record, _stale = check(pidfile)
    if record is None:
        return None
    killed = terminate(record, grace)
    pidfile.unlink(missing_ok=True)
    return Stopped(record, killed)


# logs -----------------------------------------------------------------------------------------


def tail(logfile: Path, lines: int, offset: int = 0, end: int | None = None) -> list[str]:
    """The last `lines` lines of `logfile` between byte `offset` and `end` ([] without a log)."""
    if lines <= 0:
        return []
    try:
        with logfile.open("rb") as handle:
            handle.seek(offset)
            data = handle.read() if end is None else handle.read(max(0, end - offset))
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace")
    return text.splitlines()[-lines:]


def follow(logfile: Path, lines: int, interval: float = 0.25) -> Iterator[str]:
    """The last `lines` lines, then each new line as it is written (until interrupted)."""
    position = logfile.stat().st_size if logfile.exists() else 0
    yield from tail(logfile, lines, max(0, position - 1024 * 1024), end=position)
    pending = b""
    while True:
        size = logfile.stat().st_size if logfile.exists() else 0
        if size < position:  # truncated or replaced: start over
            position, pending = 0, b""
        if size > position:
            with logfile.open("rb") as handle:
                handle.seek(position)
                chunk = handle.read()
            position += len(chunk)
            *complete, pending = (pending + chunk).split(b"\n")
            for line in complete:
                yield line.decode("utf-8", errors="replace")
        else:
            time.sleep(interval)

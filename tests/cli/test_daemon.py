"""The daemon module with stand-in processes: pidfile, stale detection, start/stop, logs."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from otari_cli import daemon
from otari_cli.config import Dirs
from otari_cli.errors import ExitCode, StartFailed

# A stand-in daemon: logs, optionally ignores SIGTERM, then says it is ready by creating a file.
FAKE = """
import pathlib, signal, sys, time
print("booting", flush=True)
if sys.argv[2] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
pathlib.Path(sys.argv[1]).touch()
time.sleep(120)
"""


def reap(pid: int) -> None:
    """Collect our own exited child so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


@pytest.fixture
def started(dirs: Dirs, tmp_path: Path) -> Iterator[daemon.Record]:
    marker = tmp_path / "ready"
    record = daemon.start(
        dirs.pidfile,
        dirs.logfile,
        [sys.executable, "-c", FAKE, str(marker), "polite"],
        daemon.Record(0, "http://127.0.0.1:1", config="/c.toml", args=["--port", "1"]),
        lambda _pid: marker.exists(),
        timeout=30,
    )
    yield record
    if daemon.is_alive(record):
        daemon.terminate(record, grace=5)
    reap(record.pid)


def test_record_round_trip(dirs: Dirs) -> None:
    record = daemon.Record(123, "http://127.0.0.1:8000", "456", "/c.toml", ["--port", "8000"])
    daemon.write_record(dirs.pidfile, record)
    assert daemon.read_record(dirs.pidfile) == record
    assert oct(dirs.pidfile.stat().st_mode & 0o777) == "0o600"


def test_own_process_is_alive_only_with_its_own_start_time() -> None:
    me = os.getpid()
    assert daemon.is_alive(daemon.Record(me, "u", daemon.start_time(me)))
    assert not daemon.is_alive(daemon.Record(me, "u", "1"))  # pid reused by another program


def test_exited_process_is_not_alive() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not daemon.is_alive(daemon.Record(proc.pid, "u", None))


def test_without_start_time_the_command_line_must_be_otari() -> None:
    # This pytest process's command line does not say "otari" unless run from this repo path.
    me = os.getpid()
    cmdline = Path(f"/proc/{me}/cmdline").read_bytes()
    assert daemon.is_alive(daemon.Record(me, "u", None)) is (b"otari" in cmdline)


def test_stale_pidfile_of_a_reused_pid_is_removed(dirs: Dirs) -> None:
    daemon.write_record(dirs.pidfile, daemon.Record(os.getpid(), "u", "1"))
    assert daemon.check(dirs.pidfile) == (None, True)
    assert not dirs.pidfile.exists()


def test_garbage_pidfile_is_stale(dirs: Dirs) -> None:
    dirs.state.mkdir(parents=True)
    dirs.pidfile.write_text("12 not json")
    assert daemon.check(dirs.pidfile) == (None, True)
    assert not dirs.pidfile.exists()
    assert daemon.check(dirs.pidfile) == (None, False)


def test_start_records_a_detached_process(started: daemon.Record, dirs: Dirs) -> None:
    assert daemon.is_alive(started)
    assert daemon.check(dirs.pidfile) == (started, False)
    assert started.url == "http://127.0.0.1:1" and started.args == ["--port", "1"]
    assert os.getsid(started.pid) == started.pid  # its own session: survives the shell
    assert daemon.wait_until(lambda: "booting" in dirs.logfile.read_text(), 10)


def test_stop_terminates_and_removes_the_pidfile(started: daemon.Record, dirs: Dirs) -> None:
    stopped = daemon.stop(dirs.pidfile, grace=10)
    assert stopped == daemon.Stopped(started, killed=False)
    assert not daemon.is_alive(started)
    assert not dirs.pidfile.exists()
    assert daemon.stop(dirs.pidfile, grace=10) is None


def test_stop_kills_a_process_ignoring_sigterm(dirs: Dirs, tmp_path: Path) -> None:
    marker = tmp_path / "ready"
    record = daemon.start(
        dirs.pidfile,
        dirs.logfile,
        [sys.executable, "-c", FAKE, str(marker), "stubborn"],
        daemon.Record(0, "u"),
        lambda _pid: marker.exists(),
        timeout=30,
    )
    stopped = daemon.stop(dirs.pidfile, grace=0.5)
    reap(record.pid)
    assert stopped is not None and stopped.killed
    assert not daemon.is_alive(record)


def test_start_fails_with_the_log_when_the_process_exits(dirs: Dirs) -> None:
    dirs.log.mkdir(parents=True)
    dirs.logfile.write_text("old run\n")
    script = "import sys; print('config: port: bad value', file=sys.stderr); sys.exit(2)"
    with pytest.raises(StartFailed) as caught:
        daemon.start(
            dirs.pidfile,
            dirs.logfile,
            [sys.executable, "-c", script],
            daemon.Record(0, "u"),
            lambda _pid: False,
            timeout=30,
        )
    assert caught.value.exit_code == ExitCode.USAGE
    assert caught.value.log_tail == ["config: port: bad value"]  # this run's lines only
    assert not dirs.pidfile.exists()


def test_start_crash_is_a_server_error(dirs: Dirs) -> None:
    with pytest.raises(StartFailed) as caught:
        daemon.start(
            dirs.pidfile,
            dirs.logfile,
            [sys.executable, "-c", "raise SystemExit(1)"],
            daemon.Record(0, "u"),
            lambda _pid: False,
            timeout=30,
        )
    assert caught.value.exit_code == ExitCode.SERVER


def test_start_gives_up_after_the_deadline_and_stops_the_process(
    dirs: Dirs, tmp_path: Path
) -> None:
    marker = tmp_path / "ready"
    with pytest.raises(StartFailed) as caught:
        daemon.start(
            dirs.pidfile,
            dirs.logfile,
            [sys.executable, "-c", FAKE, str(marker), "polite"],
            daemon.Record(0, "u"),
            lambda _pid: False,
            timeout=1.0,
        )
    assert caught.value.exit_code == ExitCode.UNREACHABLE
    assert "booting" in caught.value.log_tail
    assert not dirs.pidfile.exists()
    assert daemon.check(dirs.pidfile) == (None, False)


def test_tail_and_offset(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    assert daemon.tail(log, 5) == []
    log.write_text("a\nb\nc\n")
    assert daemon.tail(log, 2) == ["b", "c"]
    assert daemon.tail(log, 0) == []
    assert daemon.tail(log, 10, offset=2) == ["b", "c"]


def test_follow_yields_new_lines(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("one\ntwo\nthree\n")
    lines = daemon.follow(log, 2, interval=0.01)
    assert [next(lines), next(lines)] == ["two", "three"]
    with log.open("a") as handle:
        handle.write("four\nfi")
    assert next(lines) == "four"
    with log.open("a") as handle:
        handle.write("ve\n")
    assert next(lines) == "five"


def test_serves_for_accepts_the_process_and_its_workers_only() -> None:
    me = os.getpid()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert daemon.serves_for(me, str(me))  # /health gives the pid as a string
        assert daemon.serves_for(me, str(child.pid))  # a uvicorn worker: a child of ours
        assert not daemon.serves_for(child.pid, str(me))  # its parent is not its worker
        assert not daemon.serves_for(me, str(os.getppid()))
        assert not daemon.serves_for(me, None)
        assert not daemon.serves_for(me, "not a pid")
    finally:
        child.kill()
        child.wait()


def test_start_is_not_ready_while_another_process_answers(dirs: Dirs, tmp_path: Path) -> None:
    # The ready check receives the spawned pid, so an answer from anyone else cannot pass.
    marker = tmp_path / "ready"
    others = os.getpid()
    with pytest.raises(StartFailed) as caught:
        daemon.start(
            dirs.pidfile,
            dirs.logfile,
            [sys.executable, "-c", FAKE, str(marker), "polite"],
            daemon.Record(0, "u"),
            lambda pid: marker.exists() and daemon.serves_for(pid, str(others)),
            timeout=1.0,
        )
    assert caught.value.exit_code == ExitCode.UNREACHABLE
    assert marker.exists()  # it did say it was ready; the answer was not its own

"""End to end through the installed executable: init, start, stop, restart, status, logs,
stale pidfiles, contexts, auth and reachability failures, and the README walkthrough."""

from __future__ import annotations

import json
import os
import pty
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from otari_cli import daemon
from otari_cli.commands import lifecycle
from otari_cli.errors import ExitCode
from tests.cli.conftest import Executable, Result, free_port, pid_alive
from tests.cli.fakes import Script

ROOT = Path(__file__).resolve().parents[2]

# The README's operator walkthrough; test_readme_has_the_walkthrough keeps them identical.
WALKTHROUGH = """\
otari init                                   # config with a fresh master key (mode 0600)
otari start                                  # background daemon; returns once ready
otari status
otari budgets create --name team --max 25.00 --period 1mo   # resets on the 1st (UTC)
otari users create alice --alias "Alice" --budget team
otari keys create --name alice-laptop --user alice   # prints the key once
otari usage --user alice --since 7d
otari stop
"""


def ok(result: Result) -> Result:
    assert result.code == 0, f"exit {result.code}: {result.err}"
    return result


@pytest.fixture
def cli(tmp_path: Path) -> Executable:
    return Executable(tmp_path)


@pytest.fixture
def running(cli: Executable) -> Iterator[Executable]:
    """A daemon started with `otari init && otari start` on a free port (stopped after)."""
    ok(cli("init", "--port", str(free_port())))
    ok(cli("start"))
    yield cli
    cli("stop")


def wait_until(condition: Callable[[], bool], timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_walkthrough(cli: Executable) -> None:
    env = {"OTARI_PORT": str(free_port())}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", WALKTHROUGH],
        capture_output=True,
        text=True,
        timeout=120,
        env={**cli.env, **env},
    )
    assert done.returncode == 0, done.stderr
    documents = [json.loads(d) for d in re.split(r"\n(?=[\[{])", done.stdout.strip())]
    init, start, status, budget, user, key, usage, stop = documents
    assert Path(init["config"]).stat().st_mode & 0o777 == 0o600
    assert status["running"] is True and status["ready"] is True
    assert status["url"] == f"http://127.0.0.1:{env['OTARI_PORT']}" == start["url"]
    assert (budget["name"], budget["max_budget"], budget["reset_alignment"]) == (
        "team",
        25,
        "calendar_month",
    )
    assert user["user_id"] == "alice" and user["budget_id"] == budget["budget_id"]
    assert key["key"].startswith("gw-") and key["user_id"] == "alice"
    assert usage == []
    assert stop["stopped"] is True and not pid_alive(stop["pid"])
    config_key = re.search(r'master_key = "([^"]+)"', Path(init["config"]).read_text())
    assert config_key and config_key.group(1) not in done.stdout + done.stderr


def test_readme_has_the_walkthrough() -> None:
    readme = (ROOT / "README.md").read_text()
    assert WALKTHROUGH in readme, "README.md must contain the operator walkthrough verbatim"


def test_start_twice_changes_nothing_and_restart_replaces_the_process(
    running: Executable,
) -> None:
    first = ok(running("status")).json()
    again = ok(running("start"))
    assert "already running" in again.err and again.json()["pid"] == first["pid"]
    restarted = ok(running("restart")).json()
    assert restarted["pid"] != first["pid"] and restarted["url"] == first["url"]
    assert not pid_alive(first["pid"]) and pid_alive(restarted["pid"])
    status = ok(running("status")).json()
    assert (status["pid"], status["ready"], status["version"]) == (restarted["pid"], True, "0.1.0")
    assert status["database"] == "sqlite" and float(status["uptime_seconds"]) >= 0
    ok(running("stop"))
    stopped = running("status")
    assert stopped.code == ExitCode.UNREACHABLE and stopped.json()["running"] is False


def test_daemon_is_detached_in_its_own_session(running: Executable) -> None:
    pid = running("status").json()["pid"]
    assert os.getsid(pid) == pid  # not in the test's (the shell's) session
    assert os.getsid(pid) != os.getsid(0)


def test_crashed_daemon_leaves_a_stale_pidfile_that_is_cleaned(running: Executable) -> None:
    pid = running("status").json()["pid"]
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not pid_alive(pid))
    status = running("status")
    assert status.code == ExitCode.UNREACHABLE and "stale" in status.err
    assert not running.dirs.pidfile.exists()
    assert ok(running("start")).json()["pid"] != pid


def test_pid_reused_by_another_program_is_never_signalled(cli: Executable) -> None:
    other = subprocess.Popen(["sleep", "60"])
    try:
        cli.dirs.state.mkdir(parents=True)
        record = {"pid": other.pid, "url": "http://127.0.0.1:1", "started": "1", "args": []}
        cli.dirs.pidfile.write_text(json.dumps(record))
        stop = ok(cli("stop"))
        assert "not running" in stop.err
        assert other.poll() is None  # the unrelated program still runs
        assert not cli.dirs.pidfile.exists()
    finally:
        other.kill()
        other.wait()


def test_start_failure_exits_non_zero_with_the_last_log_lines(cli: Executable) -> None:
    ok(cli("init", "--port", str(free_port())))
    failed = cli("start", env={"OTARI_LOG_LEVEL": "loud"})
    assert failed.code == ExitCode.USAGE
    assert "last log lines" in failed.err and "log_level" in failed.err
    assert not cli.dirs.pidfile.exists()
    assert cli("status").code == ExitCode.UNREACHABLE


def test_the_log_says_serving_once_the_gateway_serves(cli: Executable) -> None:
    port = free_port()
    ok(cli("init", "--port", str(port)))
    ok(cli("start"))
    try:
        log = cli.dirs.logfile.read_text()
        serving = log.index(f"otari: serving on http://127.0.0.1:{port} (database sqlite:///")
        assert log.index("Application startup complete") < serving
    finally:
        cli("stop")


def test_start_refuses_a_port_another_gateway_answers_on(
    running: Executable, tmp_path: Path
) -> None:
    url = running("status").json()["url"]
    other = Executable(tmp_path / "other")
    refused = other("start", "--port", url.rsplit(":", 1)[1])
    assert refused.code == ExitCode.USAGE and "already answers" in refused.err
    assert not other.dirs.pidfile.exists()


def test_wrong_master_key_exits_4_and_no_gateway_exits_3(
    running: Executable, tmp_path: Path
) -> None:
    wrong = running("--master-key", "sk-wrong", "keys", "list")
    assert wrong.code == ExitCode.AUTH and "401" in wrong.err and wrong.out == ""
    api_key = ok(running("keys", "create")).json()["key"]
    not_master = running("--master-key", api_key, "users", "list")
    assert not_master.code == ExitCode.AUTH, not_master.err
    nobody = Executable(tmp_path / "empty")
    down = nobody(
        "--url", f"http://127.0.0.1:{free_port()}", "--master-key", "sk-x", "keys", "list"
    )
    assert down.code == ExitCode.UNREACHABLE and "Traceback" not in down.err
    # Without a key for a gateway named by --url, nothing is sent: exit 4 names the key to give.
    keyless = nobody("--url", f"http://127.0.0.1:{free_port()}", "keys", "list")
    assert keyless.code == ExitCode.AUTH and "--master-key" in keyless.err
    local = nobody("keys", "list")
    assert local.code == ExitCode.UNREACHABLE and "otari start" in local.err


def test_contexts_against_a_running_gateway(running: Executable, tmp_path: Path) -> None:
    url = running("status").json()["url"]
    master = re.search(r'master_key = "([^"]+)"', running.dirs.config_file.read_text())
    assert master
    remote = Executable(tmp_path / "remote")  # another HOME: no local daemon, no local key
    ok(remote("context", "add", "prod", "--url", url, "--key-env", "PROD_KEY", "--use"))
    assert remote("keys", "list").code == ExitCode.USAGE  # $PROD_KEY unset
    key_id = ok(running("keys", "create", "--name", "for-remote")).json()["id"]
    listed = ok(remote("keys", "list", "-q", env={"PROD_KEY": master.group(1)})).out.split()
    assert key_id in listed
    stored = remote(
        "context", "add", "stored", "--url", url, "--key-stdin", input=master.group(1) + "\n"
    )
    ok(stored)
    assert master.group(1) not in ok(remote("context", "list")).out
    assert ok(remote("--context", "stored", "health")).json()["ready"] is True
    ok(remote("--context", "stored", "users", "list"))
    assert remote("--context", "local", "users", "list").code == ExitCode.UNREACHABLE
    ok(remote("context", "use", "local"))
    assert remote("users", "list").code == ExitCode.UNREACHABLE


def confirm_on_a_terminal(cli: Executable, args: list[str], answer: str) -> Result:
    """Run with stdin on a pseudo-terminal and type `answer`."""
    controller, terminal = pty.openpty()
    try:
        os.write(controller, answer.encode())
        done = subprocess.run(
            [cli.exe, *args],
            stdin=terminal,
            capture_output=True,
            text=True,
            timeout=60,
            env=cli.env,
        )
    finally:
        os.close(controller)
        os.close(terminal)
    return Result(done.returncode, done.stdout, done.stderr)


def test_destructive_commands_ask_on_a_terminal(running: Executable) -> None:
    key_id = ok(running("keys", "create")).json()["id"]
    declined = confirm_on_a_terminal(running, ["keys", "revoke", key_id], "n\n")
    assert declined.code == ExitCode.REFUSED and "aborted" in declined.err
    assert "Revoke 1 key(s)" in declined.err
    assert ok(running("keys", "get", key_id)).json()["is_active"] is True
    accepted = confirm_on_a_terminal(running, ["keys", "revoke", key_id], "y\n")
    assert accepted.code == 0, accepted.err
    gone = running("keys", "get", key_id)  # a revoked key is gone
    assert gone.code == ExitCode.REFUSED and "404" in gone.err
    piped = running("keys", "revoke", key_id)
    assert piped.code == ExitCode.USAGE and "--yes" in piped.err


def test_logs_tail_and_follow(running: Executable) -> None:
    tail = ok(running("logs", "-n", "5")).out.splitlines()
    assert len(tail) == 5 and any("startup complete" in line for line in tail)
    follower = subprocess.Popen(
        [running.exe, "logs", "-f", "-n", "1"], stdout=subprocess.PIPE, text=True, env=running.env
    )
    try:
        # Its first line (the last one so far) proves it is following before we stop.
        assert read_until(follower, tail[-1], timeout=20) == [tail[-1] + "\n"]
        ok(running("stop"))
        seen = read_until(follower, "Shutting down", timeout=20)
        assert any("Shutting down" in line for line in seen), seen
    finally:
        follower.terminate()
        follower.wait(10)
        assert follower.stdout is not None
        follower.stdout.close()


def read_until(proc: subprocess.Popen[str], text: str, timeout: float) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline and not any(text in line for line in lines):
            if selector.select(timeout=deadline - time.monotonic()):
                line = proc.stdout.readline()
                if not line:
                    break
                lines.append(line)
    return lines


def test_start_on_a_busy_port_is_one_line_and_exit_2(cli: Executable) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        ok(cli("init", "--port", str(port)))
        refused = cli("start")
    assert refused.code == ExitCode.USAGE
    assert (
        refused.err.strip() == f"error: port {port} is in use: stop what listens there, "
        "or choose another --port"
    )
    assert not cli.dirs.pidfile.exists()


def test_a_gateway_answering_for_another_pid_is_not_the_one_started(
    fake: tuple[str, Script],
) -> None:
    # A restart frees the port for a moment: whatever takes it must not pass for the new daemon.
    url, script = fake
    script.answer("GET", "/health/readiness", 200, {"status": "ready"})
    script.answer("GET", "/health", 200, {"status": "healthy", "pid": str(os.getppid())})
    assert not lifecycle.ready_as(url, os.getpid())
    script.answer("GET", "/health", 200, {"status": "healthy", "pid": str(os.getpid())})
    assert lifecycle.ready_as(url, os.getpid())


def test_status_says_when_the_port_is_answered_by_another_process(
    cli: Executable, fake: tuple[str, Script]
) -> None:
    url, script = fake
    script.answer("GET", "/health/readiness", 200, {"status": "ready"})
    script.answer("GET", "/health", 200, {"status": "healthy", "version": "9", "pid": "1"})
    ours = subprocess.Popen(["sleep", "60"])
    try:
        record = daemon.Record(ours.pid, url, daemon.start_time(ours.pid))
        daemon.write_record(cli.dirs.pidfile, record)
        seen = ok(cli("status"))
        assert (seen.json()["pid"], seen.json()["ready"], seen.json()["version"]) == (
            ours.pid,
            False,
            None,
        )
        assert f"answered by another process (pid 1), not by otari (pid {ours.pid})" in seen.err
        script.routes.pop(("GET", "/health"))  # now /health fails: status says why
        seen = ok(cli("status"))
        assert seen.json()["ready"] is False
        assert f"otari (pid {ours.pid}) does not answer at {url}: " in seen.err
    finally:
        ours.kill()
        ours.wait()


def test_status_without_a_pidfile_takes_only_an_otari_health_for_a_gateway(
    cli: Executable, fake: tuple[str, Script]
) -> None:
    url, script = fake
    ok(cli("init", "--port", url.rsplit(":", 1)[1]))
    script.answer("GET", "/health", 200, {"status": "healthy", "pid": "123"})  # not otari's
    script.answer("GET", "/health/readiness", 200, {"status": "ready"})
    seen = cli("status")
    assert seen.code == ExitCode.UNREACHABLE and seen.json()["running"] is False
    script.answer("GET", "/health", 200, {"status": "healthy", "pid": "123", "version": "0.1.0"})
    seen = ok(cli("status"))
    assert (seen.json()["running"], seen.json()["pid"], seen.json()["ready"]) == (True, "123", True)


def test_restart_says_when_the_old_daemon_had_to_be_killed(running: Executable) -> None:
    pid = running("status").json()["pid"]
    os.kill(pid, signal.SIGSTOP)  # deaf to SIGTERM until killed
    try:
        restarted = ok(running("restart", "--grace", "1"))
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert f"Stopped otari (pid {pid}) (SIGKILL after 1s)" in restarted.err
    assert restarted.json()["pid"] != pid


def test_status_reports_a_gateway_not_started_by_otari_start(
    running: Executable, tmp_path: Path
) -> None:
    url = running("status").json()["url"]
    other = Executable(tmp_path / "other")
    ok(other("init", "--port", url.rsplit(":", 1)[1]))
    seen = ok(other("status")).json()
    assert seen["running"] is True and seen["url"] == url and seen["ready"] is True
    assert "no pidfile" in seen["started_by"]


def test_the_secret_variables_are_the_same_on_both_sides() -> None:
    from otari_server import daemon as server_daemon

    assert lifecycle.SECRET_VARIABLES == server_daemon.SECRET_VARIABLES


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_a_database_url_never_reaches_a_command_line_and_survives_a_restart(
    cli: Executable, tmp_path: Path
) -> None:
    # A PostgreSQL URL holds its password; this one stands in for it with a marked path.
    url = f"sqlite:///{tmp_path / 'secret-marker-7f3a.db'}"
    ok(cli("init", "--port", str(free_port())))
    started = ok(cli("start", "--database-url", url)).json()
    try:
        assert "secret-marker-7f3a" not in _cmdline(started["pid"])
        record = json.loads(cli.dirs.pidfile.read_text())
        assert not any("secret-marker-7f3a" in arg for arg in record["args"])
        assert cli.dirs.pidfile.stat().st_mode & 0o777 == 0o600
        key = ok(cli("keys", "create", "--name", "kept")).json()["id"]
        restarted = ok(cli("restart")).json()
        assert "secret-marker-7f3a" not in _cmdline(restarted["pid"])
        # The same database after the restart: the key made before is there.
        assert key in {k["id"] for k in ok(cli("keys", "list")).json()}
    finally:
        cli("stop")
    assert (tmp_path / "secret-marker-7f3a.db").exists()


def test_serve_in_the_foreground_keeps_the_database_url_off_its_command_line(
    cli: Executable, tmp_path: Path
) -> None:
    port = free_port()
    url = f"sqlite:///{tmp_path / 'secret-marker-91c2.db'}"
    ok(cli("init", "--port", str(port)))
    serving = subprocess.Popen(
        [cli.exe, "serve", "--database-url", url],
        env=cli.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_until(lambda: cli("status").code == 0)
        assert "secret-marker-91c2" not in _cmdline(serving.pid)
        assert (tmp_path / "secret-marker-91c2.db").exists()  # and it serves that database
    finally:
        serving.terminate()
        serving.wait(timeout=60)


def test_restart_with_an_option_keeps_the_others_it_was_started_with(
    cli: Executable, tmp_path: Path
) -> None:
    first = f"sqlite:///{tmp_path / 'first.db'}"
    ok(cli("init", "--port", str(free_port())))
    ok(cli("start", "--database-url", first, "--log-level", "warning"))
    try:
        key = ok(cli("keys", "create", "--name", "kept")).json()["id"]
        ok(cli("restart", "--workers", "2"))  # the database URL and log level stay
        record = json.loads(cli.dirs.pidfile.read_text())
        assert record["args"] == ["--log-level", "warning", "--workers", "2"]
        assert record["database_url"] == first
        assert key in {k["id"] for k in ok(cli("keys", "list")).json()}
        second = f"sqlite:///{tmp_path / 'second.db'}"
        ok(cli("restart", "--database-url", second))  # the workers and log level stay
        record = json.loads(cli.dirs.pidfile.read_text())
        assert record["args"] == ["--log-level", "warning", "--workers", "2"]
        assert record["database_url"] == second
        assert key not in {k["id"] for k in ok(cli("keys", "list")).json()}
    finally:
        cli("stop")


def _workers(pid: int) -> list[int]:
    """The child processes of `pid` that serve (uvicorn's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if parent == str(pid) and b"spawn_main" in cmdline:
                found.append(int(entry.name))
    return found


def test_workers_killed_with_their_daemon_while_starting_end_too(
    cli: Executable, tmp_path: Path
) -> None:
    # The daemon dies while its workers are still importing, before they ask the kernel to
    # stop them with it: they must notice that their parent is gone, not adopt a new one.
    ok(cli("init", "--port", str(free_port())))
    serving = subprocess.Popen(
        [cli.exe, "serve", "--workers", "2"],
        env=cli.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers: list[int] = []
    try:
        assert wait_until(lambda: len(_workers(serving.pid)) == 2, 60)
        workers = _workers(serving.pid)
        serving.kill()
        serving.wait(timeout=60)
        assert wait_until(lambda: not any(pid_alive(w) for w in workers), 30)
    finally:
        for leftover in workers:
            if pid_alive(leftover):
                os.kill(leftover, signal.SIGKILL)


@pytest.mark.parametrize("how", ["killed", "hung"])
def test_workers_never_outlive_their_daemon(cli: Executable, how: str) -> None:
    ok(cli("init", "--port", str(free_port())))
    pid = ok(cli("start", "--workers", "2")).json()["pid"]
    try:
        assert wait_until(lambda: len(_workers(pid)) == 2)
        workers = _workers(pid)
        if how == "killed":  # the OOM killer's way: the workers are told to stop
            os.kill(pid, signal.SIGKILL)
        else:  # a hung daemon: stop's SIGKILL takes its whole process group
            os.kill(pid, signal.SIGSTOP)
            assert ok(cli("stop", "--grace", "1")).json()["killed"] is True
        assert wait_until(lambda: not any(pid_alive(w) for w in workers), 30)
    finally:
        for leftover in [pid, *_workers(pid)]:
            if pid_alive(leftover):
                os.kill(leftover, signal.SIGKILL)

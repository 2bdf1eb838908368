"""`otari db backup` (SQLite's online backup while the daemon runs) and `otari migrate`."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from otari_cli.daemon import wait_until
from otari_cli.errors import ExitCode
from tests.cli.conftest import Executable, Result, free_port, pid_alive


def test_backup_of_a_running_gateway_is_complete_and_private(tmp_path: Path) -> None:
    cli = Executable(tmp_path / "home")
    assert cli("init", "--port", str(free_port())).code == 0
    assert cli("start").code == 0
    try:
        created = cli("keys", "create", "--name", "before-backup")
        assert created.code == 0, created.err
        key_id = created.json()["id"]
        target = tmp_path / "backups" / "otari.db"
        done = cli("db", "backup", str(target))
        assert done.code == 0, done.err
        assert done.json()["backup"] == str(target) and done.json()["pages"] > 0
    finally:
        cli("stop")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    with sqlite3.connect(target) as copy:
        ids = {row[0] for row in copy.execute("SELECT id FROM api_keys")}
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert key_id in ids
    again = cli("db", "backup", str(target))
    assert again.code == ExitCode.USAGE and "--force" in again.err


def test_backup_of_postgresql_points_to_pg_dump(tmp_path: Path) -> None:
    cli = Executable(tmp_path)
    refused = cli(
        "db",
        "backup",
        str(tmp_path / "x.db"),
        "--database-url",
        "postgresql://u:p@127.0.0.1:1/otari",
    )
    assert refused.code == ExitCode.USAGE
    assert "pg_dump" in refused.err and "p@" not in refused.err


def test_migrate_brings_a_new_database_to_the_head_schema(tmp_path: Path) -> None:
    from otari_server.storage import db

    cli = Executable(tmp_path)
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    done = cli("migrate", "--database-url", url)
    assert done.code == 0, done.err
    assert done.json()["schema"] == db.schema_head()
    with sqlite3.connect(tmp_path / "fresh.db") as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == (
            db.schema_head(),
        )
    assert cli("db", "migrate", "--database-url", url).code == 0  # idempotent


def test_backup_onto_the_database_itself_is_refused_and_keeps_it(tmp_path: Path) -> None:
    # --force onto the live file truncated the database before copying it onto itself.
    cli = Executable(tmp_path)
    source = tmp_path / "otari.db"
    assert cli("migrate", "--database-url", f"sqlite:///{source}").code == 0
    with sqlite3.connect(source) as conn:
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    size = source.stat().st_size
    for target in (source, tmp_path / "." / "otari.db", Path(f"{source}-wal")):
        refused = cli(
            "db", "backup", str(target), "--force", "--database-url", f"sqlite:///{source}"
        )
        assert refused.code == ExitCode.USAGE, refused.err
        assert "is the database itself" in refused.err
    assert source.stat().st_size == size
    with sqlite3.connect(source) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == tables


def test_backup_finishes_while_the_database_is_written(tmp_path: Path) -> None:
    # Copied 1,024 pages a step, the backup restarted at every write from the daemon: with
    # a write every 10 ms it never finished.
    source = tmp_path / "busy.db"
    with sqlite3.connect(source) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE t (x BLOB)")
        conn.executemany("INSERT INTO t VALUES (?)", [(bytes(4000),)] * 10000)  # ~40 MB
    done = threading.Event()
    written = 0

    def writer() -> None:
        nonlocal written
        conn = sqlite3.connect(source, isolation_level=None)
        while not done.is_set():
            conn.execute("INSERT INTO t VALUES (?)", (b"x",))
            written += 1
            done.wait(0.01)
        conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        target = tmp_path / "copy.db"
        result = Executable(tmp_path)(
            "db", "backup", str(target), "--database-url", f"sqlite:///{source}", timeout=60
        )
    finally:
        done.set()
        thread.join()
    assert result.code == 0, result.err
    assert written > 0
    with sqlite3.connect(target) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert copy.execute("SELECT count(*) FROM t WHERE length(x) = 4000").fetchone() == (10000,)


def serve_once(home: Path, database: Path) -> Result:
    """`otari serve` on the SQLite file `database`, for a start that is expected to fail."""
    return Executable(home)(
        "serve",
        "--database-url",
        f"sqlite:///{database}",
        "--master-key",
        "sk-master-for-a-failed-migration",
        "--port",
        str(free_port()),
    )


def test_serve_on_a_database_it_cannot_migrate_says_why_in_one_line(tmp_path: Path) -> None:
    # The first start's migration runs in a child process; its failure still stops start-up.
    source = tmp_path / "future.db"
    with sqlite3.connect(source) as made:
        made.execute("CREATE TABLE alembic_version (version_num VARCHAR(32))")
        made.execute("INSERT INTO alembic_version VALUES ('9999_from_the_future')")
    done = serve_once(tmp_path, source)
    assert done.code == 1
    last = done.err.strip().splitlines()[-1]
    assert last.startswith("error: the database could not be migrated: ")
    assert "9999_from_the_future" in last and "Traceback" not in done.err
    assert "serving on" not in done.err  # said only once it serves
    with sqlite3.connect(source) as kept:
        assert kept.execute("SELECT version_num FROM alembic_version").fetchall() == [
            ("9999_from_the_future",)
        ]


def test_serve_on_a_port_in_use_says_so_in_one_line_before_touching_the_database(
    tmp_path: Path,
) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        done = Executable(tmp_path)(
            "serve", "--database-url", f"sqlite:///{tmp_path / 'never.db'}", "--port", str(port)
        )
    assert done.code == 1
    assert done.err.strip().splitlines() == [
        f"error: cannot serve on 127.0.0.1:{port}: address already in use"
    ]
    assert not (tmp_path / "never.db").exists()  # nothing was migrated or written


def test_an_unreachable_database_is_one_line_without_its_password(tmp_path: Path) -> None:
    done = Executable(tmp_path)(
        "serve",
        "--database-url",
        "postgresql://otari:pw-4d1e@127.0.0.1:1/otari",
        "--port",
        str(free_port()),
    )
    assert done.code == 1
    last = done.err.strip().splitlines()[-1]
    assert last.startswith("error: unexpected OperationalError: ")
    assert last.endswith("(run with --debug for details)")
    assert "sqlalche.me" not in done.err and "pw-4d1e" not in done.err
    assert "serving on" not in done.err


def test_a_migration_error_names_its_cause_not_sqlalchemys_last_line(tmp_path: Path) -> None:
    source = tmp_path / "clash.db"
    with sqlite3.connect(source) as made:
        made.execute("CREATE TABLE budgets (x INTEGER)")  # in the way of the first migration
    done = serve_once(tmp_path, source)
    assert done.code == 1
    assert done.err.strip().splitlines()[-1] == (
        "error: the database could not be migrated: OperationalError: "
        "(sqlite3.OperationalError) table budgets already exists"
    )
    assert "plugin" not in done.err  # Alembic's plugin announcements are kept out


def _children(pid: int, word: bytes) -> list[int]:
    """Processes whose parent is `pid` and whose command line holds `word`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if stat_fields[1] == str(pid) and word in cmdline:
            found.append(int(entry.name))
    return found


def _opened(pid: int, path: Path) -> bool:
    """Whether process `pid` holds `path` open."""
    try:
        return any(os.readlink(fd) == str(path) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C"])
def test_a_first_start_stopped_mid_migration_leaves_no_migration_running(
    tmp_path: Path, how: str
) -> None:
    # The migration runs in a child process: it must end with the start, not go on alone.
    source = tmp_path / "held.db"
    holder = sqlite3.connect(source, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN IMMEDIATE")  # the child's migration waits for this write lock
    cli = Executable(tmp_path)
    serve = subprocess.Popen(
        [cli.exe, "serve", "--database-url", f"sqlite:///{source}", "--port", str(free_port())],
        env={**cli.env, "OTARI_MASTER_KEY": "sk-master-for-a-held-migration"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
    )
    try:
        assert wait_until(lambda: bool(_children(serve.pid, b"migrate")), 60)
        [child] = _children(serve.pid, b"migrate")
        assert wait_until(lambda: _opened(child, source), 60)  # migrating: waiting for the lock
        if how == "SIGTERM":
            serve.send_signal(signal.SIGTERM)
        else:
            os.killpg(serve.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends
        # Not communicate(): the child shares serve's stderr, so that would wait for it too.
        assert serve.wait(timeout=60) != 0
        assert wait_until(lambda: not pid_alive(child), 10), "the migration outlived its start"
        _, err = serve.communicate(timeout=60)
        if how == "Ctrl-C":
            assert err.strip().splitlines()[-1] == "Aborted!" and "Traceback" not in err
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
        holder.execute("ROLLBACK")
        holder.close()
    with sqlite3.connect(source) as kept:  # nothing of the schema was written
        assert kept.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall() == []

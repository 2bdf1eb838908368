"""`otari db backup` (SQLite's online backup while the daemon runs) and `otari migrate`."""

from __future__ import annotations

import sqlite3
import stat
import threading
from pathlib import Path

from otari_cli.errors import ExitCode
from tests.cli.conftest import Executable, free_port


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


def test_serve_on_a_database_it_cannot_migrate_says_why_in_one_line(tmp_path: Path) -> None:
    # The first start's migration runs in a child process; its failure still stops start-up.
    source = tmp_path / "future.db"
    with sqlite3.connect(source) as made:
        made.execute("CREATE TABLE alembic_version (version_num VARCHAR(32))")
        made.execute("INSERT INTO alembic_version VALUES ('9999_from_the_future')")
    cli = Executable(tmp_path)
    done = cli(
        "serve",
        "--database-url",
        f"sqlite:///{source}",
        "--master-key",
        "sk-master-for-a-failed-migration",
        "--port",
        str(free_port()),
    )
    assert done.code == 1
    last = done.err.strip().splitlines()[-1]
    assert last.startswith("error: the database could not be migrated: ")
    assert "9999_from_the_future" in last and "Traceback" not in done.err
    with sqlite3.connect(source) as kept:
        assert kept.execute("SELECT version_num FROM alembic_version").fetchall() == [
            ("9999_from_the_future",)
        ]

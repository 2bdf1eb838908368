"""`otari db backup|migrate` (and `otari migrate`): the local daemon's database, offline tasks.

These resolve the daemon's settings exactly as `otari serve` does (config file, OTARI_*
environment, flags), so they import the server's settings module, lazily, like `serve`.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Annotated

import typer

from otari_cli.errors import UsageError
from otari_cli.runtime import runtime

app = typer.Typer(help="The local daemon's database: backup, migrate.")

Config = Annotated[Path | None, typer.Option("--config", "-c", help="Config TOML file.")]
DatabaseUrl = Annotated[
    str | None, typer.Option("--database-url", help="SQLite or PostgreSQL URL.")
]

PG_DUMP_RECIPE = (
    'pg_dump --format=custom --file=otari.dump "$DATABASE_URL"  '
    '(restore: pg_restore --clean --dbname="$DATABASE_URL" otari.dump)'
)


def _database_url(config: Path | None, database_url: str | None) -> str:
    from otari_server import settings

    try:
        resolved = settings.load(config, {"database_url": database_url} if database_url else {})
    except settings.ConfigError as exc:
        raise UsageError(f"invalid configuration: {exc}") from None
    return resolved.database_url


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases or an in-memory one)."""
    for prefix in ("sqlite+pysqlite:///", "sqlite:///"):
        if url.startswith(prefix):
            path = url[len(prefix) :].split("?", 1)[0]
            return Path(path).expanduser() if path and path != ":memory:" else None
    return None


def backup_sqlite(source: Path, target: Path) -> int:
    """Copy a live SQLite database with SQLite's online backup API; returns pages copied.

    The copy is a consistent snapshot even while the daemon writes, and the file is created
    mode 0600: it holds key hashes and usage.
    """
    if not source.exists():
        raise UsageError(f"no database at {source}")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    os.chmod(target, 0o600)
    pages = 0

    def progress(_status: int, _remaining: int, total: int) -> None:
        nonlocal pages
        pages = total

    with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as src, sqlite3.connect(target) as dst:
        # One step: a step-wise copy restarts whenever the daemon writes in between, so a
        # busy gateway was never backed up; one read transaction does not block its writers
        # (WAL) and is a consistent snapshot.
        src.backup(dst, pages=-1, progress=progress)
    return pages


@app.command("backup")
def backup(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Where to write the copy (mode 0600).")],
    config: Config = None,
    database_url: DatabaseUrl = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Back up the SQLite database while the gateway runs (PostgreSQL: prints the pg_dump way)."""
    rt = runtime(ctx)
    url = _database_url(config, database_url)
    source = sqlite_path(url)
    if source is None:
        raise UsageError(
            f"otari db backup copies SQLite files; for PostgreSQL use {PG_DUMP_RECIPE}"
        )
    # Truncating the live file (or its journal) before copying would destroy the database.
    own = source.resolve()
    if file.resolve() in {
        own,
        *(own.with_name(own.name + s) for s in ("-wal", "-shm", "-journal")),
    }:
        raise UsageError(f"{file} is the database itself (or its journal): choose another file")
    if file.exists() and not force:
        raise UsageError(f"{file} exists: pass --force to overwrite it")
    pages = backup_sqlite(source, file)
    rt.output.message(f"Backed up {source} to {file} (mode 0600)")
    rt.output.item({"backup": str(file), "source": str(source), "pages": pages}, id_field="backup")


@app.command("migrate")
def migrate(ctx: typer.Context, config: Config = None, database_url: DatabaseUrl = None) -> None:
    """Upgrade the database schema to this version's (run once before rolling instances)."""
    from otari_server.storage import db

    rt = runtime(ctx)
    url = _database_url(config, database_url)
    try:
        db.migrate(url)
    except db.DatabaseConfigError as exc:
        raise UsageError(str(exc)) from None
    head = db.schema_head()
    rt.output.message(f"Database {db.redact(url)} is at schema {head}")
    rt.output.item({"database": db.redact(url), "schema": head}, id_field="schema")

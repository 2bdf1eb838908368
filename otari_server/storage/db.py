"""Engine and session factory; SQLite pragmas; schema migrations through Alembic."""

from __future__ import annotations

import ast
import contextlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from otari_server import jsonio

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class DatabaseConfigError(Exception):
    """The database URL cannot be used."""


def normalize_url(url: str) -> str:
    """Map postgres:// and postgresql:// to the psycopg 3 driver; keep SQLite as is."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    if url.startswith(("postgresql+psycopg://", "sqlite://", "sqlite+pysqlite://")):
        return url
    raise DatabaseConfigError(f"database_url: unsupported scheme in {redact(url)}")


def upsert_insert(dialect: str, table: Any) -> Any:
    """An INSERT into `table` in the dialect's own flavour, the one with ON CONFLICT
    (`on_conflict_do_nothing` / `on_conflict_do_update`); `dialect` is an engine's
    `dialect.name`. The dialect is imported here, when used: the PostgreSQL one costs an
    SQLite gateway about 2 MiB for nothing."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table)


# Query parameters that carry a secret: libpq's `password` and `sslpassword` (a DSN may
# give the password there instead of `user:password@`), and any driver's token or secret.
_SECRET_PARAMETER = re.compile("pass|secret|token", re.IGNORECASE)


def redact(url: str) -> str:
    """A URL safe to print: the password is hidden, in `user:password@` and in the query."""
    try:
        parsed = make_url(url)
        hidden = {name: "hidden" for name in parsed.query if _SECRET_PARAMETER.search(name)}
        return parsed.update_query_dict(hidden).render_as_string(hide_password=True)
    except Exception:  # a URL too broken to parse is shown by scheme only
        return url.split(":", 1)[0] + "://..."


SQLITE_MMAP_BYTES = 1 << 30  # address space only: the OS pages in what is read


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the one writer; busy_timeout makes a second writer wait
    # instead of failing; NORMAL sync is durable across process crashes under WAL.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


# Execution option marking an engine (and so its sessions) as read-only: on SQLite such
# transactions open with a plain deferred BEGIN and never take the write lock.
READ_ONLY = "otari_read_only"


def _sqlite_begin(conn: Any) -> None:
    if conn.get_execution_options().get(READ_ONLY):
        if not conn.info.get("mmap"):
            # Reads map the file instead of copying each page through a read() call: a deep
            # usage page or export touches one table page per row (less than half the time
            # per row). Only connections that have served a read: the usage writer keeps its
            # own connection, and mapping it cost its commits about 4% CPU per request.
            conn.exec_driver_sql(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
            conn.info["mmap"] = True
        # A reader under WAL sees a snapshot and blocks no writer, however long it runs.
        conn.exec_driver_sql("BEGIN")
        return
    # Take the write lock when the transaction starts, so read-then-write transactions
    # never deadlock-upgrade; SQLite has a single writer anyway.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _create_private(path: Path) -> None:
    """Create a missing SQLite file readable by its owner only (0600).

    The database holds key hashes and every user's usage; SQLite gives the -wal and -shm
    files it creates later the same mode. An existing file keeps the mode it has.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def create_db_engine(url: str) -> Engine:
    """An engine for the URL, with SQLite tuned for a concurrent server."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:" and not path.startswith("file:"):
            _create_private(Path(path).expanduser())
        engine = create_engine(
            url,
            json_serializer=jsonio.dumps,  # JSON columns may hold exact Decimals
            connect_args={"check_same_thread": False, "timeout": 30, "isolation_level": None},
            # Enough pooled connections for the threadpool, so none are opened per request.
            pool_size=20,
            max_overflow=20,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(
        url,
        json_serializer=jsonio.dumps,
        pool_size=10,
        max_overflow=10,
        pool_pre_ping=True,
        pool_timeout=5,
        connect_args={"connect_timeout": 5},
    )


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded values after commit (we serialize after committing)."""
    return sessionmaker(engine, expire_on_commit=False)


def read_only(engine: Engine) -> Engine:
    """The same engine (same pool) for transactions that only read.

    On SQLite they begin deferred instead of IMMEDIATE, so a long read (a deep usage page, a
    summary) never holds the single write lock the hot path's usage writer needs. Nothing
    written through it may be committed: SQLite may refuse to upgrade such a transaction.
    """
    return engine.execution_options(**{READ_ONLY: True})


def read_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for read-only work (every GET of the management API, cache loads)."""
    return sessionmaker(read_only(engine), expire_on_commit=False)


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at our migrations and the given database."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the schema to `revision`; raises on failure, leaving the old schema in place.

    A database already at the head is left alone without loading Alembic (about 10 MiB,
    with Mako, that the daemon would otherwise keep for its whole life).
    """
    engine = create_db_engine(url)
    try:
        if revision == "head" and ping(engine) == schema_head():
            return
        from alembic import command

        with engine.begin() as connection:
            config = alembic_config(url)
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        engine.dispose()


def schema_head() -> str:
    """The newest migration revision this code expects.

    Read from the migration files' `revision` / `down_revision` assignments, so that
    serving never loads Alembic; Alembic's own answer is used when the files do not name
    exactly one head (tests/server/test_usage_schema.py checks both agree).
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign):
                target, expression = node.targets[0], node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                target, expression = node.target, node.value
            else:
                continue
            if not isinstance(target, ast.Name) or target.id not in ("revision", "down_revision"):
                continue
            value = ast.literal_eval(expression)
            if target.id == "revision":
                revisions.add(str(value))
            elif target.id == "down_revision" and value is not None:
                parents.update([value] if isinstance(value, str) else value)
    heads = revisions - parents
    if len(heads) == 1:
        return heads.pop()
    from alembic.script import ScriptDirectory

    return str(ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head())


def ping(engine: Engine) -> str | None:
    """One round trip: the schema revision the database is at (raises when unreachable)."""
    with read_only(engine).connect() as connection:
        try:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except ProgrammingError:
            return None  # not migrated at all
        except OperationalError as exc:
            if "no such table" in str(exc.orig):
                return None
            raise

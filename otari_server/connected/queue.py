"""The durable usage-report queue: one SQLite file (mode 0600) that survives restarts.

Every report is written here before the client's response ends, and leaves only once the
platform accepted it, refused it for good, or it expired. Several worker processes may share
the file: a delivery *leases* a report for a while, so two workers never send it at once,
and a lease left by a process that died simply runs out.

Times are wall-clock seconds since the epoch (they must mean the same after a restart).
Writes use WAL with synchronous=NORMAL: a report survives any crash of the process (the
write is in the OS before `put` returns); only a power loss may cost the last moments.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from otari_server.settings import ConfigError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    key     TEXT PRIMARY KEY,        -- the idempotency key, the same on every try
    body    BLOB NOT NULL,           -- the JSON report
    size    INTEGER NOT NULL,        -- len(body), for the size bound
    created REAL NOT NULL,           -- when the report was queued
    tries   INTEGER NOT NULL DEFAULT 0,
    due     REAL NOT NULL,           -- no try before this time
    lease   REAL NOT NULL DEFAULT 0  -- a delivery holds the report until this time
);
CREATE INDEX IF NOT EXISTS reports_due ON reports (due);
"""


@dataclass(frozen=True, slots=True)
class Queued:
    """One report taken for delivery."""

    key: str
    body: bytes
    tries: int  # failed tries so far
    created: float


@dataclass(frozen=True, slots=True)
class QueueStats:
    """What is waiting: how many reports, their bytes, and the oldest one's creation time."""

    depth: int
    size: int
    oldest: float | None


class UsageQueue:
    """The queue file; every method is a short transaction (safe to call on the event loop)."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._db: sqlite3.Connection | None = None
        self._size = 0  # bytes queued, as last counted plus what this process added since

    def open(self) -> None:
        """Create (mode 0600, in a 0700 directory) or reopen the file.

        Raises OSError or sqlite3.Error when the file cannot be used.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Created 0600 from the start; an existing file is narrowed to 0600 too. SQLite gives
        # its -wal and -shm files the database file's permissions.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout = 5000")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.executescript(_SCHEMA)
        self._db = db
        self._size = self.stats().size

    def check(self) -> None:
        """Open and close the file once: ConfigError naming the setting when it is unusable."""
        try:
            self.open()
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"platform.usage_queue: cannot use {self.path}: {exc}") from None
        finally:
            self.close()

    def close(self) -> None:
        """Close the file (what is queued stays for the next start)."""
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        """The open connection; sqlite3.ProgrammingError once closed."""
        if self._db is None:
            raise sqlite3.ProgrammingError(f"usage queue {self.path} is not open")
        return self._db

    @property
    def full(self) -> bool:
        """Whether the queued reports reached `max_bytes`."""
        return self._size >= self.max_bytes

    def put(self, key: str, body: bytes, now: float) -> None:
        """Queue a report, due at once."""
        self.db.execute(
            "INSERT INTO reports (key, body, size, created, due) VALUES (?, ?, ?, ?, ?)",
            (key, body, len(body), now, now),
        )
        self._size += len(body)

    def claim(self, now: float, limit: int, lease: float) -> list[Queued]:
        """Lease up to `limit` due reports, oldest due first, for `lease` seconds."""
        rows = self.db.execute(
            "UPDATE reports SET lease = ? WHERE key IN (SELECT key FROM reports "
            "WHERE due <= ? AND lease <= ? ORDER BY due LIMIT ?) "
            "RETURNING key, body, tries, created",
            (now + lease, now, now, limit),
        ).fetchall()
        return [Queued(key, bytes(body), tries, created) for key, body, tries, created in rows]

    def remove(self, key: str) -> None:
        """Forget a report (delivered, refused for good, or given up on)."""
        row = self.db.execute("DELETE FROM reports WHERE key = ? RETURNING size", (key,)).fetchone()
        if row is not None:
            self._size -= row[0]

    def retry_at(self, key: str, due: float) -> None:
        """Count a failed try and keep the report until `due`."""
        self.db.execute(
            "UPDATE reports SET tries = tries + 1, due = ?, lease = 0 WHERE key = ?", (due, key)
        )

    def release(self, keys: list[str]) -> None:
        """End the leases of deliveries cut short (shutdown): due again at once."""
        self.db.executemany("UPDATE reports SET lease = 0 WHERE key = ?", [(key,) for key in keys])

    def expire(self, created_before: float) -> list[str]:
        """Remove reports queued before `created_before`; their keys."""
        rows = self.db.execute(
            "DELETE FROM reports WHERE created < ? RETURNING key", (created_before,)
        ).fetchall()
        if rows:
            self._size = self.stats().size
        return [key for (key,) in rows]

    def next_due(self) -> float | None:
        """When the earliest unleased report falls due (None when nothing waits)."""
        row = self.db.execute("SELECT min(max(due, lease)) FROM reports").fetchone()
        return None if row[0] is None else float(row[0])

    def stats(self) -> QueueStats:
        """Depth, bytes and oldest creation time, counted afresh (other workers write too)."""
        depth, size, oldest = self.db.execute(
            "SELECT count(*), coalesce(sum(size), 0), min(created) FROM reports"
        ).fetchone()
        self._size = int(size)
        return QueueStats(int(depth), int(size), None if oldest is None else float(oldest))

"""The settlement spool: rows that could not reach the database at shutdown, kept on disk.

One JSON line per settlement in a file of mode 0600 under the state directory, named by
instance; the next start of that instance replays it exactly once (the file is removed only
after its rows are written). Money is written as a decimal string, never a float.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine

from otari_server.accounting.reservations import Hold
from otari_server.accounting.settlements import (
    Settlement,
    Unwritten,
    log_rejected,
    write_settlements,
)
from otari_server.settings import state_dir

log = logging.getLogger("otari.ledger")  # one logger for the whole ledger


def spool_path(instance_id: str) -> Path:
    """The file an instance's unwritten settlements go to at shutdown (state dir, 0600)."""
    return state_dir() / f"usage-spool-{_file_safe(instance_id)}.jsonl"


def spooled_paths(node: str) -> list[Path]:
    """Spool files left by this host and port (and its worker processes)."""
    folder, name = state_dir(), f"usage-spool-{_file_safe(node)}"
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.name in (f"{name}.jsonl", f"{name}.jsonl.replaying")
        or (p.name.startswith(name + "_") and ".jsonl" in p.name)
    )


def _file_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in name)


def spool(path: Path, rows: list[Settlement]) -> None:
    """Append settlements to a spool file, one JSON object a line, mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, b"".join(orjson.dumps(_spooled(row)) + b"\n" for row in rows))
        os.fsync(fd)
    finally:
        os.close(fd)


def _spooled(s: Settlement) -> dict[str, Any]:
    return {
        "hold_user_id": s.hold.user_id,
        "hold_amount": str(s.hold.amount),
        "user_id": s.user_id,
        "api_key_id": s.api_key_id,
        "model": s.model,
        "provider": s.provider,
        "endpoint": s.endpoint,
        "status": s.status,
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens,
        "cache_read_tokens": s.cache_read_tokens,
        "cache_write_tokens": s.cache_write_tokens,
        "cost": None if s.cost is None else str(s.cost),
        "counts_toward_budget": s.counts_toward_budget,
        "error_message": s.error_message,
        "latency_ms": s.latency_ms,
        "request_id": s.request_id,
        "rate_subjects": list(s.rate_subjects),
        "id": s.id,
        "timestamp": s.timestamp.isoformat(),
        "status_code": s.status_code,
    }


def _unspooled(line: dict[str, Any]) -> Settlement:
    hold = Hold(line.pop("hold_user_id"), Decimal(line.pop("hold_amount")))
    cost = line.pop("cost")
    return Settlement(
        hold=hold,
        cost=None if cost is None else Decimal(cost),
        timestamp=datetime.fromisoformat(line.pop("timestamp")),
        rate_subjects=tuple(line.pop("rate_subjects")),
        **line,
    )


def replay_spool(engine: Engine, node: str, instance_id: str) -> int:
    """Write the settlements earlier runs of this node spooled at shutdown; exactly once.

    Call after `reclaim` (their holds were given back with the rest, so the replay releases
    nothing twice). Each file is renamed before it is read, written, then removed; a row
    written already (its id is the usage row's primary key) is refused, not counted twice.
    Rows the database cannot take now stay in the file for the next start.
    """
    replayed = 0
    for path in spooled_paths(node):
        working = (
            path if path.name.endswith(".replaying") else path.with_name(path.name + ".replaying")
        )
        if working != path:
            path.replace(working)
        rows = [
            _unspooled(orjson.loads(line))
            for line in working.read_bytes().splitlines()
            if line.strip()
        ]
        with engine.connect() as conn:
            try:
                write_settlements(conn, rows, instance_id, log_rejected)
            except Unwritten as exc:
                working.unlink()
                spool(path, exc.rows)
                log.warning(
                    "could not replay %d spooled usage row(s) from %s (%s); "
                    "kept for the next start",
                    len(exc.rows),
                    path.name,
                    type(exc.__cause__).__name__,
                )
                replayed += len(rows) - len(exc.rows)
                continue
        working.unlink()
        replayed += len(rows)
    if replayed:
        log.warning("replayed %d usage row(s) spooled at an earlier shutdown", replayed)
    return replayed

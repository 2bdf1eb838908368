"""Usage rows written straight into a real database, for paging, summary and retention tests."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from otari_server.accounting import usage_totals
from otari_server.storage.db import create_db_engine, session_factory
from otari_server.storage.tables import UsageLog


def row(
    row_id: str,
    when: datetime,
    *,
    user_id: str | None = "alice",
    api_key_id: str | None = "key-a",
    model: str = "openai:gpt-4o",
    status: str = "success",
    prompt: int = 10,
    completion: int = 5,
    cost: str = "0.5",
) -> dict[str, Any]:
    """The fields of one usage row (provider taken from the model key)."""
    return {
        "id": row_id,
        "user_id": user_id,
        "api_key_id": api_key_id,
        "timestamp": when,
        "model": model,
        "provider": model.partition(":")[0],
        "endpoint": "/v1/chat/completions",
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cost": Decimal(cost),
        "status": status,
    }


def insert(database_url: str, rows: list[dict[str, Any]]) -> None:
    """Insert the rows in one transaction, adding them to the day totals as the ledger does."""
    engine = create_db_engine(database_url)
    try:
        with session_factory(engine).begin() as session:
            session.add_all(UsageLog(**fields) for fields in rows)
            session.flush()
            usage_totals.add(session.connection(), rows, usage_totals.shard_of("tests"))
    finally:
        engine.dispose()

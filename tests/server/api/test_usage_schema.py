"""Migration 0004 builds exactly the usage indexes and roll-up table that tables.py declares."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from otari_server.storage.db import alembic_config, create_db_engine, migrate
from otari_server.storage.tables import Base


def test_usage_indexes_and_rollups_match_the_tables(database_url: str) -> None:
    migrate(database_url)
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            indexes = {
                ix["name"]: ix["column_names"] for ix in inspect(conn).get_indexes("usage_logs")
            }
    finally:
        engine.dispose()
    structural = [
        d
        for d in diff
        if isinstance(d, tuple)
        and d[0] in ("add_table", "remove_table", "add_index", "remove_index")
    ]
    assert structural == []
    assert indexes == {
        "ix_usage_logs_timestamp_id": ["timestamp", "id"],
        "ix_usage_logs_user_timestamp_id": ["user_id", "timestamp", "id"],
        "ix_usage_logs_key_timestamp_id": ["api_key_id", "timestamp", "id"],
    }


def test_migration_0004_downgrades_cleanly(sqlite_url: str) -> None:
    migrate(sqlite_url)
    engine = create_db_engine(sqlite_url)
    try:
        with engine.begin() as conn:
            config = alembic_config(sqlite_url)
            config.attributes["connection"] = conn
            command.downgrade(config, "0002")
        with engine.connect() as conn:
            names = {ix["name"] for ix in inspect(conn).get_indexes("usage_logs")}
            assert "usage_daily" not in inspect(conn).get_table_names()
    finally:
        engine.dispose()
    assert names == {
        "ix_usage_logs_api_key_id",
        "ix_usage_logs_timestamp",
        "ix_usage_logs_user_timestamp",
    }

"""Alembic environment: runs on the connection handed over by otari_server.storage.db.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

import otari_server.storage.batch_tables  # noqa: F401  (registers the batches table)
from otari_server.storage.tables import Base

config = context.config
connection = config.attributes.get("connection")

if connection is not None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
else:  # `alembic` run by hand against sqlalchemy.url
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.begin() as conn:
            context.configure(
                connection=conn,
                target_metadata=Base.metadata,
                render_as_batch=conn.dialect.name == "sqlite",
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()

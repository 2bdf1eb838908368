"""usage totals per day and dimension, kept current as rows are written (fast summaries)

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

from otari_server.storage import tables

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# (dimension, usage column) pairs; see otari_server.accounting.usage_totals.
_DIMENSIONS = (
    ("user", "user_id"),
    ("key", "api_key_id"),
    ("model", "model"),
    ("provider", "provider"),
)


def upgrade() -> None:
    op.create_table(
        "usage_totals",
        sa.Column("dimension", sa.String(length=8), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("shard", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost", tables.Money(precision=30, scale=10), nullable=False),
        sa.PrimaryKeyConstraint("dimension", "day", "value", "status", "shard"),
    )
    # Existing rows, live and pruned, are counted once here (SQL only: fast on big tables).
    if op.get_bind().dialect.name == "sqlite":
        day = "substr(timestamp, 1, 10)"
    else:
        day = "CAST(timezone('UTC', timestamp) AS DATE)"
    for dimension, column in _DIMENSIONS:
        op.execute(
            "INSERT INTO usage_totals (dimension, day, value, status, shard, requests, "
            "prompt_tokens, completion_tokens, cost) "
            f"SELECT '{dimension}', day, value, status, 0, SUM(requests), SUM(prompt_tokens), "
            "SUM(completion_tokens), SUM(cost) FROM ("
            f"SELECT {day} AS day, COALESCE({column}, '') AS value, status, 1 AS requests, "
            "COALESCE(prompt_tokens, 0) AS prompt_tokens, "
            "COALESCE(completion_tokens, 0) AS completion_tokens, COALESCE(cost, 0) AS cost "
            "FROM usage_logs UNION ALL "
            f"SELECT day, COALESCE({column}, ''), status, requests, prompt_tokens, "
            "completion_tokens, cost FROM usage_daily"
            ") AS rows GROUP BY day, value, status"
        )


def downgrade() -> None:
    op.drop_table("usage_totals")

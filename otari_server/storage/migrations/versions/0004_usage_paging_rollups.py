"""usage: indexes for cursor pages and summaries, daily roll-ups of pruned rows

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from otari_server.storage import tables

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Pages are ordered by the (timestamp, id) cursor, overall, per user and per key; the
    # single-column indexes they replace served no query (api_key_id) or only half of one.
    op.create_index("ix_usage_logs_timestamp_id", "usage_logs", ["timestamp", "id"])
    op.create_index("ix_usage_logs_user_timestamp_id", "usage_logs", ["user_id", "timestamp", "id"])
    op.create_index(
        "ix_usage_logs_key_timestamp_id", "usage_logs", ["api_key_id", "timestamp", "id"]
    )
    op.drop_index("ix_usage_logs_user_timestamp", table_name="usage_logs")
    op.drop_index("ix_usage_logs_timestamp", table_name="usage_logs")
    op.drop_index("ix_usage_logs_api_key_id", table_name="usage_logs")
    op.create_table(
        "usage_daily",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=True),
        sa.Column("api_key_id", sa.String(length=64), nullable=True),
        sa.Column("model", sa.String(length=255), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("total_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost", tables.Money(precision=30, scale=10), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_usage_daily_group",
        "usage_daily",
        ["day", "user_id", "api_key_id", "model", "provider", "status"],
    )


def downgrade() -> None:
    op.drop_index("ix_usage_daily_group", table_name="usage_daily")
    op.drop_table("usage_daily")
    op.create_index("ix_usage_logs_api_key_id", "usage_logs", ["api_key_id"])
    op.create_index("ix_usage_logs_timestamp", "usage_logs", ["timestamp"])
    op.create_index("ix_usage_logs_user_timestamp", "usage_logs", ["user_id", "timestamp"])
    op.drop_index("ix_usage_logs_key_timestamp_id", table_name="usage_logs")
    op.drop_index("ix_usage_logs_user_timestamp_id", table_name="usage_logs")
    op.drop_index("ix_usage_logs_timestamp_id", table_name="usage_logs")

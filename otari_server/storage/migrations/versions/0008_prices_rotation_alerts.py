"""imported prices, where a usage row's price came from, key rotation, budget alerts

Revision ID: 0008
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from otari_server.storage import tables

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pricing", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source", sa.String(length=32), nullable=True))
    with op.batch_alter_table("usage_logs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("price_source", sa.String(length=32), nullable=True))
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("previous_key_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("previous_key_expires_at", tables.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(
            batch_op.f("ix_api_keys_previous_key_hash"), ["previous_key_hash"], unique=True
        )
    with op.batch_alter_table("budgets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("alert_thresholds", sa.JSON(), nullable=True))
    op.create_table(
        "budget_alerts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("period_start", tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("threshold", sa.String(length=32), nullable=False),
        sa.Column("budget_id", sa.String(length=64), nullable=True),
        sa.Column("period_end", tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("spend", tables.Money(), nullable=False),
        sa.Column("max_budget", tables.Money(), nullable=False),
        sa.Column("created_at", tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("user_id", "period_start", "threshold"),
    )
    with op.batch_alter_table("budget_alerts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_budget_alerts_next_attempt_at"), ["next_attempt_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("budget_alerts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_budget_alerts_next_attempt_at"))
    op.drop_table("budget_alerts")
    with op.batch_alter_table("budgets", schema=None) as batch_op:
        batch_op.drop_column("alert_thresholds")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_previous_key_hash"))
        batch_op.drop_column("previous_key_expires_at")
        batch_op.drop_column("previous_key_hash")
    with op.batch_alter_table("usage_logs", schema=None) as batch_op:
        batch_op.drop_column("price_source")
    with op.batch_alter_table("pricing", schema=None) as batch_op:
        batch_op.drop_column("source")

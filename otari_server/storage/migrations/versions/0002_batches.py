"""batches created through the gateway

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from otari_server.storage import tables

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("batch_id", sa.String(length=255), nullable=False),
        sa.Column("model_key", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=True),
        sa.Column("api_key_id", sa.String(length=64), nullable=True),
        sa.Column("counts_toward_budget", sa.Boolean(), nullable=False),
        sa.Column("request_count", sa.Integer(), nullable=False),
        sa.Column("created_at", tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("metered_at", tables.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("provider", "batch_id"),
    )
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_batches_user_id"), ["user_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_batches_api_key_id"), ["api_key_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_batches_api_key_id"))
        batch_op.drop_index(batch_op.f("ix_batches_user_id"))
    op.drop_table("batches")

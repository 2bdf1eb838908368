"""batch holds; stored responses' provider and owner

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from otari_server.storage import tables

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("hold_id", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column(
                "reserved", tables.Money(precision=30, scale=10), nullable=False, server_default="0"
            )
        )
    op.create_table(
        "stored_responses",
        sa.Column("response_id", sa.String(length=255), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("model_key", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=True),
        sa.Column("api_key_id", sa.String(length=64), nullable=True),
        sa.Column("translated", sa.Boolean(), nullable=False),
        sa.Column("created_at", tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("response_id"),
    )
    with op.batch_alter_table("stored_responses", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stored_responses_user_id"), ["user_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_stored_responses_api_key_id"), ["api_key_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("stored_responses", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stored_responses_api_key_id"))
        batch_op.drop_index(batch_op.f("ix_stored_responses_user_id"))
    op.drop_table("stored_responses")
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_column("reserved")
        batch_op.drop_column("hold_id")

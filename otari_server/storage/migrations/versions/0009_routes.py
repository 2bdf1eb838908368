"""routes defined through the API; usage rows name the route and its attempts

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

from otari_server.storage import tables

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "routes",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("strategy", sa.String(length=16), nullable=False),
        sa.Column("targets", sa.JSON(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("created_at", tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("usage_logs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("route", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_logs", schema=None) as batch_op:
        batch_op.drop_column("attempts")
        batch_op.drop_column("route")
    op.drop_table("routes")

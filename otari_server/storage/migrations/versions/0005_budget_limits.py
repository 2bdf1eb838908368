"""calendar budgets, request and token limits, budget clamp, long-context price tiers

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_COUNTS = {
    "users": ("requests", "tokens", "reserved_requests", "reserved_tokens"),
    "reservations": ("requests", "tokens"),
}


def upgrade() -> None:
    with op.batch_alter_table("budgets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reset_alignment", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("request_limit", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("token_limit", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("budget_clamp", sa.Boolean(), nullable=True))
    for table, columns in _COUNTS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in columns:
                batch_op.add_column(
                    sa.Column(column, sa.BigInteger(), nullable=False, server_default="0")
                )
    with op.batch_alter_table("pricing", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tiers", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pricing", schema=None) as batch_op:
        batch_op.drop_column("tiers")
    for table, columns in _COUNTS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in reversed(columns):
                batch_op.drop_column(column)
    with op.batch_alter_table("budgets", schema=None) as batch_op:
        for column in ("budget_clamp", "token_limit", "request_limit", "reset_alignment"):
            batch_op.drop_column(column)

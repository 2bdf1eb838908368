"""usage rows: 64-bit token counts, the HTTP status the client was answered

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TOKEN_COLUMNS = ("prompt_tokens", "completion_tokens", "total_tokens", "cache_read_tokens",
                 "cache_write_tokens")


def upgrade() -> None:
    with op.batch_alter_table("usage_logs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status_code", sa.Integer(), nullable=True))
        # SQLite's INTEGER is 64-bit already; PostgreSQL's is 32-bit.
        if op.get_bind().dialect.name != "sqlite":
            for name in TOKEN_COLUMNS:
                batch_op.alter_column(name, existing_type=sa.Integer(),
                                      type_=sa.BigInteger(), existing_nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("usage_logs", schema=None) as batch_op:
        if op.get_bind().dialect.name != "sqlite":
            for name in TOKEN_COLUMNS:
                batch_op.alter_column(name, existing_type=sa.BigInteger(),
                                      type_=sa.Integer(), existing_nullable=True)
        batch_op.drop_column("status_code")

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

TOKEN_COLUMNS = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
)


def upgrade() -> None:
    with op.batch_alter_table("usage_logs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status_code", sa.Integer(), nullable=True))
        # PostgreSQL's INTEGER is 32-bit (SQLite's is 64-bit already: there the table is
        # rebuilt once, so that the schema matches the tables everywhere).
        for name in TOKEN_COLUMNS:
            batch_op.alter_column(
                name, existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=True
            )


def downgrade() -> None:
    with op.batch_alter_table("usage_logs", schema=None) as batch_op:
        for name in TOKEN_COLUMNS:
            batch_op.alter_column(
                name, existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=True
            )
        batch_op.drop_column("status_code")

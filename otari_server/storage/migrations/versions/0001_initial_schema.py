"""initial schema

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from otari_server.storage import tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "budgets",
        sa.Column("budget_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("max_budget", tables.Money(precision=30, scale=10), nullable=True),
        sa.Column("budget_duration_sec", sa.Integer(), nullable=True),
        sa.Column("created_at", tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("budget_id"),
    )
    op.create_table(
        "pricing",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_key", sa.String(length=255), nullable=False),
        sa.Column("effective_at", tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "input_price_per_million",
            tables.Money(precision=30, scale=10),
            nullable=False,
        ),
        sa.Column(
            "output_price_per_million",
            tables.Money(precision=30, scale=10),
            nullable=False,
        ),
        sa.Column("unit", sa.String(length=16), nullable=False),
        sa.Column(
            "cache_read_price_per_million",
            tables.Money(precision=30, scale=10),
            nullable=True,
        ),
        sa.Column(
            "cache_write_price_per_million",
            tables.Money(precision=30, scale=10),
            nullable=True,
        ),
        sa.Column(
            "cache_write_1h_price_per_million",
            tables.Money(precision=30, scale=10),
            nullable=True,
        ),
        sa.Column("price_per_image", tables.Money(precision=30, scale=10), nullable=True),
        sa.Column(
            "price_per_audio_second",
            tables.Money(precision=30, scale=10),
            nullable=True,
        ),
        sa.Column(
            "price_per_million_characters",
            tables.Money(precision=30, scale=10),
            nullable=True,
        ),
        sa.Column("price_per_request", tables.Money(precision=30, scale=10), nullable=True),
        sa.Column("created_at", tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model_key", "effective_at"),
    )
    with op.batch_alter_table("pricing", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pricing_model_key"), ["model_key"], unique=False)

    op.create_table(
        "rate_counters",
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("subject", "window_start"),
    )
    op.create_table(
        "reservations",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=True),
        sa.Column("api_key_id", sa.String(length=64), nullable=True),
        sa.Column("amount", tables.Money(precision=30, scale=10), nullable=False),
        sa.Column("instance_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("reservations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_reservations_api_key_id"), ["api_key_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_reservations_expires_at"), ["expires_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_reservations_instance_id"), ["instance_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_reservations_user_id"), ["user_id"], unique=False)

    op.create_table(
        "usage_logs",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=True),
        sa.Column("api_key_id", sa.String(length=64), nullable=True),
        sa.Column("timestamp", tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(length=255), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=True),
        sa.Column("endpoint", sa.String(length=64), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("total_tokens", sa.Integer(), nullable=True),
        sa.Column("cache_read_tokens", sa.Integer(), nullable=True),
        sa.Column("cache_write_tokens", sa.Integer(), nullable=True),
        sa.Column("cost", tables.Money(precision=30, scale=10), nullable=True),
        sa.Column("counts_toward_budget", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("usage_logs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_usage_logs_api_key_id"), ["api_key_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_usage_logs_timestamp"), ["timestamp"], unique=False)
        batch_op.create_index(
            "ix_usage_logs_user_timestamp", ["user_id", "timestamp"], unique=False
        )

    op.create_table(
        "users",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("alias", sa.String(length=255), nullable=True),
        sa.Column("spend", tables.Money(precision=30, scale=10), nullable=False),
        sa.Column("reserved", tables.Money(precision=30, scale=10), nullable=False),
        sa.Column("budget_id", sa.String(length=64), nullable=True),
        sa.Column("budget_started_at", tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("next_budget_reset_at", tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("blocked", sa.Boolean(), nullable=False),
        sa.Column("deleted_at", tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("rpm_limit", sa.Integer(), nullable=True),
        sa.Column("tpm_limit", sa.Integer(), nullable=True),
        sa.Column("allowed_models", sa.JSON(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("created_at", tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tables.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["budget_id"], ["budgets.budget_id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("user_id"),
    )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_users_budget_id"), ["budget_id"], unique=False)

    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("key_prefix", sa.String(length=16), nullable=False),
        sa.Column("key_name", sa.String(length=255), nullable=True),
        sa.Column("user_id", sa.String(length=255), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("expires_at", tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("spend", tables.Money(precision=30, scale=10), nullable=False),
        sa.Column("reserved", tables.Money(precision=30, scale=10), nullable=False),
        sa.Column("rpm_limit", sa.Integer(), nullable=True),
        sa.Column("tpm_limit", sa.Integer(), nullable=True),
        sa.Column("allowed_models", sa.JSON(), nullable=True),
        sa.Column("exclude_from_budget", sa.Boolean(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("created_at", tables.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.user_id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_hash"),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_keys_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_user_id"))

    op.drop_table("api_keys")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_users_budget_id"))

    op.drop_table("users")
    with op.batch_alter_table("usage_logs", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_logs_user_timestamp")
        batch_op.drop_index(batch_op.f("ix_usage_logs_timestamp"))
        batch_op.drop_index(batch_op.f("ix_usage_logs_api_key_id"))

    op.drop_table("usage_logs")
    with op.batch_alter_table("reservations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reservations_user_id"))
        batch_op.drop_index(batch_op.f("ix_reservations_instance_id"))
        batch_op.drop_index(batch_op.f("ix_reservations_expires_at"))
        batch_op.drop_index(batch_op.f("ix_reservations_api_key_id"))

    op.drop_table("reservations")
    op.drop_table("rate_counters")
    with op.batch_alter_table("pricing", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pricing_model_key"))

    op.drop_table("pricing")
    op.drop_table("budgets")

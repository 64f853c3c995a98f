"""dashboard sessions, rate limits, erasure tombstones, 64-bit entity versions

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import syncd.store.tables

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

UTC_TIME = syncd.store.tables.UTCDateTime(timezone=True)
# Tables whose ``version`` holds the platform's per-entity version.
VERSIONED = (
    "therapists",
    "sessions",
    "entity_history",
    "offers",
    "reserved_slots",
    "inbound_events",
)


def upgrade() -> None:
    op.create_table(
        "admin_sessions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=False),
        sa.Column("csrf", sa.String(length=64), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("expires_at", UTC_TIME, nullable=False),
        sa.Column("last_seen_at", UTC_TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["token_id"],
            ["api_tokens.id"],
            name=op.f("fk_admin_sessions_token_id_api_tokens"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_sessions")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_admin_sessions_secret_hash")),
    )
    op.create_index(
        op.f("ix_admin_sessions_expires_at"), "admin_sessions", ["expires_at"], unique=False
    )
    op.create_index(
        op.f("ix_admin_sessions_token_id"), "admin_sessions", ["token_id"], unique=False
    )
    op.create_table(
        "rate_limits",
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("window_start", UTC_TIME, nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "client", "window_start", name=op.f("pk_rate_limits")),
    )
    op.create_index(
        op.f("ix_rate_limits_window_start"), "rate_limits", ["window_start"], unique=False
    )
    op.create_table(
        "erased_entities",
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("version", syncd.store.tables.EntityVersion, nullable=False),
        sa.Column("erased_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("key_hash", name=op.f("pk_erased_entities")),
    )
    # SQLite's INTEGER is 64-bit already; rewriting its tables would gain nothing.
    if op.get_bind().dialect.name == "postgresql":
        for table in VERSIONED:
            op.alter_column(table, "version", type_=sa.BigInteger(), existing_type=sa.Integer())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in VERSIONED:
            op.alter_column(table, "version", type_=sa.Integer(), existing_type=sa.BigInteger())
    op.drop_table("erased_entities")
    op.drop_index(op.f("ix_rate_limits_window_start"), table_name="rate_limits")
    op.drop_table("rate_limits")
    op.drop_index(op.f("ix_admin_sessions_token_id"), table_name="admin_sessions")
    op.drop_index(op.f("ix_admin_sessions_expires_at"), table_name="admin_sessions")
    op.drop_table("admin_sessions")

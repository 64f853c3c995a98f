"""replicas

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import syncd.store.tables

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replicas",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=40), nullable=False),
        sa.Column("started_at", syncd.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("seen_at", syncd.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replicas")),
    )
    op.create_index(op.f("ix_replicas_seen_at"), "replicas", ["seen_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_replicas_seen_at"), table_name="replicas")
    op.drop_table("replicas")

"""feed tokens

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 06:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import syncd.store.tables

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feed_tokens",
        sa.Column("therapist_id", sa.String(length=200), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", syncd.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("rotated_at", syncd.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["therapist_id"],
            ["therapists.id"],
            name=op.f("fk_feed_tokens_therapist_id_therapists"),
        ),
        sa.PrimaryKeyConstraint("therapist_id", name=op.f("pk_feed_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_feed_tokens_token_hash")),
    )


def downgrade() -> None:
    op.drop_table("feed_tokens")

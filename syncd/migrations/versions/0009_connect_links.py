"""connect links

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import syncd.store.tables

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "connect_links",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("therapist_id", sa.String(length=200), nullable=False),
        sa.Column("created_at", syncd.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", syncd.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", syncd.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("connection_id", sa.Integer(), nullable=True),
        sa.Column("for_connection_id", sa.Integer(), nullable=True),
        sa.Column("google_state", sa.String(length=64), nullable=True),
        sa.Column("google_mode", sa.String(length=20), nullable=True),
        sa.Column("pending_secret", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["therapist_id"],
            ["therapists.id"],
            name=op.f("fk_connect_links_therapist_id_therapists"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connect_links")),
    )
    op.create_index(
        op.f("ix_connect_links_therapist_id"), "connect_links", ["therapist_id"], unique=False
    )
    op.create_index(
        op.f("ix_connect_links_for_connection_id"),
        "connect_links",
        ["for_connection_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_connect_links_google_state"), "connect_links", ["google_state"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_connect_links_google_state"), table_name="connect_links")
    op.drop_index(op.f("ix_connect_links_for_connection_id"), table_name="connect_links")
    op.drop_index(op.f("ix_connect_links_therapist_id"), table_name="connect_links")
    op.drop_table("connect_links")

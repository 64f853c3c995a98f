"""google connections: owned calendars, watch channels, oauth requests

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 03:32:16.195072
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import syncd.store.tables

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "oauth_requests",
        sa.Column("state", sa.String(length=64), nullable=False),
        sa.Column("therapist_id", sa.String(length=200), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("code_verifier", sa.LargeBinary(), nullable=False),
        sa.Column("calendar_id", sa.Text(), nullable=True),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("created_at", syncd.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", syncd.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("completed_at", syncd.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("connection_id", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["therapist_id"],
            ["therapists.id"],
            name=op.f("fk_oauth_requests_therapist_id_therapists"),
        ),
        sa.PrimaryKeyConstraint("state", name=op.f("pk_oauth_requests")),
    )
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("calendar_owned", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("channel_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("channel_token_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("channel_resource_id", sa.String(length=200), nullable=True))
        batch_op.add_column(
            sa.Column(
                "channel_expires_at", syncd.store.tables.UTCDateTime(timezone=True), nullable=True
            )
        )


def downgrade() -> None:

    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.drop_column("channel_expires_at")
        batch_op.drop_column("channel_resource_id")
        batch_op.drop_column("channel_token_hash")
        batch_op.drop_column("channel_id")
        batch_op.drop_column("calendar_owned")

    op.drop_table("oauth_requests")

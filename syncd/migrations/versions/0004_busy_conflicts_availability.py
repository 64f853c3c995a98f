"""busy time, conflicts, availability

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 03:54:10.412348
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import syncd.store.tables

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "availability",
        sa.Column("therapist_id", sa.String(length=200), nullable=False),
        sa.Column("slots", sa.JSON(), nullable=False),
        sa.Column("computed_at", syncd.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["therapist_id"],
            ["therapists.id"],
            name=op.f("fk_availability_therapist_id_therapists"),
        ),
        sa.PrimaryKeyConstraint("therapist_id", name=op.f("pk_availability")),
    )
    op.create_table(
        "conflicts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("therapist_id", sa.String(length=200), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column("entity_kind", sa.String(length=20), nullable=False),
        sa.Column("entity_id", sa.String(length=200), nullable=False),
        sa.Column("start_at", syncd.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("end_at", syncd.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("busy_start_at", syncd.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("busy_end_at", syncd.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("calendar_ref", sa.Text(), nullable=False),
        sa.Column("remote_ref", sa.Text(), nullable=True),
        sa.Column("detected_at", syncd.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", syncd.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["therapist_id"], ["therapists.id"], name=op.f("fk_conflicts_therapist_id_therapists")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conflicts")),
    )
    with op.batch_alter_table("conflicts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_conflicts_resolved_at"), ["resolved_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_conflicts_therapist_id"), ["therapist_id"], unique=False
        )

    op.create_table(
        "busy_intervals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column("calendar_ref", sa.Text(), nullable=False),
        sa.Column("start_at", syncd.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("end_at", syncd.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("tentative", sa.Boolean(), nullable=False),
        sa.Column("remote_ref", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_busy_intervals_connection_id_connections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_busy_intervals")),
    )
    with op.batch_alter_table("busy_intervals", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_busy_intervals_connection_id"), ["connection_id"], unique=False
        )

    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.add_column(sa.Column("busy_calendars", sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "busy_fetched_at", syncd.store.tables.UTCDateTime(timezone=True), nullable=True
            )
        )
        batch_op.add_column(sa.Column("busy_error", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "busy_flagged_at", syncd.store.tables.UTCDateTime(timezone=True), nullable=True
            )
        )


def downgrade() -> None:

    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.drop_column("busy_flagged_at")
        batch_op.drop_column("busy_error")
        batch_op.drop_column("busy_fetched_at")
        batch_op.drop_column("busy_calendars")

    with op.batch_alter_table("busy_intervals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_busy_intervals_connection_id"))

    op.drop_table("busy_intervals")
    with op.batch_alter_table("conflicts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_conflicts_therapist_id"))
        batch_op.drop_index(batch_op.f("ix_conflicts_resolved_at"))

    op.drop_table("conflicts")
    op.drop_table("availability")

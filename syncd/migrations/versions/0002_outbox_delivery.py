"""outbox delivery: event ids, retry schedule, leases and the last attempt's outcome

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 09:00:00.000000
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

import syncd.store.tables

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("event_id", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column(
                "next_attempt_at", syncd.store.tables.UTCDateTime(timezone=True), nullable=True
            )
        )
        batch_op.add_column(sa.Column("lease_owner", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("lease_until", syncd.store.tables.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("last_status", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("last_error", sa.Text(), nullable=True))

    # Rows written before this revision get their wire id now (the outbox is small: one UPDATE
    # per pending row is fine).
    outbox = sa.table("outbox", sa.column("id", sa.Integer), sa.column("event_id", sa.String))
    conn = op.get_bind()
    ids = conn.execute(sa.select(outbox.c.id).where(outbox.c.event_id.is_(None))).scalars().all()
    for row_id in ids:
        conn.execute(
            sa.update(outbox).where(outbox.c.id == row_id).values(event_id=uuid.uuid4().hex)
        )

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.alter_column("event_id", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_unique_constraint(batch_op.f("uq_outbox_event_id"), ["event_id"])
        batch_op.create_index(
            batch_op.f("ix_outbox_next_attempt_at"), ["next_attempt_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_next_attempt_at"))
        batch_op.drop_constraint(batch_op.f("uq_outbox_event_id"), type_="unique")
        batch_op.drop_column("last_error")
        batch_op.drop_column("last_status")
        batch_op.drop_column("lease_until")
        batch_op.drop_column("lease_owner")
        batch_op.drop_column("next_attempt_at")
        batch_op.drop_column("event_id")

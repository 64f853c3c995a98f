"""Queries the engine and the CLI share, in terms of domain objects and plain records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Executable, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from syncd.domain import PlatformState
from syncd.plan import MirrorRecord
from syncd.store.mapping import (
    offer_from_row,
    reserved_slot_from_row,
    session_from_row,
    therapist_from_row,
)
from syncd.store.tables import (
    ConnectionRow,
    DriftRow,
    MirrorRow,
    OfferRow,
    ReservedSlotRow,
    SessionRow,
    TherapistRow,
)


def platform_state(s: Session, therapist_id: str) -> PlatformState | None:
    row = s.get(TherapistRow, therapist_id)
    if row is None:
        return None
    sessions = s.scalars(
        select(SessionRow).where(SessionRow.therapist_id == therapist_id).order_by(SessionRow.id)
    ).all()
    offers = s.scalars(
        select(OfferRow).where(OfferRow.therapist_id == therapist_id).order_by(OfferRow.id)
    ).all()
    slots = s.scalars(
        select(ReservedSlotRow)
        .where(ReservedSlotRow.therapist_id == therapist_id)
        .order_by(ReservedSlotRow.id)
    ).all()
    return PlatformState(
        therapist=therapist_from_row(row),
        sessions=tuple(session_from_row(r) for r in sessions),
        offers=tuple(offer_from_row(r) for r in offers),
        reserved_slots=tuple(reserved_slot_from_row(r) for r in slots),
    )


def therapist_ids(s: Session) -> list[str]:
    return list(s.scalars(select(TherapistRow.id).order_by(TherapistRow.id)).all())


def connections(s: Session, therapist_id: str) -> list[ConnectionRow]:
    return list(
        s.scalars(
            select(ConnectionRow)
            .where(ConnectionRow.therapist_id == therapist_id)
            .order_by(ConnectionRow.id)
        ).all()
    )


def mirror(s: Session, connection_id: int) -> dict[str, MirrorRecord]:
    rows = s.scalars(select(MirrorRow).where(MirrorRow.connection_id == connection_id)).all()
    return {r.uid: MirrorRecord(r.uid, r.href, r.etag, r.content_hash) for r in rows}


def _mirror_upsert(dialect: str) -> Executable | None:
    """INSERT … ON CONFLICT DO UPDATE for a mirror row, built once per dialect: building the
    statement costs more than running it."""
    if dialect not in _MIRROR_UPSERTS:
        insert: Any = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}.get(dialect)
        statement = None
        if insert is not None:
            base = insert(MirrorRow)
            statement = base.on_conflict_do_update(
                index_elements=[MirrorRow.connection_id, MirrorRow.uid],
                set_={name: base.excluded[name] for name in _MIRROR_VALUES},
            )
        _MIRROR_UPSERTS[dialect] = statement
    return _MIRROR_UPSERTS[dialect]


_MIRROR_VALUES = ("href", "etag", "content_hash", "updated_at")
_MIRROR_UPSERTS: dict[str, Executable | None] = {}


def put_mirror(
    s: Session, connection_id: int, uid: str, href: str, etag: str, content_hash: str, now: datetime
) -> None:
    # One statement instead of a SELECT and then an INSERT or UPDATE: this runs once per write
    # of a bulk pass, between two requests. Core, so a row object loaded earlier in the same
    # session would be stale: none of the callers holds one.
    upsert = _mirror_upsert(s.get_bind().dialect.name)
    if upsert is not None:
        s.execute(
            upsert,
            {
                "connection_id": connection_id,
                "uid": uid,
                "href": href,
                "etag": etag,
                "content_hash": content_hash,
                "updated_at": now,
            },
        )
        return
    row = s.get(MirrorRow, (connection_id, uid))
    if row is None:
        row = MirrorRow(connection_id=connection_id, uid=uid)
        s.add(row)
    row.href, row.etag, row.content_hash, row.updated_at = href, etag, content_hash, now


def drop_mirror(s: Session, connection_id: int, uid: str) -> None:
    s.execute(
        delete(MirrorRow).where(MirrorRow.connection_id == connection_id, MirrorRow.uid == uid)
    )


def record_drift(s: Session, connection_id: int, uid: str, kind: str, now: datetime) -> None:
    s.add(DriftRow(connection_id=connection_id, uid=uid, kind=kind, detected_at=now))

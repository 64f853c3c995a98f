"""Tombstones of erased entities (``erased_entities``): a SHA-256 of type and id, never the id
itself, and the newest version seen. The ingestor treats a delivery of an erased entity at or
below that version as stale, so data erased on request is not stored again by a delivery still
in flight; a newer version is the platform's new word and is stored."""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from syncd.store.tables import ErasedEntityRow


def key(entity_type: str, entity_id: str) -> str:
    return hashlib.sha256(f"{entity_type}\0{entity_id}".encode()).hexdigest()


def erased_version(s: Session, entity_type: str, entity_id: str) -> int | None:
    """The newest version of an erased entity, or None if it was never erased."""
    return s.scalar(
        select(ErasedEntityRow.version).where(
            ErasedEntityRow.key_hash == key(entity_type, entity_id)
        )
    )


def is_erased(s: Session, entity_type: str, entity_id: str, version: int) -> bool:
    """Whether this version of the entity is one erased (or older)."""
    erased = erased_version(s, entity_type, entity_id)
    return erased is not None and version <= erased


def bury(s: Session, entity_type: str, entity_id: str, version: int, now: datetime) -> None:
    row = s.get(ErasedEntityRow, key(entity_type, entity_id))
    if row is None:
        s.add(ErasedEntityRow(key_hash=key(entity_type, entity_id), version=version, erased_at=now))
    else:
        row.version, row.erased_at = max(row.version, version), now

"""Applying platform events to the store: idempotent, versioned, all-or-nothing per event."""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from syncd import contract as c
from syncd import rules
from syncd.clock import Clock, utc_now
from syncd.contract import ContractError
from syncd.store import queue
from syncd.store.mapping import (
    session_from_row,
    session_to_row,
    therapist_to_row,
)
from syncd.store.tables import EntityHistoryRow, InboundEventRow, SessionRow, TherapistRow

log = logging.getLogger(__name__)


class Result(enum.StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # same event id seen before
    STALE = "stale"  # an equal or newer version is already stored
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Outcome:
    event_id: str | None
    result: Result
    therapist_id: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.result is not Result.REFUSED


class Ingestor:
    def __init__(self, sessions: sessionmaker[Session], clock: Clock = utc_now) -> None:
        self._sessions = sessions
        self._clock = clock

    def ingest(self, raw: str | bytes | dict[str, Any]) -> Outcome:
        """Validate and apply one event. Never raises for bad input: the outcome says why."""
        event_id: object = None
        try:
            if not isinstance(raw, dict):
                raw = c.load_json(raw)
            event_id = raw.get("id")
            event = c.parse_event(raw)
            event_id = event.id
            with self._sessions.begin() as s:
                return self._apply(s, event)
        except ContractError as exc:
            log.debug("event %s refused: %s", event_id or "?", exc)
            return Outcome(str(event_id) if event_id else None, Result.REFUSED, error=str(exc))

    def ingest_many(self, raws: Iterable[str | bytes | dict[str, Any]]) -> list[Outcome]:
        return [self.ingest(raw) for raw in raws]

    def _apply(self, s: Session, event: c.PlatformEvent) -> Outcome:
        now = self._clock()
        if s.get(InboundEventRow, event.id) is not None:
            return Outcome(event.id, Result.DUPLICATE)
        match event:
            case c.TherapistUpserted():
                result, tid = self._therapist(s, event.data, now)
            case c.SessionUpserted():
                result, tid = self._session(s, event.data, now)
            case _:
                raise ContractError(
                    "type",
                    "not_yet_supported",
                    f"{event.type} is part of the contract but not processed by this version",
                )
        data = event.data
        s.add(
            InboundEventRow(
                id=event.id,
                type=event.type,
                entity_id=data.id,
                version=data.version,
                outcome=result.value,
                received_at=now,
            )
        )
        if result is Result.APPLIED:
            s.add(
                EntityHistoryRow(
                    entity_type=event.type.split(".")[0],
                    entity_id=data.id,
                    version=data.version,
                    event_id=event.id,
                    payload=data.model_dump(mode="json"),
                    recorded_at=now,
                )
            )
            queue.mark_due(s, tid, now)
        return Outcome(event.id, result, therapist_id=tid)

    def _therapist(self, s: Session, data: c.TherapistIn, now: Any) -> tuple[Result, str]:
        row = s.get(TherapistRow, data.id)
        if row is not None and row.version >= data.version:
            return Result.STALE, data.id
        if row is None:
            row = TherapistRow()
            s.add(row)
        therapist_to_row(c.therapist_from(data), row, now)
        return Result.APPLIED, data.id

    def _session(self, s: Session, data: c.SessionIn, now: Any) -> tuple[Result, str]:
        if s.scalar(select(TherapistRow.id).where(TherapistRow.id == data.therapist_id)) is None:
            raise ContractError(
                "data.therapist_id",
                "unknown_therapist",
                f"no therapist {data.therapist_id!r} (send therapist.upserted first)",
            )
        row = s.get(SessionRow, data.id)
        if row is not None and row.version >= data.version:
            return Result.STALE, data.therapist_id
        new = c.session_from(data)
        rules.check_session_change(session_from_row(row) if row else None, new, now)
        if row is None:
            row = SessionRow()
            s.add(row)
        session_to_row(new, row, now)
        return Result.APPLIED, data.therapist_id

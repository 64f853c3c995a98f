"""Applying platform events to the store: idempotent, versioned, all-or-nothing per event."""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from syncd import contract as c
from syncd import domain as d
from syncd import recurrence, rules
from syncd.clock import Clock, utc_now
from syncd.contract import ContractError
from syncd.store import queue, repo, tombstones, wakeups
from syncd.store.mapping import (
    offer_from_row,
    offer_to_row,
    reserved_slot_to_row,
    session_from_row,
    session_to_row,
    therapist_to_row,
)
from syncd.store.tables import (
    EntityHistoryRow,
    InboundEventRow,
    OfferRow,
    ReservedSlotRow,
    SessionRow,
    TherapistRow,
)

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


def _shown_id(event_id: object) -> str | None:
    """The id of a refused event as it can be answered (JSON, a terminal): whatever the sender
    put there, as text, with lone surrogates escaped (UTF-8 cannot carry them), and short."""
    if not event_id:
        return None
    text = str(event_id)[:200]
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class Ingestor:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock = utc_now,
        *,
        hold: timedelta = d.DEFAULT_HOLD,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._hold = hold

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
            shown = _shown_id(event_id)
            log.debug("event %s refused: %s", shown or "?", exc)
            return Outcome(shown, Result.REFUSED, error=str(exc))

    def ingest_many(self, raws: Iterable[str | bytes | dict[str, Any]]) -> list[Outcome]:
        return [self.ingest(raw) for raw in raws]

    def _apply(self, s: Session, event: c.PlatformEvent) -> Outcome:
        now = self._clock()
        if s.get(InboundEventRow, event.id) is not None:
            return Outcome(event.id, Result.DUPLICATE)
        tid: str | None
        match event:
            case c.TherapistUpserted():
                result, tid = self._therapist(s, event.data, now)
            case c.SessionUpserted():
                result, tid = self._session(s, event.data, now)
            case c.OfferUpserted():
                result, tid = self._offer(s, event, now)
            case c.ReservedSlotUpserted():
                result, tid = self._reserved_slot(s, event.data, now)
        data = event.data
        if tid is None:
            # Data erased on request (the handlers' only answer without a therapist): the
            # delivery leaves no trace, not even its event id.
            return Outcome(event.id, result)
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

    def _therapist(self, s: Session, data: c.TherapistIn, now: datetime) -> tuple[Result, str]:
        row = s.get(TherapistRow, data.id)
        if row is not None and row.version >= data.version:
            return Result.STALE, data.id
        if row is None and tombstones.is_erased(s, "therapist", data.id, data.version):
            return Result.STALE, data.id
        if row is None:
            row = TherapistRow()
            s.add(row)
        therapist_to_row(c.therapist_from(data), row, now)
        return Result.APPLIED, data.id

    def _session(self, s: Session, data: c.SessionIn, now: datetime) -> tuple[Result, str | None]:
        row = s.get(SessionRow, data.id)
        if row is None and tombstones.is_erased(s, "session", data.id, data.version):
            return Result.STALE, None  # erased on request, and this is no newer
        if s.scalar(select(TherapistRow.id).where(TherapistRow.id == data.therapist_id)) is None:
            raise ContractError(
                "data.therapist_id",
                "unknown_therapist",
                f"no therapist {data.therapist_id!r} (send therapist.upserted first)",
            )
        if row is not None and row.version >= data.version:
            return Result.STALE, data.therapist_id
        new = c.session_from(data)
        rules.check_session_change(session_from_row(row) if row else None, new, now)
        if row is None:
            row = SessionRow()
            s.add(row)
        session_to_row(new, row, now)
        return Result.APPLIED, data.therapist_id

    def _offer(
        self, s: Session, event: c.OfferUpserted, now: datetime
    ) -> tuple[Result, str | None]:
        data = event.data
        if s.get(OfferRow, data.id) is None and tombstones.is_erased(
            s, "offer", data.id, data.version
        ):
            return Result.STALE, None
        session_row = s.get(SessionRow, data.session_id)
        if session_row is None:
            raise ContractError(
                "data.session_id",
                "unknown_session",
                f"no session {data.session_id!r} (send session.upserted first)",
            )
        tid = session_row.therapist_id
        row = s.get(OfferRow, data.id)
        if row is not None and row.version >= data.version:
            return Result.STALE, tid
        old = offer_from_row(row) if row else None
        new = c.offer_from(data, self._hold)
        state = repo.platform_state(s, tid)
        assert state is not None
        rules.check_offer(old, new, session_from_row(session_row), state, now)
        if row is None:
            row = OfferRow(released_at=None)
            s.add(row)
        offer_to_row(new, tid, row, now)
        if new.state is d.OfferState.PENDING:
            # Every replica re-reads the next expiry, so whichever runs the sweep does it on time.
            wakeups.announce(s, wakeups.OFFERS)
        became = new.state if old is None or old.state is not new.state else None
        if became is d.OfferState.ACCEPTED:
            assert new.accepted_alternative is not None
            alt = new.alternatives[new.accepted_alternative]
            # The session moves in place to the accepted time: same id, same calendar entry.
            session_row.start_at, session_row.end_at = alt.start, alt.end
            session_row.change = {"reason": "therapist_unavailable", "by": "client"}
            session_row.updated_at = now
            self._session_effect(s, session_row, event.id, now, f"offer {new.id} accepted")
        elif became is d.OfferState.REJECTED:
            session_row.status = d.SessionStatus.CANCELLED.value
            session_row.cancellation = {"reason": "alternatives_rejected", "by": "client"}
            session_row.updated_at = now
            self._session_effect(s, session_row, event.id, now, f"offer {new.id} rejected")
        return Result.APPLIED, tid

    @staticmethod
    def _session_effect(
        s: Session, row: SessionRow, event_id: str, now: datetime, why: str
    ) -> None:
        s.add(
            EntityHistoryRow(
                entity_type="session",
                entity_id=row.id,
                version=row.version,
                event_id=event_id,
                payload={
                    "effect": why,
                    "start": row.start_at.isoformat(),
                    "end": row.end_at.isoformat(),
                    "status": row.status,
                },
                recorded_at=now,
            )
        )

    def _reserved_slot(
        self, s: Session, data: c.ReservedSlotIn, now: datetime
    ) -> tuple[Result, str | None]:
        existing = s.get(ReservedSlotRow, data.id)
        if existing is None and tombstones.is_erased(s, "reserved_slot", data.id, data.version):
            return Result.STALE, None
        if s.get(TherapistRow, data.therapist_id) is None:
            raise ContractError(
                "data.therapist_id",
                "unknown_therapist",
                f"no therapist {data.therapist_id!r} (send therapist.upserted first)",
            )
        new = c.reserved_slot_from(data)
        try:
            recurrence.parse_rrule(new.rrule, new.first_start_local)
        except recurrence.RRuleError as exc:
            raise ContractError("data.rrule", "invalid_rrule", str(exc)) from None
        row = s.get(ReservedSlotRow, data.id)
        if row is not None and row.version >= data.version:
            return Result.STALE, data.therapist_id
        if row is not None and row.therapist_id != data.therapist_id:
            raise ContractError(
                "data.therapist_id", "therapist_immutable", f"reserved for {row.therapist_id}"
            )
        ended_at = row.ended_at if row is not None else None
        if new.state is d.ReservationState.ENDED:
            # "The client stops": occurrences from then on go, the past ones stay. The platform
            # may say when; otherwise it is the moment we learn of it.
            ended_at = ended_at or now
            new = replace(new, until=new.until or ended_at)
        else:
            ended_at = None
        if row is None:
            row = ReservedSlotRow()
            s.add(row)
        reserved_slot_to_row(new, row, now)
        row.ended_at = ended_at
        return Result.APPLIED, data.therapist_id

"""The platform as the test generators know it: every event they send goes through
:meth:`PlatformModel.send`, which says what syncd must answer (``applied``, ``duplicate``,
``stale`` or ``refused`` by a named rule) and, for what is applied, keeps the platform state the
oracle (tests/support/oracle.py) judges the calendars by.

The answers come from DESIGN.md §1 and §3 re-stated here for the events the generators make, not
from syncd's code: duplicates by event id, stale versions per entity, the rules of moves,
reinstatements and offers, and what accepting or rejecting an offer does to its session. Nothing
here imports syncd. Only the offer sweep (``sweep``) is syncd's own doing: the generator calls it
when it knows a sweep ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tests.support import oracle as o


@dataclass(frozen=True)
class Outcome:
    result: str  # applied | duplicate | stale | refused
    rule: str | None = None  # the rule named by a refusal

    def __str__(self) -> str:
        return f"refused [{self.rule}]" if self.rule else self.result


APPLIED, DUPLICATE, STALE = Outcome("applied"), Outcome("duplicate"), Outcome("stale")


class Refused(Exception):
    def __init__(self, rule: str) -> None:
        super().__init__(rule)
        self.rule = rule


@dataclass
class _OfferRecord:
    """What an offer's later versions are checked against (the stored one)."""

    session_id: str
    alternatives: list[tuple[datetime, datetime]]
    sent_at: datetime
    expires_at: datetime
    state: str


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


class PlatformModel:
    def __init__(self, hold: timedelta = timedelta(hours=24)) -> None:
        self.platform = o.Platform()
        self.hold = hold  # how long an offer without expires_at stays open
        self.stored_ids: set[str] = set()  # event ids answered applied or stale
        self.versions: dict[tuple[str, str], int] = {}
        self.offer_records: dict[str, _OfferRecord] = {}
        self.ended_at: dict[str, datetime] = {}  # reservation -> when it was first ended

    def send(self, event: dict[str, Any], now: datetime) -> Outcome:
        """What syncd must answer to ``event`` arriving at ``now``; applied to the model when
        it is applied."""
        if event["id"] in self.stored_ids:
            return DUPLICATE
        data = event["data"]
        kind = event["type"].split(".")[0]
        try:
            outcome: Outcome = getattr(self, f"_{kind}")(data, now)
        except Refused as exc:
            return Outcome("refused", exc.rule)
        self.stored_ids.add(event["id"])
        if outcome is APPLIED:
            self.versions[(kind, data["id"])] = data["version"]
        return outcome

    def sweep(self, now: datetime) -> list[str]:
        """syncd's expiry sweep ran at ``now``: every open offer past its expiry is expired."""
        done = []
        for oid, rec in self.offer_records.items():
            if rec.state == "pending" and rec.expires_at <= now:
                rec.state = self.platform.offers[oid].state = "expired"
                done.append(oid)
        return done

    def _stale(self, kind: str, data: dict[str, Any]) -> bool:
        return self.versions.get((kind, data["id"]), -1) >= int(data["version"])

    # -- one method per entity type ----------------------------------------------------------------

    def _therapist(self, data: dict[str, Any], _now: datetime) -> Outcome:
        if self._stale("therapist", data):
            return STALE
        privacy = data.get("privacy") or {}
        self.platform.therapists[data["id"]] = o.Therapist(
            data["id"],
            zone=data["timezone"],
            label=privacy.get("client_label", "none"),
            include_location=privacy.get("include_location", True),
        )
        return APPLIED

    def _session(self, data: dict[str, Any], now: datetime) -> Outcome:
        if data["therapist_id"] not in self.platform.therapists:
            raise Refused("unknown_therapist")
        if self._stale("session", data):
            return STALE
        new = o.Session(
            data["id"],
            data["therapist_id"],
            data["client"]["id"],
            data["client"].get("name"),
            _at(data["start"]),
            _at(data["end"]),
            data["status"],
            data["location"],
        )
        old = self.platform.sessions.get(new.id)
        if old is not None:
            if old.therapist_id != new.therapist_id:
                raise Refused("therapist_immutable")
            moved = (old.start, old.end) != (new.start, new.end)
            reinstated = old.status == "cancelled" and new.status != "cancelled"
            change = data.get("change")
            if moved or reinstated:
                if change is None:
                    raise Refused("reason_required")
                if old.start <= now and change["by"] != "team":
                    raise Refused("past_session_team_only")
        self.platform.sessions[new.id] = new
        return APPLIED

    def _reserved_slot(self, data: dict[str, Any], now: datetime) -> Outcome:
        if data["therapist_id"] not in self.platform.therapists:
            raise Refused("unknown_therapist")
        if self._stale("reserved_slot", data):
            return STALE
        old = self.platform.reservations.get(data["id"])
        if old is not None and old.therapist_id != data["therapist_id"]:
            raise Refused("therapist_immutable")
        until = _at(data["until"]) if data.get("until") else None
        if data["state"] == "ended":
            # "the client stops": from when the platform first said so, unless it says when
            ended = self.ended_at.setdefault(data["id"], now)
            until = until or ended
        else:
            self.ended_at.pop(data["id"], None)
        self.platform.reservations[data["id"]] = o.Reservation(
            data["id"],
            data["therapist_id"],
            data["client"]["id"],
            data["client"].get("name"),
            datetime.fromisoformat(data["first_start_local"]),
            data["timezone"],
            data["duration_minutes"],
            data["rrule"],
            until,
        )
        return APPLIED

    def _offer(self, data: dict[str, Any], now: datetime) -> Outcome:
        session = self.platform.sessions.get(data["session_id"])
        if session is None:
            raise Refused("unknown_session")
        if self._stale("offer", data):
            return STALE
        sent = _at(data["sent_at"])
        new = _OfferRecord(
            data["session_id"],
            [(_at(a["start"]), _at(a["end"])) for a in data["alternatives"]],
            sent,
            _at(data["expires_at"]) if data.get("expires_at") else sent + self.hold,
            data["state"],
        )
        old = self.offer_records.get(data["id"])
        if old is not None:
            self._check_transition(old, new, now)
        if new.state in ("accepted", "rejected"):
            responded = data.get("responded_at")
            if responded is None:
                raise Refused("response_time_required")
            if _at(responded) > new.expires_at:
                raise Refused("late_response")
        if old is None and new.state == "pending":
            self._check_new_pending(data["id"], new, session, now)
        self.offer_records[data["id"]] = new
        self.platform.offers[data["id"]] = o.Offer(
            data["id"], new.session_id, new.alternatives, new.expires_at, new.state
        )
        if old is None or old.state != new.state:
            # The client's answer acts on the session: it moves in place to the accepted time,
            # or is cancelled when every alternative is rejected.
            if new.state == "accepted":
                session.start, session.end = new.alternatives[data["accepted_alternative"]]
            elif new.state == "rejected":
                session.status = "cancelled"
        return APPLIED

    @staticmethod
    def _check_transition(old: _OfferRecord, new: _OfferRecord, now: datetime) -> None:
        if old.session_id != new.session_id:
            raise Refused("offer_session_immutable")
        if old.state in ("accepted", "rejected") and new.state != old.state:
            raise Refused("offer_final")
        if old.state == "expired" and new.state == "pending":
            raise Refused("offer_expired")
        if old.state != "pending":
            return
        # an open offer cannot be edited or withdrawn until it expires
        if (old.alternatives, old.expires_at, old.sent_at) != (
            new.alternatives,
            new.expires_at,
            new.sent_at,
        ):
            raise Refused("offer_locked")
        if new.state == "expired" and now < old.expires_at:
            raise Refused("offer_locked")

    def _check_new_pending(
        self, oid: str, new: _OfferRecord, session: o.Session, now: datetime
    ) -> None:
        if session.status == "cancelled":
            raise Refused("session_cancelled")
        p = self.platform
        others = [x for x in p.offers.values() if x.id != oid and x.holds_at(now)]
        if any(x.session_id == session.id for x in others):
            raise Refused("one_pending_offer")
        taken = [
            (s.start, s.end)
            for s in p.sessions.values()
            if s.therapist_id == session.therapist_id
            and s.id != session.id
            and s.status != "cancelled"
        ]
        taken += [
            alt
            for x in others
            if p.sessions[x.session_id].therapist_id == session.therapist_id
            for alt in x.alternatives
        ]
        for r in p.reservations.values():
            if r.therapist_id == session.therapist_id:
                length = timedelta(minutes=r.minutes)
                taken += [(start, start + length) for start in o.occurrences(r)]
        for i, (start, end) in enumerate(new.alternatives):
            if start <= new.sent_at:
                raise Refused("alternative_in_past")
            if any(a < end and start < b for a, b in new.alternatives[:i]):
                raise Refused("alternatives_overlap")
            if any(a < end and start < b for a, b in taken):
                raise Refused("slot_taken")

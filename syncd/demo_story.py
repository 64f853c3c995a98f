"""The sample data of ``syncd demo``: one therapist in London working Monday to Friday,
09:00-17:00, their sessions, a pending offer and a weekly reservation, then a short story of
changes (a move, a cancellation, a confirmation, offers accepted and rejected).

Every time is inside the therapist's working hours on a working day, whatever day the demo
runs: sessions are placed on "the n-th working day from today".
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

ZONE = "Europe/London"
THERAPIST = "t-demo"
USERNAME = "therapist"


def _at(day: date, hh: int, mm: int = 0) -> datetime:
    return datetime.combine(day, time(hh, mm), ZoneInfo(ZONE)).astimezone(UTC)


# The sample therapist's week: Monday to Friday, 09:00-17:00 (Europe/London).
WORKDAYS = range(5)
DAY_START, DAY_END = 9, 17


class Story:
    """Sample platform events, numbered so every delivery has a fresh event id. Every sample
    time falls inside the therapist's working hours, on working days."""

    def __init__(self, today: date) -> None:
        self.today = today
        self._n = 0

    def workday(self, n: int) -> date:
        """The ``n``-th working day after today (1: the next one)."""
        day = self.today
        while n > 0:
            day += timedelta(days=1)
            if day.weekday() in WORKDAYS:
                n -= 1
        return day

    def _event(self, type_: str, data: dict[str, Any]) -> dict[str, Any]:
        self._n += 1
        return {
            "id": f"demo-{self._n}",
            "type": type_,
            "occurred_at": datetime.now(UTC).isoformat(),
            "data": data,
        }

    def therapist(self) -> dict[str, Any]:
        hours = [
            {"weekday": d, "start": f"{DAY_START:02d}:00", "end": f"{DAY_END:02d}:00"}
            for d in WORKDAYS
        ]
        return self._event(
            "therapist.upserted",
            {
                "id": THERAPIST,
                "version": 1,
                "display_name": "Dr Sam Example",
                "timezone": ZONE,
                "working_hours": hours,
                "slot_minutes": 50,
                "buffer_minutes": 10,
            },
        )

    def session(
        self, sid: str, version: int, day: int | date, hh: int, loc: dict[str, str], **extra: Any
    ) -> dict[str, Any]:
        """Session ``sid`` on working day ``day`` (or that date) at ``hh``:00 local time."""
        start = _at(day if isinstance(day, date) else self.workday(day), hh)
        data = {
            "id": sid,
            "version": version,
            "therapist_id": THERAPIST,
            "client": {"id": extra.pop("client_id", f"c-{sid}"), "name": "Jane Doe"},
            "kind": "follow_up",
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=50)).isoformat(),
            "location": loc,
            "status": "confirmed",
        }
        data.update(extra)
        return self._event("session.upserted", data)

    def offer(
        self,
        oid: str,
        sid: str,
        version: int,
        slots: list[tuple[int, int]],
        *,
        sent_at: datetime,
        state: str = "pending",
        **extra: Any,
    ) -> dict[str, Any]:
        alternatives = []
        for day, hh in slots:
            start = _at(self.workday(day), hh)
            alternatives.append(
                {"start": start.isoformat(), "end": (start + timedelta(minutes=50)).isoformat()}
            )
        data = {
            "id": oid,
            "version": version,
            "session_id": sid,
            "alternatives": alternatives,
            "sent_at": sent_at.isoformat(),
            "state": state,
        }
        data.update(extra)
        return self._event("offer.upserted", data)

    def reservation(self, rid: str, client_id: str, first: date, hh: int) -> dict[str, Any]:
        return self._event(
            "reserved_slot.upserted",
            {
                "id": rid,
                "version": 1,
                "therapist_id": THERAPIST,
                "client": {"id": client_id, "name": "John Roe"},
                "first_start_local": datetime.combine(first, time(hh)).isoformat(),
                "timezone": ZONE,
                "duration_minutes": 50,
                "rrule": "FREQ=WEEKLY",
                "state": "active",
            },
        )


IN_PERSON = {"type": "in_person", "address": "10 Harley Street, London"}
VIDEO = {"type": "video"}
PHONE = {"type": "phone"}


def sample_events(story: Story, offer_sent: datetime) -> list[dict[str, Any]]:
    """The starting state: eight sessions, a weekly reservation, an offer pending since
    ``offer_sent``."""
    next_week = story.today + timedelta(days=7 - story.today.weekday() + 1)  # a Tuesday
    return [
        story.therapist(),
        story.session("s-1", 1, 1, 10, IN_PERSON),
        story.session("s-2", 1, 1, 14, VIDEO),
        story.session("s-3", 1, 2, 9, PHONE),
        story.session("s-4", 1, 3, 11, VIDEO, status="unconfirmed"),
        story.session("s-5", 1, 7, 10, IN_PERSON),
        story.session("s-6", 1, 4, 13, VIDEO),
        story.session("s-7", 1, 5, 9, IN_PERSON),
        story.session("s-8", 1, 5, 16, PHONE),
        story.reservation("r-1", "c-weekly", next_week, 12),
        # The reservation's second week: the client's own session, so that week is skipped.
        story.session("s-9", 1, next_week + timedelta(days=7), 12, IN_PERSON, client_id="c-weekly"),
        story.offer("o-6", "s-6", 1, [(6, 9), (6, 11), (6, 15)], sent_at=offer_sent),
    ]


def story_steps(story: Story, now: datetime) -> list[tuple[str, dict[str, Any]]]:
    """The changes played after the first mirror, each with what it shows."""
    return [
        (
            "Session s-2 moved to the next working day, 15:00 (client requested): updated in place",
            story.session(
                "s-2", 2, 2, 15, VIDEO, change={"reason": "client_requested", "by": "client"}
            ),
        ),
        (
            "Session s-3 cancelled by the client: removed from the calendar",
            story.session(
                "s-3",
                2,
                2,
                9,
                PHONE,
                status="cancelled",
                cancellation={"reason": "client_cancelled", "by": "client"},
            ),
        ),
        (
            "Session s-4 confirmed by the therapist: no longer tentative",
            story.session("s-4", 2, 3, 11, VIDEO),
        ),
        (
            "Offer for s-7 sent: two alternative times held, the original slot blocked",
            story.offer("o-7", "s-7", 1, [(8, 9), (8, 11)], sent_at=now),
        ),
        (
            "The client accepted the second alternative: s-7 moved in place, holds released",
            story.offer(
                "o-7",
                "s-7",
                2,
                [(8, 9), (8, 11)],
                sent_at=now,
                state="accepted",
                accepted_alternative=1,
                responded_at=datetime.now(UTC).isoformat(),
            ),
        ),
        (
            "Offer for s-8 rejected by the client: the session is cancelled and removed",
            story.offer(
                "o-8",
                "s-8",
                1,
                [(9, 9)],
                sent_at=now,
                state="rejected",
                responded_at=datetime.now(UTC).isoformat(),
            ),
        ),
    ]

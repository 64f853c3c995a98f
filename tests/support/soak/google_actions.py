"""The therapist's own actions in Google Calendar during the soak (tests/soak.py), as Google's UI
makes them: drag one of syncd's entries to another time (Google bumps its ``sequence``), retitle
one, delete one, move one occurrence of a reserved weekly slot, or delete one occurrence
("This event": an exception instance ``<series id>_<original start>``). syncd must put every one
back as the platform has it.

Reading the calendar back as a client does (``events.list`` without ``singleEvents``), an
occurrence that was ever changed stays a separate exception instance beside its series, also
once syncd restored it; ``split`` sets those apart and ``check_occurrences`` holds each to what
its series defines."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support import oracle
from tests.support.google_standin import GoogleStandIn
from tests.support.google_standin.fixtures import entry_uid

# In the order they are taken in turn (the least done one whose target exists goes next).
KINDS = ("drag", "title", "delete", "move_instance", "delete_instance")


def _ours(event: dict[str, Any]) -> bool:
    return entry_uid(event).startswith("syncd-") and event.get("status") != "cancelled"


def _instant(when: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(when["dateTime"]).replace("Z", "+00:00")).astimezone(UTC)


def act(
    rng: random.Random,
    standin: GoogleStandIn,
    service: Callable[[str], Any],
    calendars: dict[str, str],
    done: Counter[str],
) -> str | None:
    """One action of a therapist on one of syncd's entries in their calendar (``calendars``:
    therapist -> calendar id; ``service``: a therapist's own API client, to list a series'
    occurrences as Google's UI shows them). The least done kind goes first, in the calendar of a
    therapist who has something to do it to. Returns its kind, None when no calendar holds
    anything of syncd's yet."""
    held = {}
    for tid in rng.sample(sorted(calendars), len(calendars)):
        events = [e for e in standin.events(calendars[tid]) if _ours(e)]
        singles = [e for e in events if not e.get("recurrence") and not e.get("recurringEventId")]
        held[tid] = (singles, [e for e in events if e.get("recurrence")])
    for kind in sorted(KINDS, key=lambda k: (done[k], KINDS.index(k))):
        for tid, (singles, series) in held.items():
            calendar = calendars[tid]
            if kind in ("drag", "title", "delete") and singles:
                _single(rng, standin, calendar, rng.choice(singles), kind)
                return kind
            if kind in ("move_instance", "delete_instance") and series:
                master = rng.choice(series)
                first = _instant(master["start"])
                # the weeks the series runs, as a calendar's UI asks for the weeks it shows
                listed = (
                    service(tid)
                    .events()
                    .instances(
                        calendarId=calendar,
                        eventId=master["id"],
                        timeMin=_rfc3339(first - timedelta(days=1)),
                        timeMax=_rfc3339(first + timedelta(weeks=9)),
                    )
                    .execute()
                )
                live = [i for i in listed.get("items", []) if i.get("status") != "cancelled"]
                if live:
                    _occurrence(rng, standin, calendar, master, rng.choice(live), kind)
                    return kind
    return None


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _single(
    rng: random.Random, standin: GoogleStandIn, calendar: str, target: dict[str, Any], kind: str
) -> None:
    if kind == "drag":
        start = _instant(target["start"]) + timedelta(minutes=rng.choice((-90, 30, 120)))
        standin.user_drag(calendar, target["id"], start)
    elif kind == "title":
        standin.user_edit_title(calendar, target["id"], "Moved to the other room")
    else:
        standin.user_delete_event(calendar, target["id"])


def _occurrence(
    rng: random.Random,
    standin: GoogleStandIn,
    calendar: str,
    master: dict[str, Any],
    instance: dict[str, Any],
    kind: str,
) -> None:
    original = _instant(instance["originalStartTime"])
    if kind == "move_instance":
        later = original + timedelta(hours=rng.choice((1, 3)))
        standin.user_move_instance(calendar, master["id"], original, later)
    else:
        standin.user_delete_instance(calendar, master["id"], original)


def split(items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Events and series as listed, and apart from them the exception instances of series."""
    exceptions = [i for i in items if i.get("recurringEventId")]
    return [i for i in items if not i.get("recurringEventId")], exceptions


def check_occurrences(
    who: str, items: list[dict[str, Any]], exceptions: list[dict[str, Any]]
) -> list[str]:
    """Every exception instance of one of syncd's series that the series still shows is the
    occurrence the series defines: not cancelled, at its original time and length, with the
    series' title. Exceptions of a series no longer there, or of an occurrence the series no
    longer shows (an EXDATE syncd added since, a shorter series), are Google's leftovers."""
    problems: list[str] = []
    masters = {i["id"]: i for i in items if i.get("recurrence") and i.get("status") != "cancelled"}
    for e in exceptions:
        master = masters.get(str(e["recurringEventId"]))
        if master is None:
            if e.get("status") != "cancelled":
                problems.append(f"{who}: occurrence {e['id']} of a series that is gone")
            continue
        original = _instant(e["originalStartTime"])
        if original not in oracle.shown(oracle.seen_google(master)):
            continue
        length = _instant(master["end"]) - _instant(master["start"])
        seen = (
            e.get("status", "confirmed"),
            _instant(e["start"]) if e.get("start") else None,
            _instant(e["end"]) if e.get("end") else None,
            e.get("summary"),
        )
        want = ("confirmed", original, original + length, master.get("summary"))
        if e.get("status") == "cancelled" or seen != want:
            problems.append(
                f"{who}: occurrence {e['id']} of {entry_uid(master)} shows {seen}, "
                f"its series defines {want}"
            )
    return problems

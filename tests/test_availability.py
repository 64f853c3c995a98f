"""Public availability (syncd.availability): pure unit and property tests, no I/O."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from freezegun import freeze_time
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.availability import (
    Slot,
    available_slots,
    candidate_slots,
    changed_window,
    working_stretches,
)
from syncd.domain import Interval, Therapist, WorkingHours

LONDON = "Europe/London"
MIN = timedelta(minutes=1)
US = timedelta(microseconds=1)
MON, TUE, WED, THU, FRI, SAT, SUN = range(7)


def hm(text: str) -> time:
    return time.fromisoformat(text)


def therapist(
    *hours: tuple[int, str, str],
    zone: str = LONDON,
    slot: int = 50,
    buffer: int = 10,
    active: bool = True,
) -> Therapist:
    return Therapist(
        id="t-1",
        version=1,
        display_name="Dr Test",
        timezone=zone,
        working_hours=tuple(WorkingHours(wd, hm(a), hm(b)) for wd, a, b in hours),
        slot_minutes=slot,
        buffer_minutes=buffer,
        active=active,
    )


def local(day: date, hhmm: str, zone: str = LONDON) -> datetime:
    """An unambiguous local wall-clock time as an aware UTC instant."""
    return datetime.combine(day, hm(hhmm), ZoneInfo(zone)).astimezone(UTC)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def day_window(day: date, zone: str = LONDON) -> Interval:
    """The whole local day ``day`` in ``zone``."""
    z = ZoneInfo(zone)
    start = datetime.combine(day, time(0), z).astimezone(UTC)
    return Interval(start, datetime.combine(day + timedelta(days=1), time(0), z).astimezone(UTC))


def local_starts(slots: list[Slot], zone: str = LONDON) -> list[str]:
    z = ZoneInfo(zone)
    return [s.start.astimezone(z).strftime("%H:%M") for s in slots]


def busy(day: date, a: str, b: str, zone: str = LONDON) -> Interval:
    return Interval(local(day, a, zone), local(day, b, zone))


TUESDAY = date(2026, 12, 1)  # GMT, no clock change nearby
NINE_TO_FIVE = therapist((TUE, "09:00", "17:00"))
HOURLY = [f"{h:02d}:00" for h in range(9, 17)]


# --- the basic grid --------------------------------------------------------------------------


def test_tuesday_nine_to_five_gives_hourly_slots() -> None:
    slots = available_slots(NINE_TO_FIVE, day_window(TUESDAY), [])
    assert local_starts(slots) == HOURLY
    assert all(s.end - s.start == timedelta(minutes=50) for s in slots)
    assert all(s.start.tzinfo is UTC and s.end.tzinfo is UTC for s in slots)
    assert slots == candidate_slots(NINE_TO_FIVE, day_window(TUESDAY))
    # 16:00-16:50 is the last one: 17:00-17:50 would not fit before 17:00.
    assert slots[-1] == Slot(utc("2026-12-01T16:00"), utc("2026-12-01T16:50"))


def test_private_event_removes_exactly_what_the_buffer_implies() -> None:
    # Busy 14:00-15:00 with a 10-minute buffer blocks [13:50, 15:10). 13:00-13:50 ends exactly
    # 10 minutes before 14:00, so it stays. 14:00 overlaps the event. 15:00 starts 0 minutes
    # after 15:00, less than the 10 minutes required, so it goes.
    slots = available_slots(NINE_TO_FIVE, day_window(TUESDAY), [busy(TUESDAY, "14:00", "15:00")])
    assert local_starts(slots) == ["09:00", "10:00", "11:00", "12:00", "13:00", "16:00"]


def test_event_reaching_into_the_buffer_removes_the_slot_before() -> None:
    # 13:55 is only 5 minutes after 13:00-13:50 ends.
    slots = available_slots(NINE_TO_FIVE, day_window(TUESDAY), [busy(TUESDAY, "13:55", "15:00")])
    assert local_starts(slots) == ["09:00", "10:00", "11:00", "12:00", "16:00"]


def test_event_in_the_gap_between_slots_takes_both_neighbours_because_of_buffers() -> None:
    slots = available_slots(NINE_TO_FIVE, day_window(TUESDAY), [busy(TUESDAY, "13:50", "14:00")])
    assert "13:00" not in local_starts(slots)
    assert "14:00" not in local_starts(slots)
    no_buffer = dataclasses.replace(NINE_TO_FIVE, buffer_minutes=0)
    slots = available_slots(no_buffer, day_window(TUESDAY), [busy(TUESDAY, "13:50", "14:00")])
    # Without a buffer the grid steps by 50 minutes; 13:10-14:00 is hit, 14:00-14:50 touches.
    assert local_starts(slots) == [
        "09:00", "09:50", "10:40", "11:30", "12:20", "14:00", "14:50", "15:40",
    ]  # fmt: skip


def test_touching_is_not_overlapping() -> None:
    # An event exactly on the 10:00 slot: 09:00 ends 10 minutes before it and 11:00 starts
    # 10 minutes after it, so only the 10:00 slot goes.
    at_ten = busy(TUESDAY, "10:00", "10:50")
    assert local_starts(available_slots(NINE_TO_FIVE, day_window(TUESDAY), [at_ten])) == [
        h for h in HOURLY if h != "10:00"
    ]
    # A minute more on either side also takes a neighbour.
    longer = [busy(TUESDAY, "09:59", "10:50")]
    assert "09:00" not in local_starts(available_slots(NINE_TO_FIVE, day_window(TUESDAY), longer))
    longer = [busy(TUESDAY, "10:00", "10:51")]
    assert "11:00" not in local_starts(available_slots(NINE_TO_FIVE, day_window(TUESDAY), longer))
    # Without a buffer, an event ending when a slot starts (or starting when it ends) is fine.
    no_buffer = therapist((TUE, "09:00", "17:00"), slot=60, buffer=0)
    around = [busy(TUESDAY, "08:00", "10:00"), busy(TUESDAY, "11:00", "12:00")]
    assert local_starts(available_slots(no_buffer, day_window(TUESDAY), around)) == [
        "10:00", "12:00", "13:00", "14:00", "15:00", "16:00",
    ]  # fmt: skip


def test_busy_input_may_be_unsorted_overlapping_duplicated_and_outside_the_window() -> None:
    items = [
        busy(TUESDAY, "15:30", "15:40"),
        busy(TUESDAY, "11:00", "12:00"),
        busy(TUESDAY, "11:30", "11:45"),
        busy(TUESDAY, "11:00", "12:00"),
        Interval(utc("2026-11-30T10:00"), utc("2026-11-30T20:00")),  # the day before
        Interval(utc("2026-12-01T16:40"), utc("2026-12-03T00:00")),  # runs past the window
        busy(TUESDAY, "12:00", "12:00"),  # empty: takes no time
        busy(TUESDAY, "13:00", "12:30"),  # inverted: takes no time
    ]
    slots = available_slots(NINE_TO_FIVE, day_window(TUESDAY), items)
    # Blocked with buffers: [10:50, 12:10), [15:20, 15:50) and from 16:30 on.
    assert local_starts(slots) == ["09:00", "10:00", "13:00", "14:00"]
    assert available_slots(NINE_TO_FIVE, day_window(TUESDAY), iter(items)) == slots


def test_busy_in_another_zone_is_the_same_instant() -> None:
    new_york = ZoneInfo("America/New_York")
    event = busy(TUESDAY, "14:00", "15:00")
    shifted = Interval(event.start.astimezone(new_york), event.end.astimezone(new_york))
    window = day_window(TUESDAY)
    assert available_slots(NINE_TO_FIVE, window, [shifted]) == available_slots(
        NINE_TO_FIVE, window, [event]
    )


def test_naive_instants_are_refused() -> None:
    naive = Interval(datetime(2026, 12, 1, 9), datetime(2026, 12, 1, 17))
    with pytest.raises(ValueError, match="timezone-aware"):
        available_slots(NINE_TO_FIVE, naive, [])
    with pytest.raises(ValueError, match="timezone-aware"):
        available_slots(NINE_TO_FIVE, day_window(TUESDAY), [naive])


def test_two_stretches_per_day_and_merging() -> None:
    split = therapist((TUE, "13:00", "17:00"), (TUE, "09:00", "12:00"))
    assert local_starts(available_slots(split, day_window(TUESDAY), [])) == [
        "09:00", "10:00", "11:00", "13:00", "14:00", "15:00", "16:00",
    ]  # fmt: skip
    assert working_stretches(split, day_window(TUESDAY)) == [
        busy(TUESDAY, "09:00", "12:00"),
        busy(TUESDAY, "13:00", "17:00"),
    ]
    # Overlapping stretches merge, and the grid runs on across the join.
    overlapping = therapist(
        (TUE, "11:00", "13:00"), (TUE, "09:00", "12:00"), (TUE, "09:30", "10:00")
    )
    assert working_stretches(overlapping, day_window(TUESDAY)) == [busy(TUESDAY, "09:00", "13:00")]
    assert local_starts(available_slots(overlapping, day_window(TUESDAY), [])) == [
        "09:00", "10:00", "11:00", "12:00",
    ]  # fmt: skip
    # Touching stretches stay separate: the grid starts again at 11:30.
    touching = therapist((TUE, "09:00", "11:30"), (TUE, "11:30", "13:00"))
    assert local_starts(available_slots(touching, day_window(TUESDAY), [])) == [
        "09:00", "10:00", "11:30",
    ]  # fmt: skip
    # Empty or inverted stretches give nothing; other weekdays do not leak in.
    odd = therapist((TUE, "12:00", "12:00"), (TUE, "15:00", "14:00"), (WED, "09:00", "17:00"))
    assert available_slots(odd, day_window(TUESDAY), []) == []


def test_paused_therapist_offers_nothing() -> None:
    paused = dataclasses.replace(NINE_TO_FIVE, active=False)
    assert available_slots(paused, day_window(TUESDAY), []) == []
    # The grid itself is unaffected; only what is offered disappears.
    assert len(candidate_slots(paused, day_window(TUESDAY))) == 8


def test_no_working_hours_offers_nothing() -> None:
    assert available_slots(therapist(), day_window(TUESDAY), []) == []


def test_window_edges() -> None:
    def starts(a: str, b: str) -> list[str]:
        window = Interval(local(TUESDAY, a), local(TUESDAY, b))
        return local_starts(available_slots(NINE_TO_FIVE, window, []))

    assert starts("10:00", "12:50") == ["10:00", "11:00", "12:00"]  # touching edges are inside
    assert starts("10:01", "12:49") == ["11:00"]  # partly outside: dropped
    # The grid is anchored at the stretch start, not at the window start.
    assert starts("10:15", "17:00") == ["11:00", "12:00", "13:00", "14:00", "15:00", "16:00"]
    assert starts("12:00", "12:00") == []
    assert starts("13:00", "12:00") == []
    # working_stretches clips to the window.
    window = Interval(local(TUESDAY, "10:15"), local(TUESDAY, "20:00"))
    assert working_stretches(NINE_TO_FIVE, window) == [busy(TUESDAY, "10:15", "17:00")]


def test_a_window_over_several_weeks() -> None:
    weekdays = therapist(*((wd, "09:00", "17:00") for wd in range(5)))
    window = Interval(utc("2026-11-30T00:00"), utc("2027-01-25T00:00"))  # 8 weeks from Monday
    slots = available_slots(weekdays, window, [])
    assert len(slots) == 8 * 5 * 8
    assert slots == sorted(set(slots), key=lambda s: s.start)


def test_no_clock_reads() -> None:
    window = day_window(TUESDAY)
    expected = available_slots(NINE_TO_FIVE, window, [busy(TUESDAY, "14:00", "15:00")])
    with freeze_time("2031-06-15 03:00:00"):
        assert available_slots(NINE_TO_FIVE, window, [busy(TUESDAY, "14:00", "15:00")]) == (
            expected
        )


# --- clock changes -----------------------------------------------------------------------------

EVERY_DAY = therapist(*((wd, "09:00", "17:00") for wd in range(7)))
SPRING_2027 = date(2027, 3, 28)  # last Sunday of March 2027: 01:00 GMT -> 02:00 BST
AUTUMN_2026 = date(2026, 10, 25)  # last Sunday of October 2026: 02:00 BST -> 01:00 GMT


@pytest.mark.parametrize(
    ("day", "first_utc"),
    [
        (date(2027, 3, 26), "2027-03-26T09:00"),  # Friday before: GMT
        (SPRING_2027, "2027-03-28T08:00"),  # the Sunday of the change
        (date(2027, 3, 29), "2027-03-29T08:00"),  # Monday after: BST
        (date(2027, 3, 30), "2027-03-30T08:00"),  # Tuesday after
        (date(2026, 10, 23), "2026-10-23T08:00"),  # Friday before: BST
        (AUTUMN_2026, "2026-10-25T09:00"),  # the Sunday of the change
        (date(2026, 10, 26), "2026-10-26T09:00"),  # Monday after: GMT
        (date(2026, 10, 27), "2026-10-27T09:00"),  # Tuesday after
    ],
)
def test_london_nine_to_five_stays_nine_to_five_local(day: date, first_utc: str) -> None:
    slots = available_slots(EVERY_DAY, day_window(day), [])
    assert local_starts(slots) == HOURLY
    assert slots[0].start == utc(first_utc)
    assert slots[-1].start == utc(first_utc) + timedelta(hours=7)


def test_london_week_across_the_spring_change() -> None:
    window = Interval(utc("2027-03-22T00:00"), utc("2027-04-05T00:00"))
    slots = available_slots(EVERY_DAY, window, [])
    assert len(slots) == 14 * 8
    firsts = {s.start.date(): s.start.hour for s in slots if local_starts([s]) == ["09:00"]}
    assert firsts == {date(2027, 3, 22) + timedelta(days=i): 9 if i < 6 else 8 for i in range(14)}


def test_spring_gap_stretches() -> None:
    # Local 01:00-02:00 does not happen on 28 March 2027.
    def stretches(a: str, b: str) -> list[Interval]:
        return working_stretches(therapist((SUN, a, b)), day_window(SPRING_2027))

    assert stretches("00:00", "04:00") == [
        Interval(utc("2027-03-28T00:00"), utc("2027-03-28T03:00"))  # 3 real hours
    ]
    assert stretches("01:30", "03:00") == [  # starts at the jump: 02:00 BST
        Interval(utc("2027-03-28T01:00"), utc("2027-03-28T02:00"))
    ]
    assert stretches("00:30", "01:30") == [  # ends at the jump
        Interval(utc("2027-03-28T00:30"), utc("2027-03-28T01:00"))
    ]
    assert stretches("01:15", "01:45") == []  # entirely in the gap
    # Slots are real durations, cut in real time across the jump.
    slots = available_slots(therapist((SUN, "00:00", "04:00")), day_window(SPRING_2027), [])
    assert [s.start for s in slots] == [utc("2027-03-28T00:00"), utc("2027-03-28T01:00"), utc(
        "2027-03-28T02:00"
    )]  # fmt: skip
    assert local_starts(slots) == ["00:00", "02:00", "03:00"]


def test_autumn_fold_stretches() -> None:
    # Local 01:00-02:00 happens twice on 25 October 2026.
    def stretches(a: str, b: str) -> list[Interval]:
        return working_stretches(therapist((SUN, a, b)), day_window(AUTUMN_2026))

    assert stretches("00:00", "04:00") == [
        Interval(utc("2026-10-24T23:00"), utc("2026-10-25T04:00"))  # 5 real hours
    ]
    assert stretches("01:15", "01:45") == [  # happens twice
        Interval(utc("2026-10-25T00:15"), utc("2026-10-25T00:45")),
        Interval(utc("2026-10-25T01:15"), utc("2026-10-25T01:45")),
    ]
    assert stretches("00:30", "01:30") == [
        Interval(utc("2026-10-24T23:30"), utc("2026-10-25T00:30")),  # 00:30-01:30 BST
        Interval(utc("2026-10-25T01:00"), utc("2026-10-25T01:30")),  # 01:00-01:30 GMT again
    ]
    assert stretches("01:30", "03:00") == [
        Interval(utc("2026-10-25T00:30"), utc("2026-10-25T01:00")),  # 01:30-02:00 BST
        Interval(utc("2026-10-25T01:30"), utc("2026-10-25T03:00")),  # 01:30-03:00 GMT
    ]
    slots = available_slots(therapist((SUN, "00:00", "04:00")), day_window(AUTUMN_2026), [])
    assert len(slots) == 5
    assert slots[0].start == utc("2026-10-24T23:00")
    twice = available_slots(
        therapist((SUN, "01:15", "01:45"), slot=30, buffer=0), day_window(AUTUMN_2026), []
    )
    assert [s.start for s in twice] == [utc("2026-10-25T00:15"), utc("2026-10-25T01:15")]
    assert local_starts(twice) == ["01:15", "01:15"]


def test_kolkata_has_no_clock_changes() -> None:
    kolkata = therapist(*((wd, "09:00", "17:00") for wd in range(7)), zone="Asia/Kolkata")
    for day in (date(2027, 3, 30), date(2026, 10, 27), date(2026, 7, 7), date(2026, 12, 29)):
        slots = available_slots(kolkata, day_window(day, "Asia/Kolkata"), [])
        assert local_starts(slots, "Asia/Kolkata") == HOURLY
        assert slots[0].start == datetime.combine(day, time(3, 30), UTC)  # UTC+05:30


def test_new_york_across_its_own_changes() -> None:
    ny = "America/New_York"
    t = therapist(*((wd, "09:00", "17:00") for wd in range(7)), zone=ny)
    cases = {
        date(2027, 3, 13): 14,  # Saturday before the second Sunday of March: EST
        date(2027, 3, 14): 13,  # the change day: EDT from 02:00
        date(2027, 3, 15): 13,  # Monday after
        date(2027, 3, 30): 13,  # London's Tuesday after: New York already on EDT
        date(2026, 10, 27): 13,  # London back on GMT, New York still on EDT
        date(2026, 11, 1): 14,  # first Sunday of November: EST again
        date(2026, 11, 2): 14,
    }
    for day, first_hour in cases.items():
        slots = available_slots(t, day_window(day, ny), [])
        assert local_starts(slots, ny) == HOURLY, day
        assert slots[0].start == datetime.combine(day, time(first_hour), UTC), day
    # New York's gap is 02:00-03:00 local.
    night = therapist((SUN, "01:00", "04:00"), zone=ny)
    assert working_stretches(night, day_window(date(2027, 3, 14), ny)) == [
        Interval(utc("2027-03-14T06:00"), utc("2027-03-14T08:00"))
    ]


# --- changed_window ---------------------------------------------------------------------------


def slot_at(text: str, minutes: int = 50) -> Slot:
    return Slot(utc(text), utc(text) + timedelta(minutes=minutes))


def test_changed_window() -> None:
    a, b, c = slot_at("2026-12-01T09:00"), slot_at("2026-12-01T10:00"), slot_at("2026-12-03T16:00")
    assert changed_window([], []) is None
    assert changed_window([a, b], [a, b]) is None
    assert changed_window([a, b], [b, a, a]) is None  # compared as sets
    assert changed_window([a, b], [a]) == Interval(b.start, b.end)
    assert changed_window([a], [a, c]) == Interval(c.start, c.end)
    assert changed_window([a, b, c], [b]) == Interval(a.start, c.end)
    assert changed_window([], [c, a]) == Interval(a.start, c.end)
    # Same start, different length: both differ.
    longer = slot_at("2026-12-01T09:00", 60)
    assert changed_window([a], [longer]) == Interval(a.start, longer.end)


def test_changed_window_for_a_booking() -> None:
    window = day_window(TUESDAY)
    before = available_slots(NINE_TO_FIVE, window, [])
    after = available_slots(NINE_TO_FIVE, window, [busy(TUESDAY, "14:00", "15:00")])
    assert changed_window(before, after) == Interval(
        local(TUESDAY, "14:00"), local(TUESDAY, "15:50")
    )
    assert changed_window(after, before) == changed_window(before, after)


# --- property tests ---------------------------------------------------------------------------
#
# The oracle below is deliberately dumb. It walks UTC time in 5-minute steps and reads the
# therapist's wall clock at each step. Consecutive steps that fall in the same merged stretch of
# the same local day make up one piece of working time. Each piece is cut into slots from its
# start, and each slot is checked against every busy interval. The generated working hours lie
# on a 5-minute grid, and every offset and transition in ZONES does too, so 5-minute steps are
# exact.

STEP = timedelta(minutes=5)
CHANGES = {  # zone -> instants of its clock changes near the test dates
    "Europe/London": [utc("2026-03-29T01:00"), utc("2026-10-25T01:00"), utc("2027-03-28T01:00")],
    "America/New_York": [utc("2026-11-01T06:00"), utc("2027-03-14T07:00")],
    "Australia/Lord_Howe": [utc("2026-10-03T15:30"), utc("2027-04-03T15:00")],  # 30-minute
    "Asia/Kolkata": [],
    "UTC": [],
}
QUIET = utc("2026-07-01T00:00")
NIGHT = [0, 6, 12, 18, 24, 30, 36, 42]  # 00:00..03:30 in 5-minute steps: where changes happen


def test_the_listed_clock_changes_are_real() -> None:
    for zone, instants in CHANGES.items():
        for at in instants:
            z = ZoneInfo(zone)
            assert (at - US).astimezone(z).utcoffset() != at.astimezone(z).utcoffset()
            assert at.astimezone(z).weekday() == SUN


def _time(index: int) -> time:
    return time(index * 5 // 60, index * 5 % 60)


@st.composite
def working_hours(draw: st.DrawFn) -> WorkingHours:
    weekday = draw(st.one_of(st.just(SUN), st.integers(0, 6)))
    start = draw(st.one_of(st.sampled_from(NIGHT), st.integers(0, 286)))
    end = draw(
        st.one_of(
            st.integers(start + 1, 287),
            st.integers(start + 1, min(start + 48, 287)),
            st.sampled_from(NIGHT),  # often before the start: an empty stretch
        )
    )
    return WorkingHours(weekday, _time(start), _time(end))


@st.composite
def therapists(draw: st.DrawFn) -> Therapist:
    return Therapist(
        id="t-p",
        version=1,
        display_name="Dr Property",
        timezone=draw(st.sampled_from(sorted(CHANGES))),
        working_hours=tuple(draw(st.lists(working_hours(), max_size=8))),
        slot_minutes=draw(st.integers(15, 90)),
        buffer_minutes=draw(st.integers(0, 30)),
    )


@st.composite
def windows(draw: st.DrawFn, zone: str) -> Interval:
    """Up to 3 weeks, mostly starting shortly before one of the zone's clock changes."""
    anchor = draw(st.sampled_from([*CHANGES[zone], QUIET]))
    before = draw(st.one_of(st.integers(0, 3 * 24 * 60), st.integers(0, 10 * 24 * 60)))
    start = anchor - before * MIN
    return Interval(start, start + draw(st.integers(1, 21 * 24 * 60)) * MIN)


@st.composite
def busy_lists(draw: st.DrawFn, window: Interval) -> list[Interval]:
    span = int((window.end - window.start) / MIN)
    out = []
    for _ in range(draw(st.integers(0, 40))):
        start = window.start + timedelta(minutes=draw(st.integers(-1440, span + 1440)))
        out.append(Interval(start, start + timedelta(minutes=draw(st.integers(1, 600)))))
    return out


def merged_hours(t: Therapist) -> dict[int, list[tuple[time, time]]]:
    out: dict[int, list[tuple[time, time]]] = {}
    for wd in range(7):
        spans = sorted((w.start, w.end) for w in t.working_hours if w.weekday == wd)
        groups: list[tuple[time, time]] = []
        for s, e in spans:
            if s >= e:
                continue
            if groups and s < groups[-1][1]:
                groups[-1] = (groups[-1][0], max(e, groups[-1][1]))
            else:
                groups.append((s, e))
        out[wd] = groups
    return out


def oracle_pieces(t: Therapist, window: Interval) -> list[tuple[datetime, datetime]]:
    zone = ZoneInfo(t.timezone)
    hours = merged_hours(t)
    now = window.start.replace(second=0, microsecond=0) - timedelta(days=2)
    now -= timedelta(minutes=now.minute % 5)
    stop = window.end + timedelta(days=2)
    pieces: list[tuple[datetime, datetime]] = []
    current: tuple[date, int] | None = None
    since = now
    while now < stop:
        wall = now.astimezone(zone).replace(tzinfo=None)
        key = None
        for i, (s, e) in enumerate(hours[wall.weekday()]):
            if s <= wall.time() < e:
                key = (wall.date(), i)
        if key != current:
            if current is not None:
                pieces.append((since, now))
            current, since = key, now
        now += STEP
    return pieces


def oracle_candidates(t: Therapist, window: Interval) -> list[Slot]:
    length = timedelta(minutes=t.slot_minutes)
    step = length + timedelta(minutes=t.buffer_minutes)
    out = []
    for a, b in oracle_pieces(t, window):
        start = a
        while start + length <= b:
            if window.start <= start and start + length <= window.end:
                out.append(Slot(start, start + length))
            start += step
    return out


def clear(t: Therapist, slot: Slot, items: list[Interval]) -> bool:
    buf = timedelta(minutes=t.buffer_minutes)
    return all(slot.end + buf <= b.start or slot.start >= b.end + buf for b in items)


def in_working_hours(t: Therapist, slot: Slot) -> bool:
    """Every instant of the slot reads, on the therapist's clock, a time inside one of the raw
    working-hours entries of the day the slot starts on. The instants checked are the start,
    every 5-minute mark inside the slot, and the last microsecond."""
    zone = ZoneInfo(t.timezone)
    first = slot.start.astimezone(zone).replace(tzinfo=None)
    probes = [slot.start, slot.end - US]
    mark = slot.start.replace(second=0, microsecond=0)
    mark += timedelta(minutes=-mark.minute % 5)
    while mark < slot.end:
        probes.append(mark)
        mark += STEP
    for probe in probes:
        wall = probe.astimezone(zone).replace(tzinfo=None)
        if wall.date() != first.date():
            return False
        if not any(
            w.weekday == wall.weekday() and w.start <= wall.time() < w.end for w in t.working_hours
        ):
            return False
    return True


PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(st.data())
def test_available_slots_properties(data: st.DataObject) -> None:
    t = data.draw(therapists())
    window = data.draw(windows(t.timezone))
    items = data.draw(busy_lists(window))
    offered = available_slots(t, window, items)

    # Sorted, no duplicates, aware UTC.
    assert [s.start for s in offered] == sorted({s.start for s in offered})
    assert all(s.start.utcoffset() == timedelta(0) for s in offered)
    for slot in offered:
        # (1) clear of every busy interval, buffers included
        assert clear(t, slot, items), slot
        # (2) inside working hours on the therapist's own clock, and inside the window
        assert in_working_hours(t, slot), slot
        assert window.start <= slot.start < slot.end <= window.end
        assert slot.end - slot.start == timedelta(minutes=t.slot_minutes)
    # (3) complete: every grid slot that is clear of busy time is offered (brute force)
    expected = [s for s in oracle_candidates(t, window) if clear(t, s, items)]
    assert set(expected) <= set(offered)
    assert offered == expected


@PROPERTY
@given(st.data())
def test_candidates_and_stretches_match_the_oracle(data: st.DataObject) -> None:
    t = data.draw(therapists())
    window = data.draw(windows(t.timezone))
    assert candidate_slots(t, window) == oracle_candidates(t, window)
    clipped = [
        Interval(max(a, window.start), min(b, window.end))
        for a, b in oracle_pieces(t, window)
        if a < window.end and window.start < b
    ]
    assert working_stretches(t, window) == clipped


@PROPERTY
@given(st.data())
def test_order_and_duplicates_do_not_matter(data: st.DataObject) -> None:
    t = data.draw(therapists())
    window = data.draw(windows(t.timezone))
    items = data.draw(busy_lists(window))
    offered = available_slots(t, window, items)
    # (4) any order of busy intervals and of working hours, and repeated busy intervals
    shuffled_busy = data.draw(st.permutations(items))
    repeats = data.draw(st.lists(st.sampled_from(items), max_size=10)) if items else []
    shuffled_hours = tuple(data.draw(st.permutations(t.working_hours)))
    again = dataclasses.replace(t, working_hours=shuffled_hours + shuffled_hours[:2])
    assert available_slots(again, window, [*shuffled_busy, *repeats]) == offered
    # A smaller window gives exactly the slots of the larger one that fit inside it.
    span = int((window.end - window.start) / MIN)
    a = data.draw(st.integers(0, span))
    b = data.draw(st.integers(a, span))
    inner = Interval(window.start + a * MIN, window.start + b * MIN)
    assert available_slots(t, inner, items) == [
        s for s in offered if inner.start <= s.start and s.end <= inner.end
    ]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_changed_window_covers_exactly_the_difference(data: st.DataObject) -> None:
    base = datetime(2026, 12, 1, tzinfo=UTC)
    pool = [
        Slot(base + i * 15 * MIN, base + i * 15 * MIN + m * MIN)
        for i, m in data.draw(
            st.lists(st.tuples(st.integers(0, 500), st.integers(15, 90)), min_size=1, max_size=20)
        )
    ]
    before = data.draw(st.lists(st.sampled_from(pool), max_size=15))
    after = data.draw(st.lists(st.sampled_from(pool), max_size=15))
    window = changed_window(before, after)
    differing = set(before) ^ set(after)
    # (5) None iff the two hold the same slots; otherwise the tightest cover of the difference
    assert (window is None) == (set(before) == set(after))
    if window is not None:
        assert all(window.start <= s.start and s.end <= window.end for s in differing)
        assert window.start in {s.start for s in differing}
        assert window.end in {s.end for s in differing}
        assert changed_window(after, before) == window

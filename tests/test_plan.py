"""The planner (desired, mirror, observed → actions) and, as properties, that applying its plan
through the engine's write helpers converges on exactly the desired calendar."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import icalendar
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import sessionmaker

from connectors.base import Changes, FetchedItem, RemoteItem
from connectors.errors import AlreadyExists, NotFound, PreconditionFailed
from syncd import ical
from syncd.engine import Engine
from syncd.plan import Action, Drift, MirrorRecord, Op, plan, resource_name
from syncd.project import Entry, is_ours, name_for, uid_for

CAL = "/dav/therapist/syncd/"
STAMP = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
BASE = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def entry(
    entity_id: str,
    kind: str = "session",
    *,
    start: datetime = BASE,
    minutes: int = 50,
    summary: str = "Therapy session",
    status: str = "CONFIRMED",
    sequence: int = 1,
    timezone: str = "Europe/London",
    location: str | None = None,
) -> Entry:
    uid = uid_for(kind, entity_id)
    return Entry(
        uid=uid,
        name=name_for(uid),
        kind=kind,
        start=start,
        end=start + timedelta(minutes=minutes),
        timezone=timezone,
        summary=summary,
        status=status,
        sequence=sequence,
        location=location,
    )


def href(e: Entry) -> str:
    return CAL + e.name


def record(e: Entry, etag: str, content_hash: str | None = None) -> MirrorRecord:
    return MirrorRecord(e.uid, href(e), etag, content_hash or e.content_hash)


def listing(
    *items: tuple[str, str], full: bool = True, deleted: frozenset[str] = frozenset()
) -> Changes:
    return Changes(full=full, changed=dict(items), deleted=deleted)


A = entry("s-1")
B = entry("s-2", start=BASE + timedelta(days=1))
FOREIGN = CAL + "dentist.ics"
FOREIGN_2 = CAL + "a2b7c9e0-4d1f-4e1b-9a0a-1c2d3e4f5a6b.ics"


# -- one rule at a time ----------------------------------------------------------------------------


def test_new_entry_is_created() -> None:
    assert plan({A.uid: A}, {}, listing()) == [Action(Op.CREATE, A.uid, A)]
    assert plan({A.uid: A}, {}, listing(full=False)) == [Action(Op.CREATE, A.uid, A)]


def test_existing_resource_with_our_name_and_no_row_is_adopted() -> None:
    for observed in (listing((href(A), '"7"')), listing((href(A), '"7"'), full=False)):
        assert plan({A.uid: A}, {}, observed) == [Action(Op.UPDATE, A.uid, A, href(A), '"7"')]


def test_percent_encoded_href_is_adopted_by_name() -> None:
    odd = entry("s 1/ü")  # hashed into a safe name
    assert plan({odd.uid: odd}, {}, listing((href(odd), '"3"'))) == [
        Action(Op.UPDATE, odd.uid, odd, href(odd), '"3"')
    ]


def test_unchanged_entry_needs_nothing() -> None:
    mirror = {A.uid: record(A, '"1"')}
    assert plan({A.uid: A}, mirror, listing((href(A), '"1"'))) == []
    assert plan({A.uid: A}, mirror, listing(full=False)) == []
    assert plan({A.uid: A}, mirror, listing((href(A), '"1"'), full=False)) == []


def test_content_change_updates_with_the_stored_etag() -> None:
    moved = dataclasses.replace(A, start=A.start + timedelta(hours=2), sequence=2)
    mirror = {A.uid: record(A, '"1"')}
    expected = [Action(Op.UPDATE, A.uid, moved, href(A), '"1"')]
    assert plan({A.uid: moved}, mirror, listing((href(A), '"1"'))) == expected
    assert plan({A.uid: moved}, mirror, listing(full=False)) == expected


def test_remote_edit_is_overwritten_and_reported_as_drift() -> None:
    mirror = {A.uid: record(A, '"1"')}
    expected = [Action(Op.UPDATE, A.uid, A, href(A), '"2"', drift=Drift.EDITED)]
    assert plan({A.uid: A}, mirror, listing((href(A), '"2"'))) == expected
    assert plan({A.uid: A}, mirror, listing((href(A), '"2"'), full=False)) == expected


def test_remote_delete_is_recreated_and_reported_as_drift() -> None:
    mirror = {A.uid: record(A, '"1"')}
    expected = [Action(Op.CREATE, A.uid, A, drift=Drift.DELETED)]
    assert plan({A.uid: A}, mirror, listing((FOREIGN, '"5"'))) == expected
    gone = listing(full=False, deleted=frozenset({href(A)}))
    assert plan({A.uid: A}, mirror, gone) == expected


def test_entry_no_longer_desired_is_deleted() -> None:
    mirror = {A.uid: record(A, '"1"')}
    assert plan({}, mirror, listing((href(A), '"4"'))) == [
        Action(Op.DELETE, A.uid, href=href(A), etag='"4"')
    ]
    assert plan({}, mirror, listing(full=False)) == [
        Action(Op.DELETE, A.uid, href=href(A), etag='"1"')
    ]


def test_entry_no_longer_desired_and_already_gone_is_forgotten() -> None:
    mirror = {A.uid: record(A, '"1"')}
    expected = [Action(Op.FORGET, A.uid, href=href(A))]
    assert plan({}, mirror, listing()) == expected
    assert plan({}, mirror, listing(full=False, deleted=frozenset({href(A)}))) == expected


def test_orphan_named_like_ours_is_deleted() -> None:
    orphan = CAL + "syncd-session-old-1.ics"
    for observed in (listing((orphan, '"9"')), listing((orphan, '"9"'), full=False)):
        assert plan({}, {}, observed) == [Action(Op.DELETE, None, href=orphan, etag='"9"')]


def test_foreign_resources_are_never_touched() -> None:
    moved = dataclasses.replace(B, summary="Therapy session (unconfirmed)", status="TENTATIVE")
    foreign = {
        FOREIGN: '"f1"',
        FOREIGN_2: '"f2"',
        CAL + "SYNCD-session-s-9.ics": '"f3"',  # not our prefix: names are case-sensitive
        CAL + "syncd-session-s-9.vcf": '"f4"',
        CAL + "my-syncd-session-s-9.ics": '"f5"',
    }
    mirror = {A.uid: record(A, '"1"'), B.uid: record(B, '"2"')}
    cases = [
        listing(*foreign.items()),
        listing(*foreign.items(), full=False),
        listing(*foreign.items(), full=False, deleted=frozenset({href(A)})),
        listing(*foreign.items(), (href(B), '"2"')),
    ]
    for observed in cases:
        for desired in ({}, {B.uid: moved}, {A.uid: A, B.uid: moved}):
            actions = plan(desired, mirror, observed)
            assert actions, "each case has something to do"
            assert all(a.href not in foreign for a in actions), actions


def test_incremental_listing_that_omits_an_href_keeps_its_state() -> None:
    mirror = {A.uid: record(A, '"1"'), B.uid: record(B, '"2"')}
    # Only B is mentioned (edited remotely): A keeps its stored ETag and needs nothing.
    observed = listing((href(B), '"3"'), full=False)
    assert plan({A.uid: A, B.uid: B}, mirror, observed) == [
        Action(Op.UPDATE, B.uid, B, href(B), '"3"', drift=Drift.EDITED)
    ]
    # A full listing that omits A means A is gone.
    assert plan({A.uid: A, B.uid: B}, mirror, listing((href(B), '"2"'))) == [
        Action(Op.CREATE, A.uid, A, drift=Drift.DELETED)
    ]


def test_actions_are_ordered_by_uid_with_orphans_last() -> None:
    orphan = CAL + "syncd-session-zzz.ics"
    actions = plan({B.uid: B, A.uid: A}, {}, listing((orphan, '"1"')))
    assert [a.uid for a in actions] == [A.uid, B.uid, None]
    assert "(orphan)" in actions[-1].describe()
    assert A.uid in actions[0].describe() and "create" in actions[0].describe()


def test_resource_name_decodes_the_last_segment() -> None:
    assert resource_name("/dav/cal/syncd-session-s-1.ics") == "syncd-session-s-1.ics"
    assert resource_name("/dav/cal/a%20b.ics") == "a b.ics"
    assert resource_name("/dav/cal/sub/") == "sub"


# -- properties against an in-memory calendar ------------------------------------------------------


class FakeCalendar:
    """An IN-MEMORY MODEL of one CalDAV calendar, used only by the pure property tests in this
    file. It implements the Connector protocol with the conditional-write semantics of a CalDAV
    server as connectors/caldav.py reports them: create is PUT with If-None-Match: * (something
    there → AlreadyExists); update is PUT with If-Match (missing → NotFound, other ETag →
    PreconditionFailed); delete is DELETE with an optional If-Match (same errors); every write
    gives a fresh ETag. Real servers (Radicale, Xandikos) are covered by the connector contract
    suite, not here."""

    def __init__(self) -> None:
        self.items: dict[str, tuple[str, str]] = {}  # href -> (etag, body)
        self.deletes: list[str] = []
        self._counter = 0

    # Connector protocol

    def ensure_calendar(self) -> str:
        return "https://fake.invalid" + CAL

    def changes(self, token: str | None) -> Changes:
        return Changes(full=True, changed=self.listing(), token="tok")

    def href_for(self, name: str) -> str:
        return CAL + name

    def get(self, href: str) -> FetchedItem:
        if href not in self.items:
            raise NotFound(href)
        etag, body = self.items[href]
        return FetchedItem(href, etag, body)

    def create(self, name: str, body: str) -> RemoteItem:
        href = self.href_for(name)
        if href in self.items:
            raise AlreadyExists(href)
        return RemoteItem(href, self.put(href, body))

    def update(self, href: str, body: str, etag: str) -> RemoteItem:
        if href not in self.items:
            raise NotFound(href)
        if self.items[href][0] != etag:
            raise PreconditionFailed(href)
        return RemoteItem(href, self.put(href, body))

    def delete(self, href: str, etag: str | None) -> None:
        if href not in self.items:
            raise NotFound(href)
        if etag is not None and self.items[href][0] != etag:
            raise PreconditionFailed(href)
        self.deletes.append(href)
        del self.items[href]

    def close(self) -> None:
        pass

    # what other clients (the therapist's phone, a crashed earlier pass) do; not the protocol

    def put(self, href: str, body: str) -> str:
        self._counter += 1
        etag = f'"{self._counter}"'
        self.items[href] = (etag, body)
        return etag

    def remove(self, href: str) -> None:
        self.items.pop(href, None)

    def listing(self) -> dict[str, str]:
        return {h: etag for h, (etag, _) in self.items.items()}


@functools.cache
def render(e: Entry, stamp: datetime = STAMP) -> str:
    """ical.render is pure; the cache only keeps the property tests fast."""
    return ical.render(e, stamp)


def apply(engine: Engine, cal: FakeCalendar, mirror: dict[str, MirrorRecord], a: Action) -> None:
    """Engine._apply without the database: the same write helpers, the mirror kept in a dict the
    way repo.put_mirror / drop_mirror keep the table."""
    if a.op is Op.FORGET:
        assert a.uid is not None
        del mirror[a.uid]
        return
    if a.op is Op.DELETE:
        assert a.href is not None
        engine._delete(cal, a.href, a.etag)
        if a.uid is not None:
            del mirror[a.uid]
        return
    e = a.entry
    assert e is not None
    body = render(e)
    if a.op is Op.CREATE:
        item = engine._create(cal, e.name, body)
    else:
        assert a.href is not None and a.etag is not None
        item = engine._update(cal, a.href, body, a.etag, e.name)
    mirror[e.uid] = MirrorRecord(e.uid, item.href, item.etag, e.content_hash)


def make_engine(cal: FakeCalendar) -> Engine:
    # The write helpers never open a database session; an unbound sessionmaker proves it.
    return Engine(sessionmaker(), lambda _conn: cal, clock=lambda: STAMP)


@functools.cache
def parse_ours(body: str) -> tuple[str, str]:
    (ev,) = icalendar.Calendar.from_ical(body).walk("VEVENT")
    return str(ev["UID"]), str(ev["X-SYNCD-HASH"])


# Entities that may be desired; the odd ids exercise hashed resource names.
POOL = [
    ("session", "s-1"),
    ("session", "s-2"),
    ("session", "s 3/ü"),
    ("hold", "o-1.0"),
    ("blocked", "s-1"),
    ("session", "x" * 90),
]
HISTORY = ["absent", "synced", "edited", "retagged", "deleted", "orphan", "orphan_unlisted"]
FOREIGN_NAMES = ["dentist.ics", "gym class.ics", "SYNCD-session-s-1.ics", "3F2504E0-4F89.ics"]
ORPHAN_NAMES = ["syncd-session-zz-1.ics", "syncd-hold-h0.ics", "syncd-.ics"]


@st.composite
def entries(draw: st.DrawFn, kind: str, entity_id: str) -> Entry:
    return entry(
        entity_id,
        kind,
        start=BASE + timedelta(minutes=30 * draw(st.integers(0, 48 * 60))),
        minutes=draw(st.sampled_from([30, 50, 90])),
        summary=draw(st.sampled_from(["Therapy session", "Held for client", "Blocked"])),
        status=draw(st.sampled_from(["CONFIRMED", "TENTATIVE"])),
        sequence=draw(st.integers(0, 3)),
        timezone=draw(st.sampled_from(["Europe/London", "America/New_York", "Australia/Sydney"])),
        location=draw(st.sampled_from([None, "10 Harley St, London", "Phone call"])),
    )


def foreign_body(name: str, variant: int) -> str:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Phone//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{name}-{variant}@example.org\r\nDTSTAMP:20261101T000000Z\r\n"
        f"DTSTART:20261201T0{variant % 10}0000Z\r\nSUMMARY:private {variant}\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    )


@dataclasses.dataclass
class Scenario:
    cal: FakeCalendar
    desired: dict[str, Entry]
    mirror: dict[str, MirrorRecord]
    observed: Changes
    foreign: dict[str, tuple[str, str]]
    expect_edited: set[str]
    expect_deleted: set[str]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """Desired entries, and a calendar plus mirror table reached by a plausible history: earlier
    passes (some interrupted between a write and its status row), the therapist editing or deleting
    our events, foreign events, then a full or incremental listing of what happened since the
    last successful pass's token."""
    cal = FakeCalendar()
    desired: dict[str, Entry] = {}
    mirror: dict[str, MirrorRecord] = {}
    since_token: set[str] = set()  # hrefs written after the stored sync token
    deleted: set[str] = set()
    edited: set[str] = set()
    lost: set[str] = set()

    for kind, entity_id in POOL:
        uid = uid_for(kind, entity_id)
        where = cal.href_for(name_for(uid))
        want = draw(st.none() | entries(kind, entity_id))
        if want is not None:
            desired[uid] = want
        history = draw(st.sampled_from(HISTORY))
        if history == "orphan_unlisted" and want is None:
            # An unlisted orphan nothing asks for is invisible to an incremental pass by
            # definition (a full resync removes it); only the adopt-on-create path is of interest.
            history = "orphan"
        if history == "absent":
            continue
        old = want if want is not None and draw(st.booleans()) else draw(entries(kind, entity_id))
        etag = cal.put(where, render(old, STAMP - timedelta(days=1)))
        if history == "orphan":  # written by a pass that died before its status row
            since_token.add(where)
            continue
        if history == "orphan_unlisted":  # the same, but the listing misses it
            continue
        mirror[uid] = MirrorRecord(uid, where, etag, old.content_hash)
        if history == "synced":
            if draw(st.booleans()):  # our own write after the token: listed, same ETag
                since_token.add(where)
        elif history == "edited":  # the therapist changed our event on their phone
            body = cal.items[where][1].replace("SUMMARY:", "SUMMARY:moved by me ", 1)
            cal.put(where, body)
            since_token.add(where)
            edited.add(uid)
        elif history == "retagged":  # a pass died after its update, before the status row
            cal.put(where, render(draw(entries(kind, entity_id))))
            since_token.add(where)
            edited.add(uid)
        elif history == "deleted":  # the therapist deleted our event
            cal.remove(where)
            deleted.add(where)
            lost.add(uid)

    for i, name in enumerate(draw(st.lists(st.sampled_from(FOREIGN_NAMES), unique=True))):
        where = cal.href_for(name)
        cal.put(where, foreign_body(name, i))
        if draw(st.booleans()):
            since_token.add(where)
    for name in draw(st.lists(st.sampled_from(ORPHAN_NAMES), unique=True)):
        where = cal.href_for(name)
        cal.put(where, "BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n")  # half-written, even
        since_token.add(where)
    # Servers may report deletions of things created and deleted since the token.
    for name in draw(st.lists(st.sampled_from(["gone.ics", "syncd-session-gone.ics"]))):
        deleted.add(cal.href_for(name))

    if draw(st.booleans()):
        observed = cal.changes(None)
    else:
        observed = Changes(
            full=False,
            changed={h: cal.items[h][0] for h in since_token},
            deleted=frozenset(deleted),
            token="tok-2",
        )
    foreign = {h: v for h, v in cal.items.items() if not is_ours(resource_name(h))}
    return Scenario(
        cal,
        desired,
        mirror,
        observed,
        foreign,
        expect_edited={u for u in edited if u in desired},
        expect_deleted={u for u in lost if u in desired},
    )


def our_resources(cal: FakeCalendar) -> dict[str, tuple[str, str]]:
    return {h: v for h, v in cal.items.items() if is_ours(resource_name(h))}


def assert_converged(
    cal: FakeCalendar,
    desired: Mapping[str, Entry],
    mirror: Mapping[str, MirrorRecord],
    foreign: Mapping[str, tuple[str, str]],
) -> None:
    ours = our_resources(cal)
    # Exactly the desired set, by resource name and by UID in the body, no duplicates.
    assert {resource_name(h) for h in ours} == {e.name for e in desired.values()}
    uids = [parse_ours(body)[0] for _, body in ours.values()]
    assert len(uids) == len(set(uids)), "duplicate UID on the calendar"
    for e in desired.values():
        etag, body = cal.items[cal.href_for(e.name)]
        assert parse_ours(body) == (e.uid, e.content_hash)
        assert mirror[e.uid] == MirrorRecord(e.uid, cal.href_for(e.name), etag, e.content_hash)
    assert set(mirror) == set(desired)
    # The therapist's own events: untouched, byte for byte, same ETag.
    assert {h: v for h, v in cal.items.items() if h in foreign} == foreign
    # Nothing left to do, however the next pass observes the calendar.
    assert plan(desired, mirror, cal.changes(None)) == []
    assert plan(desired, mirror, Changes(full=False)) == []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_applying_the_plan_converges(sc: Scenario) -> None:
    cal, desired, mirror = sc.cal, sc.desired, dict(sc.mirror)
    actions = plan(desired, mirror, sc.observed)
    assert all(a.href not in sc.foreign for a in actions)
    drifts = {a.uid: a.drift for a in actions if a.drift is not None}
    assert {u for u, k in drifts.items() if k is Drift.EDITED} == sc.expect_edited
    assert {u for u, k in drifts.items() if k is Drift.DELETED} == sc.expect_deleted

    engine = make_engine(cal)
    for a in actions:
        apply(engine, cal, mirror, a)

    assert_converged(cal, desired, mirror, sc.foreign)
    # A move is an update in place: nothing desired was ever deleted to be re-created.
    assert not {cal.href_for(e.name) for e in desired.values()} & set(cal.deletes)


RACES = ["none", "edit", "delete", "create"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.data())
def test_concurrent_edits_during_the_pass_still_converge(sc: Scenario, data: st.DataObject) -> None:
    """Between observe and apply the therapist edits, deletes or creates the very resources the
    plan is about to write: the engine's fallbacks (412 → re-read, 404 → create, exists → take
    over) must still leave exactly the desired calendar, platform winning."""
    cal, desired, mirror = sc.cal, sc.desired, dict(sc.mirror)
    actions = plan(desired, mirror, sc.observed)
    for a in actions:
        if a.op is Op.FORGET:
            continue
        target = a.href or cal.href_for(a.entry.name if a.entry else "")
        race = data.draw(st.sampled_from(RACES), label=f"race on {target}")
        current = cal.items.get(target)
        if race == "edit" and current is not None:
            cal.put(target, current[1].replace("SUMMARY:", "SUMMARY:edited ", 1))
        elif race == "delete" and current is not None:
            cal.remove(target)
        elif race == "create" and current is None:
            cal.put(target, "BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n")

    engine = make_engine(cal)
    for a in actions:
        apply(engine, cal, mirror, a)
    assert_converged(cal, desired, mirror, sc.foreign)

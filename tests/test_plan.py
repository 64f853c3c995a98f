"""The planner (desired, mirror, observed → actions) and, as properties, that applying its plan
through the engine's write helpers converges on exactly the desired calendar."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import icalendar
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from connectors.base import BatchWriter, Changes, FetchedItem, RemoteItem, Write
from connectors.errors import (
    AlreadyExists,
    ConnectorError,
    NotFound,
    PreconditionFailed,
    ProtocolError,
    Transient,
)
from syncd import ical
from syncd.engine import Engine
from syncd.plan import LOCAL_OPS, Action, Drift, MirrorRecord, Op, plan, resource_name
from syncd.project import Entry, is_ours, name_for, uid_for
from syncd.retry import RetryPolicy
from syncd.store import repo
from syncd.store.tables import Base, ConnectionRow, TherapistRow
from tests.support.memory_calendar import NoCapabilities

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
    moved = A._replace(start=A.start + timedelta(hours=2), sequence=2)
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
    expected = [Action(Op.CREATE, A.uid, A, href(A), drift=Drift.DELETED)]
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
    moved = B._replace(summary="Therapy session (unconfirmed)", status="TENTATIVE")
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
        Action(Op.CREATE, A.uid, A, href(A), drift=Drift.DELETED)
    ]


def test_fingerprint_of_an_older_syncd_is_replaced_without_a_write() -> None:
    """Rows written before the fingerprint changed hold the legacy form: unchanged content gets
    a local rehash of its row, so an upgrade never rewrites every entry on every calendar."""
    mirror = {A.uid: record(A, '"1"', A.legacy_content_hash)}
    expected = [Action(Op.REHASH, A.uid, A, href(A), '"1"')]
    assert plan({A.uid: A}, mirror, listing((href(A), '"1"'))) == expected
    assert plan({A.uid: A}, mirror, listing(full=False)) == expected
    assert Op.REHASH in LOCAL_OPS


def test_changed_content_under_an_older_fingerprint_is_updated() -> None:
    moved = A._replace(start=A.start + timedelta(hours=2), sequence=2)
    mirror = {A.uid: record(A, '"1"', A.legacy_content_hash)}
    expected = [Action(Op.UPDATE, A.uid, moved, href(A), '"1"')]
    assert plan({A.uid: moved}, mirror, listing((href(A), '"1"'))) == expected
    # A current-form row is never compared with the legacy form.
    assert plan({A.uid: A}, {A.uid: record(A, '"1"', "v2:" + "0" * 40)}, listing(full=False)) == [
        Action(Op.UPDATE, A.uid, A, href(A), '"1"')
    ]


def test_drift_under_an_older_fingerprint_is_still_repaired() -> None:
    mirror = {A.uid: record(A, '"1"', A.legacy_content_hash)}
    assert plan({A.uid: A}, mirror, listing((href(A), '"2"'))) == [
        Action(Op.UPDATE, A.uid, A, href(A), '"2"', drift=Drift.EDITED)
    ]
    assert plan({A.uid: A}, mirror, listing(deleted=frozenset({href(A)}), full=False)) == [
        Action(Op.CREATE, A.uid, A, href(A), drift=Drift.DELETED)
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


class FakeCalendar(NoCapabilities):
    """An IN-MEMORY MODEL of one CalDAV calendar, used only by the property tests in this file
    (no network, no database server). The real servers (Radicale, Xandikos) are covered by the
    connector contract suite, not here.

    It implements the Connector protocol with the conditional-write semantics of a CalDAV server
    as connectors/caldav/ reports them: create is PUT with If-None-Match: * (something there →
    AlreadyExists); update is PUT with If-Match (missing → NotFound, other ETag →
    PreconditionFailed); delete is DELETE with an optional If-Match (same errors); every write
    gives a fresh counter-based ETag. Sync tokens work like RFC 6578: changes(token) reports what
    was written or deleted since; a resource created and deleted since the token is reported as
    deleted or, with ``omit_transient_deletes``, not at all (as Xandikos does)."""

    def __init__(self, *, omit_transient_deletes: bool = False) -> None:
        self.items: dict[str, tuple[str, str]] = {}  # href -> (etag, body)
        self.deletes: list[str] = []  # hrefs deleted through the protocol
        self.omit_transient_deletes = omit_transient_deletes
        # A server that omits such deletions must not claim to report them all.
        self.reports_all_deletions = not omit_transient_deletes
        # write number -> error raised *after* that protocol write was applied (a lost response)
        self.faults: dict[int, Exception] = {}
        self.writes = 0  # protocol writes applied so far
        self._journal: list[str] = []  # hrefs in the order they were written or deleted
        self._tokens: dict[str, tuple[int, frozenset[str]]] = {}
        self._counter = 0

    # Connector protocol

    def ensure_calendar(self) -> str:
        return "https://fake.invalid" + CAL

    def changes(self, token: str | None) -> Changes:
        if token is None or token not in self._tokens:
            return Changes(full=True, changed=self.listing(), token=self._token())
        position, existed = self._tokens[token]
        touched = set(self._journal[position:])
        return Changes(
            full=False,
            changed={h: self.items[h][0] for h in touched if h in self.items},
            deleted=frozenset(
                h
                for h in touched
                if h not in self.items and (h in existed or not self.omit_transient_deletes)
            ),
            token=self._token(),
        )

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
        item = RemoteItem(href, self.put(href, body))
        self._written()
        return item

    def update(self, href: str, body: str, etag: str) -> RemoteItem:
        if href not in self.items:
            raise NotFound(href)
        if self.items[href][0] != etag:
            raise PreconditionFailed(href)
        item = RemoteItem(href, self.put(href, body))
        self._written()
        return item

    def delete(self, href: str, etag: str | None) -> None:
        if href not in self.items:
            raise NotFound(href)
        if etag is not None and self.items[href][0] != etag:
            raise PreconditionFailed(href)
        self.deletes.append(href)
        self.remove(href)
        self._written()

    def close(self) -> None:
        pass

    # what other clients (the therapist's phone, a crashed earlier pass) do; not the protocol

    def put(self, href: str, body: str) -> str:
        self._counter += 1
        etag = f'"{self._counter}"'
        self.items[href] = (etag, body)
        self._journal.append(href)
        return etag

    def remove(self, href: str) -> None:
        if self.items.pop(href, None) is not None:
            self._journal.append(href)

    def listing(self) -> dict[str, str]:
        return {h: etag for h, (etag, _) in self.items.items()}

    def _token(self) -> str:
        token = f"tok-{len(self._tokens)}"
        self._tokens[token] = (len(self._journal), frozenset(self.items))
        return token

    def _written(self) -> None:
        self.writes += 1
        fault = self.faults.pop(self.writes, None)
        if fault is not None:
            raise fault


@functools.cache
def render(e: Entry, stamp: datetime = STAMP) -> str:
    """ical.render is pure; the cache only keeps the property tests fast."""
    return ical.render(e, stamp)


def apply(engine: Engine, cal: FakeCalendar, mirror: dict[str, MirrorRecord], a: Action) -> None:
    """Applier._apply without the database: the same write helpers, the mirror kept in a dict the
    way repo.put_mirror / drop_mirror keep the table."""
    if a.op is Op.FORGET:
        assert a.uid is not None
        del mirror[a.uid]
        return
    if a.op is Op.REHASH:
        assert a.entry is not None and a.href is not None and a.etag is not None
        mirror[a.entry.uid] = MirrorRecord(a.entry.uid, a.href, a.etag, a.entry.content_hash)
        return
    if a.op is Op.DELETE:
        assert a.href is not None
        engine.applier.delete(cal, a.href, a.etag)
        if a.uid is not None:
            del mirror[a.uid]
        return
    e = a.entry
    assert e is not None
    body = render(e)
    if a.op is Op.CREATE:
        item = engine.applier.create(cal, e.name, body)
    else:
        assert a.href is not None and a.etag is not None
        item = engine.applier.update(cal, a.href, body, a.etag, e.name)
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
HALF_WRITTEN = "BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n"


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


@st.composite
def desired_sets(draw: st.DrawFn) -> dict[str, Entry]:
    chosen = [draw(st.none() | entries(kind, entity_id)) for kind, entity_id in POOL]
    return {e.uid: e for e in chosen if e is not None}


def foreign_body(name: str, variant: int) -> str:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Phone//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{name}-{variant}@example.org\r\nDTSTAMP:20261101T000000Z\r\n"
        f"DTSTART:20261201T0{variant % 10}0000Z\r\nSUMMARY:private {variant}\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    )


def edited_by_therapist(body: str) -> str:
    return body.replace("SUMMARY:", "SUMMARY:moved by me ", 1)


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
    """Desired entries, and a calendar plus mirror table reached by a plausible history: the pass
    that stored the sync token, then (after it) passes interrupted between a write and its status
    row, the therapist editing or deleting our events, foreign events coming and going; then a
    full listing or the changes since that token."""
    cal = FakeCalendar(omit_transient_deletes=draw(st.booleans()))
    desired = draw(desired_sets())
    mirror: dict[str, MirrorRecord] = {}
    edited: set[str] = set()
    lost: set[str] = set()
    later: list[tuple[str, str, str, Entry]] = []  # (history, kind, id, old): after the token

    for kind, entity_id in POOL:
        uid = uid_for(kind, entity_id)
        where = cal.href_for(name_for(uid))
        want = desired.get(uid)
        history = draw(st.sampled_from(HISTORY))
        if history == "orphan_unlisted" and want is None:
            # An unlisted orphan nothing asks for is invisible to an incremental pass by
            # definition (a full resync removes it); only the adopt-on-create path is of interest.
            history = "orphan"
        if history == "absent":
            continue
        old = want if want is not None and draw(st.booleans()) else draw(entries(kind, entity_id))
        later.append((history, kind, entity_id, old))
        if history in ("orphan", "orphan_unlisted"):
            if history == "orphan_unlisted":  # written before the token, yet no status row
                cal.put(where, render(old, STAMP - timedelta(days=1)))
            continue
        etag = cal.put(where, render(old, STAMP - timedelta(days=1)))
        mirror[uid] = MirrorRecord(uid, where, etag, old.content_hash)

    foreign_names = draw(st.lists(st.sampled_from(FOREIGN_NAMES), unique=True))
    foreign_later = {
        name: draw(st.sampled_from(["before", "after", "edit", "delete"])) for name in foreign_names
    }
    for i, name in enumerate(foreign_names):
        if foreign_later[name] != "after":
            cal.put(cal.href_for(name), foreign_body(name, i))

    token = cal.changes(None).token  # the last successful pass ends here

    for history, kind, entity_id, old in later:
        uid = uid_for(kind, entity_id)
        where = cal.href_for(name_for(uid))
        if history == "synced" and draw(st.booleans()):
            # our own write of the same content after the token, status row updated
            mirror[uid] = dataclasses.replace(mirror[uid], etag=cal.put(where, render(old)))
        elif history == "edited":  # the therapist changed our event on their phone
            cal.put(where, edited_by_therapist(cal.items[where][1]))
            edited.add(uid)
        elif history == "retagged":  # a pass died after its update, before the status row
            cal.put(where, render(draw(entries(kind, entity_id))))
            edited.add(uid)
        elif history == "deleted":  # the therapist deleted our event
            cal.remove(where)
            lost.add(uid)
        elif history == "orphan":  # a pass died after its create, before the status row
            cal.put(where, render(old))
    for i, name in enumerate(foreign_names):
        where = cal.href_for(name)
        if foreign_later[name] == "after":
            cal.put(where, foreign_body(name, i))
        elif foreign_later[name] == "edit":
            cal.put(where, foreign_body(name, i + 10))
        elif foreign_later[name] == "delete":
            cal.remove(where)
    for name in draw(st.lists(st.sampled_from(ORPHAN_NAMES), unique=True)):
        cal.put(cal.href_for(name), HALF_WRITTEN)
    for name in draw(st.lists(st.sampled_from(["gone.ics", "syncd-session-gone.ics"]))):
        cal.put(cal.href_for(name), HALF_WRITTEN)  # created and deleted since the token
        cal.remove(cal.href_for(name))

    observed = cal.changes(None if draw(st.booleans()) else token)
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
    assert {h for h in cal.items if not is_ours(resource_name(h))} == set(foreign)


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
    # Nothing left to do, whether the next pass lists everything or the changes since.
    assert plan(desired, mirror, cal.changes(None)) == []
    assert plan(desired, mirror, cal.changes(sc.observed.token)) == []


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
            cal.put(target, edited_by_therapist(current[1]))
        elif race == "delete" and current is not None:
            cal.remove(target)
        elif race == "create" and current is None:
            cal.put(target, HALF_WRITTEN)

    engine = make_engine(cal)
    for a in actions:
        apply(engine, cal, mirror, a)
    assert_converged(cal, desired, mirror, sc.foreign)
    assert plan(desired, mirror, cal.changes(None)) == []
    assert plan(desired, mirror, cal.changes(sc.observed.token)) == []


# -- the real Engine.run_pass over several passes ------------------------------------------------


class ScriptedEngine(Engine):
    """The real engine; only the projection is replaced by the entries the test wants."""

    wanted: dict[str, Entry]

    def desired(self, therapist_id: str) -> dict[str, Entry] | None:
        return dict(self.wanted)


def database() -> sessionmaker[Session]:
    engine = create_engine(
        "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
    )
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine, expire_on_commit=False)
    with factory.begin() as s:
        s.add(
            TherapistRow(
                id="t-1",
                version=1,
                display_name="Dr Example",
                timezone="Europe/London",
                working_hours=[],
                slot_minutes=50,
                buffer_minutes=10,
                active=True,
                privacy={},
                updated_at=STAMP,
            )
        )
        s.add(
            ConnectionRow(
                therapist_id="t-1",
                provider="caldav",
                url="https://fake.invalid/",
                username="therapist",
                secret=b"not used",
                calendar_url=None,
                state="ok",
                sync_token=None,
                failures=0,
                created_at=STAMP,
            )
        )
    return factory


def stored_mirror(factory: sessionmaker[Session]) -> dict[str, MirrorRecord]:
    with factory() as s:
        (conn,) = repo.connections(s, "t-1")
        return repo.mirror(s, conn.id)


THERAPIST_ACTS = ["keep", "edit", "delete"]
LOST_RESPONSE = ["none", "transient", "permanent"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    first=desired_sets(),
    second=desired_sets(),
    xandikos=st.booleans(),
    data=st.data(),
)
def test_engine_passes_converge_across_therapist_edits_and_lost_responses(
    first: dict[str, Entry],
    second: dict[str, Entry],
    xandikos: bool,
    data: st.DataObject,
) -> None:
    """Pass 1 writes ``first``; the therapist then edits or deletes some of it and adds events of
    their own; pass 2 must make the calendar ``second`` from the changes since pass 1's token,
    even when some write's response is lost (the server applied it; the engine saw a transient
    error, or a permanent one that fails the pass and leaves the repair to pass 3)."""
    cal = FakeCalendar(omit_transient_deletes=xandikos)
    factory = database()
    engine = ScriptedEngine(
        factory,
        lambda _conn: cal,
        clock=lambda: STAMP,
        policy=RetryPolicy(attempts=2, base=1e-6, cap=1e-6),
    )

    engine.wanted = first
    report = engine.run_pass("t-1")
    assert not report.failed, report
    assert_converged(cal, first, stored_mirror(factory), {})

    foreign: dict[str, tuple[str, str]] = {}
    for i, name in enumerate(data.draw(st.lists(st.sampled_from(FOREIGN_NAMES), unique=True))):
        cal.put(cal.href_for(name), foreign_body(name, i))
        foreign[cal.href_for(name)] = cal.items[cal.href_for(name)]
    for e in first.values():
        act = data.draw(st.sampled_from(THERAPIST_ACTS), label=f"therapist on {e.name}")
        if act == "edit":
            cal.put(cal.href_for(e.name), edited_by_therapist(cal.items[cal.href_for(e.name)][1]))
        elif act == "delete":
            cal.remove(cal.href_for(e.name))

    lost = data.draw(st.sampled_from(LOST_RESPONSE), label="lost response")
    if lost != "none":
        nth = data.draw(st.integers(1, 6), label="on write number")
        error = Transient("connection reset") if lost == "transient" else ProtocolError("garbage")
        cal.faults[cal.writes + nth] = error

    engine.wanted = second
    report = engine.run_pass("t-1")
    if report.failed:
        assert lost == "permanent", report
        report = engine.run_pass("t-1")  # the next pass repairs it
        assert not report.failed, report
    assert_converged(cal, second, stored_mirror(factory), foreign)
    # And a pass with nothing new does nothing.
    assert engine.run_pass("t-1").connections[0].actions == []


class FakeBatchCalendar(FakeCalendar):
    """The in-memory calendar with the batch hook, which sends the engine down its batch path
    (the one Google takes); it counts the batches it is sent."""

    max_batch = 50

    def __init__(self) -> None:
        super().__init__()
        self.batches = 0

    def batch_writer(self) -> BatchWriter:
        return self

    def write_many(self, writes: Sequence[Write]) -> list[RemoteItem | ConnectorError | None]:
        self.batches += 1
        results: list[RemoteItem | ConnectorError | None] = []
        for w in writes:
            try:
                if w.op == "create":
                    assert w.name is not None and w.body is not None
                    results.append(self.create(w.name, w.body))
                elif w.op == "update":
                    assert w.href is not None and w.body is not None and w.etag is not None
                    results.append(self.update(w.href, w.body, w.etag))
                else:
                    assert w.href is not None
                    self.delete(w.href, w.etag)
                    results.append(None)
            except ConnectorError as exc:
                results.append(exc)
        return results


def legacy_rows(factory: sessionmaker[Session]) -> None:
    """What a database written by syncd 0.1 holds: the same rows with the legacy fingerprint."""
    with factory.begin() as s:
        (conn,) = repo.connections(s, "t-1")
        for uid, rec in repo.mirror(s, conn.id).items():
            legacy = UPGRADE_SET[uid].legacy_content_hash
            repo.put_mirror(s, conn.id, uid, rec.href, rec.etag, legacy, STAMP)


UPGRADE_SET = {
    e.uid: e
    for e in (
        A,
        B._replace(summary="Therapy session · J.D.", location="10 Harley St"),
        entry("r-1", "reserved")._replace(rrule="FREQ=WEEKLY", exdates=(BASE + timedelta(7),)),
    )
}


@pytest.mark.parametrize("batch", [False, True], ids=["single", "batch"])
def test_upgrade_rehashes_the_mirror_and_writes_nothing(batch: bool) -> None:
    cal = FakeBatchCalendar() if batch else FakeCalendar()
    factory = database()
    engine = ScriptedEngine(factory, lambda _conn: cal, clock=lambda: STAMP)
    engine.wanted = UPGRADE_SET
    assert not engine.run_pass("t-1").failed
    legacy_rows(factory)
    before = dict(cal.items)
    writes = cal.writes

    report = engine.run_pass("t-1").connections[0]

    assert report.error is None
    assert report.applied_ops == ["rehash"] * len(UPGRADE_SET)
    assert cal.writes == writes and cal.items == before  # not one request wrote anything
    if isinstance(cal, FakeBatchCalendar):
        assert cal.batches == 1  # the first pass's creates only
    assert {u: m.content_hash for u, m in stored_mirror(factory).items()} == {
        u: e.content_hash for u, e in UPGRADE_SET.items()
    }
    assert engine.run_pass("t-1").connections[0].actions == []

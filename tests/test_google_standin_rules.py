"""Pins the Google rules the stand-in enforces since issue 13, each with the Google page it comes
from: requests held to the discovery document (parameters, scopes), the event limits, freeBusy,
recurring exceptions, push addresses, usage limits, and the modes of undocumented behaviour."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from googleapiclient.errors import HttpError

from tests.support.google_standin import GoogleStandIn
from tests.support.google_standin.fixtures import build_service

EMAIL = "therapist@example.com"
OTHER = "practice@example.com"
START = datetime(2026, 12, 1, 10, tzinfo=UTC)
SCOPE = "https://www.googleapis.com/auth/"


def body(start: datetime = START, minutes: int = 50, **extra: Any) -> dict[str, Any]:
    return {
        "summary": "Therapy session",
        "start": {"dateTime": start.isoformat()},
        "end": {"dateTime": (start + timedelta(minutes=minutes)).isoformat()},
    } | extra


def reason(exc: HttpError) -> str:
    return str(json.loads(exc.content)["error"]["errors"][0]["reason"])


def refused(request: Any, status: int, why: str | None = None) -> HttpError:
    with pytest.raises(HttpError) as caught:
        request.execute()
    assert caught.value.resp.status == status, caught.value.content
    if why is not None:
        assert reason(caught.value) == why
    return caught.value


def access_token(g: GoogleStandIn, refresh: str) -> str:
    client_id, secret = g.client_credentials(refresh)
    answer = httpx.post(
        g.token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh,
            "client_id": client_id,
            "client_secret": secret,
        },
        timeout=5,
    )
    return str(answer.json()["access_token"])


@pytest.fixture
def g() -> Any:
    with GoogleStandIn() as stand_in:
        yield stand_in


def raw_list(g: GoogleStandIn, token: str, query: str) -> httpx.Response:
    return httpx.get(
        f"{g.root_url}calendar/v3/calendars/primary/events?{query}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )


def test_parameters_are_held_to_the_discovery_document(g: GoogleStandIn) -> None:
    """Discovery document calendar.v3 (events.list parameters) and "Handle API errors" (400):
    unknown names, values of the wrong type or under the minimum, and a repeated parameter that
    may not repeat are refused; repeatable ones may repeat."""
    token = access_token(g, g.add_account(EMAIL))
    assert raw_list(g, token, "maxResults=10&singleEvents=true").status_code == 200
    for query in (
        "colour=blue",
        "maxResults=ten",
        "maxResults=0",
        "singleEvents=yes",
        "orderBy=title",
        "timeMin=2026-12-01",
        "q=a&q=b",
    ):
        answer = raw_list(g, token, query)
        assert answer.status_code == 400, (query, answer.text)
    assert raw_list(
        g, token, "privateExtendedProperty=a%3D1&privateExtendedProperty=b%3D2"
    ).is_success


def test_sync_token_refuses_the_parameters_google_forbids_with_it(g: GoogleStandIn) -> None:
    """events.list reference, syncToken: iCalUID, orderBy, privateExtendedProperty, q,
    sharedExtendedProperty, timeMin, timeMax and updatedMin may not accompany it (400)."""
    service = build_service(g, g.add_account(EMAIL))
    token = service.events().list(calendarId="primary").execute()["nextSyncToken"]
    refused(
        service.events().list(calendarId="primary", syncToken=token, timeMin=START.isoformat()),
        400,
    )
    refused(service.events().list(calendarId="primary", syncToken=token, q="x"), 400)
    service.events().list(calendarId="primary", syncToken=token).execute()


def test_a_method_the_grant_does_not_permit_is_403(g: GoogleStandIn) -> None:
    """Discovery document (each method's scopes) and "Handle API errors": a token whose scopes
    permit nothing of the method gets 403 insufficientPermissions."""
    service = build_service(g, g.add_account(EMAIL, scopes=[SCOPE + "calendar.freebusy"]))
    refused(service.events().list(calendarId="primary"), 403, "insufficientPermissions")
    refused(service.calendarList().list(), 403, "insufficientPermissions")
    service.freebusy().query(
        body={"timeMin": START.isoformat(), "timeMax": (START + timedelta(days=1)).isoformat()}
    ).execute()


def test_app_created_reaches_only_the_calendars_the_app_created(g: GoogleStandIn) -> None:
    """Scope calendar.app.created ("Choose Google Calendar API scopes"): the app's own
    secondary calendars and their events, nothing else of the account."""
    service = build_service(g, g.add_account(EMAIL, scopes=[SCOPE + "calendar.app.created"]))
    own = service.calendars().insert(body={"summary": "syncd"}).execute()["id"]
    service.events().insert(calendarId=own, body=body()).execute()
    service.calendarList().get(calendarId=own).execute()
    mine = g.add_calendar(EMAIL, "Made in Google's UI")
    for calendar in ("primary", mine):
        refused(service.events().list(calendarId=calendar), 403, "insufficientPermissions")
        refused(service.calendars().get(calendarId=calendar), 403, "insufficientPermissions")


def test_calendar_list_gives_each_calendar_the_accounts_access_role(g: GoogleStandIn) -> None:
    """calendarList resource (https://developers.google.com/calendar/api/v3/reference/calendarList),
    ``accessRole``: the account's effective role on each listed calendar, ``owner`` of its own,
    ``writer``, ``reader`` or ``freeBusyReader`` on one shared with it; ``primary`` only on its
    own. "Handle API errors": an event written into a calendar without writer access is 403
    ``requiredAccessLevel``; freeBusy reads any of them."""
    service = build_service(g, g.add_account(EMAIL))
    g.add_account(OTHER)
    roles = {"writer": "Practice", "reader": "Team rota", "freeBusyReader": "Colleague"}
    shared = {}
    for role, summary in roles.items():
        shared[role] = g.add_calendar(OTHER, summary)
        g.share_calendar(shared[role], EMAIL, role)
    g.share_calendar(OTHER, EMAIL, "reader")  # the other account's primary calendar
    listed = {e["id"]: e for e in service.calendarList().list().execute()["items"]}
    assert {i: (e["accessRole"], e.get("primary", False)) for i, e in listed.items()} == {
        EMAIL: ("owner", True),
        shared["writer"]: ("writer", False),
        shared["reader"]: ("reader", False),
        shared["freeBusyReader"]: ("freeBusyReader", False),
        OTHER: ("reader", False),
    }
    got = service.calendarList().get(calendarId=shared["freeBusyReader"]).execute()
    assert got["accessRole"] == "freeBusyReader"
    service.events().insert(calendarId=shared["writer"], body=body()).execute()
    for role in ("reader", "freeBusyReader"):
        refused(
            service.events().insert(calendarId=shared[role], body=body()),
            403,
            "requiredAccessLevel",
        )
    service.events().list(calendarId=shared["reader"]).execute()
    refused(service.events().list(calendarId=shared["freeBusyReader"]), 403, "requiredAccessLevel")
    refused(service.calendars().delete(calendarId=shared["writer"]), 403, "requiredAccessLevel")
    answer = (
        service.freebusy()
        .query(
            body={
                "timeMin": START.isoformat(),
                "timeMax": (START + timedelta(days=1)).isoformat(),
                "items": [{"id": c} for c in shared.values()],
            }
        )
        .execute()
    )
    assert answer["calendars"][shared["writer"]]["busy"] == [
        {"start": "2026-12-01T10:00:00Z", "end": "2026-12-01T10:50:00Z"}
    ]
    assert all("errors" not in answer["calendars"][c] for c in shared.values())
    g.add_account("stranger@example.com")
    stranger = g.add_calendar("stranger@example.com", "Not shared")
    refused(service.calendarList().get(calendarId=stranger), 404, "notFound")


def test_events_owned_reaches_only_calendars_the_account_owns(g: GoogleStandIn) -> None:
    """Scope calendar.events.owned ("Choose Google Calendar API scopes": "See, create, change,
    and delete events on Google calendars you own"): a calendar shared with the account, even
    with writer access, is out of its reach; one shared as owner is within it."""
    owned = [SCOPE + "calendar.events.owned", SCOPE + "calendar.calendarlist.readonly"]
    service = build_service(g, g.add_account(EMAIL, scopes=owned))
    g.add_account(OTHER)
    practice, managed = g.add_calendar(OTHER, "Practice"), g.add_calendar(OTHER, "Managed")
    g.share_calendar(practice, EMAIL, "writer")
    g.share_calendar(managed, EMAIL, "owner")
    service.events().insert(calendarId="primary", body=body()).execute()
    service.events().insert(calendarId=managed, body=body()).execute()
    refused(
        service.events().insert(calendarId=practice, body=body()), 403, "insufficientPermissions"
    )
    refused(service.events().list(calendarId=practice), 403, "insufficientPermissions")
    assert service.calendarList().get(calendarId=practice).execute()["accessRole"] == "writer"


def test_sequence_may_not_go_down_and_a_drag_raises_it(g: GoogleStandIn) -> None:
    """Events resource, ``sequence`` (RFC 5545 SEQUENCE) and "Handle API errors"
    (400 invalidSequenceValue): a time change in Google's UI raises it; a write with a lower
    one is refused."""
    service = build_service(g, g.add_account(EMAIL))
    event = service.events().insert(calendarId="primary", body=body(sequence=2)).execute()
    dragged = g.user_drag(EMAIL, event["id"], START + timedelta(hours=1))
    assert dragged["sequence"] == 3
    assert g.user_edit_title(EMAIL, event["id"], "Lunch")["sequence"] == 3
    lower = service.events().update(
        calendarId="primary", eventId=event["id"], body=body(sequence=2)
    )
    refused(lower, 400, "invalidSequenceValue")
    service.events().update(
        calendarId="primary", eventId=event["id"], body=body(sequence=3)
    ).execute()


def test_id_and_ical_uid_at_creation() -> None:
    """Events resource, iCalUID: "only one of them should be supplied at event creation time".
    What Google does with both is undocumented: accepted (default) or refused (mode)."""
    both = body(id="abcdef12345", iCalUID="x@example.com")
    with GoogleStandIn() as g:
        service = build_service(g, g.add_account(EMAIL))
        made = service.events().insert(calendarId="primary", body=both).execute()
        assert made["iCalUID"] == "x@example.com"
        alone = service.events().insert(calendarId="primary", body=body(id="abcdef12346")).execute()
        assert alone["iCalUID"] == "abcdef12346@google.com"
    with GoogleStandIn(id_and_ical_uid="rejected") as g:
        service = build_service(g, g.add_account(EMAIL))
        refused(service.events().insert(calendarId="primary", body=both), 400)


def test_extended_property_limits(g: GoogleStandIn) -> None:
    """Extended properties guide, "Limits": keys over 44 characters are dropped and values over
    1024 truncated; at most 300 properties and 32 kB (keys and values) per event."""
    service = build_service(g, g.add_account(EMAIL))
    private = {"k" * 45: "dropped", "kept": "v" * 2000}
    made = (
        service.events()
        .insert(calendarId="primary", body=body(extendedProperties={"private": private}))
        .execute()
    )
    assert made["extendedProperties"]["private"] == {"kept": "v" * 1024}
    many = {f"p{n}": "x" for n in range(301)}
    refused(
        service.events().insert(
            calendarId="primary", body=body(extendedProperties={"private": many})
        ),
        400,
    )
    big = {f"p{n}": "é" * 1000 for n in range(20)}  # 40 kB in UTF-8
    refused(
        service.events().insert(
            calendarId="primary", body=body(extendedProperties={"private": big})
        ),
        400,
    )


def test_at_most_five_reminder_overrides(g: GoogleStandIn) -> None:
    """Events resource, reminders.overrides: "The maximum number of override reminders is 5"."""
    service = build_service(g, g.add_account(EMAIL))
    five = [{"method": "popup", "minutes": n} for n in range(5)]
    service.events().insert(
        calendarId="primary", body=body(reminders={"useDefault": False, "overrides": five})
    ).execute()
    six = [*five, {"method": "email", "minutes": 60}]
    refused(
        service.events().insert(
            calendarId="primary", body=body(reminders={"useDefault": False, "overrides": six})
        ),
        400,
    )


def test_freebusy_answers_each_calendar_on_its_own(g: GoogleStandIn) -> None:
    """freebusy.query reference: calendarExpansionMax is at most 50, and each calendar of the
    answer carries its own ``errors`` (e.g. notFound) next to the others' ``busy``."""
    service = build_service(g, g.add_account(EMAIL))
    work = g.add_calendar(EMAIL, "Work")
    g.put_event(work, body())
    broken = g.add_calendar(EMAIL, "Broken")
    g.fail_freebusy(broken, "internalError")
    ids = [work, broken, "gone@example.com"] + [f"x{n}@example.com" for n in range(48)]
    answer = (
        service.freebusy()
        .query(
            body={
                "timeMin": START.isoformat(),
                "timeMax": (START + timedelta(days=1)).isoformat(),
                "items": [{"id": i} for i in ids],
            }
        )
        .execute()["calendars"]
    )
    assert answer[work] == {
        "busy": [{"start": "2026-12-01T10:00:00Z", "end": "2026-12-01T10:50:00Z"}]
    }
    assert answer[broken]["errors"][0]["reason"] == "internalError"
    assert answer["gone@example.com"]["errors"][0]["reason"] == "notFound"
    assert answer[ids[50]]["errors"][0]["reason"] == "tooManyCalendarsRequested"


def test_exception_instances_in_list_and_instances(g: GoogleStandIn) -> None:
    """Recurring events guide ("Modifying instances") and events.list/events.instances
    reference (showDeleted): a moved occurrence is an exception ``<id>_<start>`` with
    recurringEventId and originalStartTime; a deleted one is a cancelled exception, listed by
    events.list without singleEvents even when showDeleted is false, and by events.instances
    only with showDeleted."""
    service = build_service(g, g.add_account(EMAIL))
    series = body(recurrence=["RRULE:FREQ=WEEKLY;COUNT=4"])
    series["start"]["timeZone"] = series["end"]["timeZone"] = "UTC"
    master = service.events().insert(calendarId="primary", body=series).execute()
    week = timedelta(weeks=1)
    moved = g.user_move_instance(
        EMAIL, master["id"], START + week, START + week + timedelta(hours=2)
    )
    assert moved["id"] == f"{master['id']}_20261208T100000Z"
    assert moved["recurringEventId"] == master["id"] and moved["sequence"] == 1
    g.user_delete_instance(EMAIL, master["id"], START + 2 * week)
    listed = service.events().list(calendarId="primary").execute()["items"]
    assert [e.get("status") for e in listed] == ["confirmed", "confirmed", "cancelled"]
    assert listed[2]["originalStartTime"]["dateTime"].startswith("2026-12-15T10:00")
    instances = service.events().instances(calendarId="primary", eventId=master["id"]).execute()
    starts = [e["start"]["dateTime"][:16] for e in instances["items"]]
    assert starts == ["2026-12-01T10:00", "2026-12-08T12:00", "2026-12-22T10:00"]
    with_deleted = (
        service.events()
        .instances(calendarId="primary", eventId=master["id"], showDeleted=True)
        .execute()["items"]
    )
    assert len(with_deleted) == 4


def test_watch_needs_https_and_a_short_channel_id(g: GoogleStandIn) -> None:
    """Push notifications guide: the receiver "is an HTTPS server" and the channel id is at
    most 64 characters."""
    service = build_service(g, g.add_account(EMAIL))
    watch = service.events().watch
    plain = {"id": "c1", "type": "web_hook", "address": "http://127.0.0.1:9/push"}
    refused(watch(calendarId="primary", body=plain), 400, "push.webhookUrlNotHttps")
    long_id = {"id": "c" * 65, "type": "web_hook", "address": "https://127.0.0.1:9/push"}
    refused(watch(calendarId="primary", body=long_id), 400)
    watch(calendarId="primary", body={**long_id, "id": "c" * 64}).execute()


def test_a_calendar_over_its_usage_limits_refuses_writes_for_a_long_time(g: GoogleStandIn) -> None:
    """ "Avoid Calendar use limits" and "Handle API errors" (403 quotaExceeded, usageLimits):
    writes to that calendar fail until the limit lifts; reads and other calendars go on."""
    service = build_service(g, g.add_account(EMAIL))
    other = service.calendars().insert(body={"summary": "other"}).execute()["id"]
    g.limit_calendar(EMAIL, 3600, retry_after=3600)
    error = refused(
        service.events().insert(calendarId="primary", body=body()), 403, "quotaExceeded"
    )
    assert error.resp["retry-after"] == "3600"
    service.events().list(calendarId="primary").execute()
    service.events().insert(calendarId=other, body=body()).execute()
    g.limit_calendar(EMAIL, 0)
    service.events().insert(calendarId="primary", body=body()).execute()


def test_each_batch_part_counts_toward_the_per_user_rate_limit() -> None:
    """ "Usage limits" (per minute per user) and "Send batch requests": a batch of n calls counts
    as n requests; past the limit a call answers 403 userRateLimitExceeded."""
    with GoogleStandIn(user_rate_limit=5) as g:
        service = build_service(g, g.add_account(EMAIL))
        outcomes: list[str] = []
        batch = service.new_batch_http_request()
        for n in range(6):
            batch.add(
                service.events().insert(calendarId="primary", body=body(START + timedelta(days=n))),
                callback=lambda _id, _r, exc: outcomes.append(reason(exc) if exc else "ok"),
            )
        batch.execute()
        assert outcomes == ["ok"] * 5 + ["userRateLimitExceeded"]
        refused(service.events().list(calendarId="primary"), 403, "userRateLimitExceeded")


@pytest.mark.parametrize("purged_ids", ["burnt", "free"])
def test_purge_modes(purged_ids: str) -> None:
    """Undocumented: when Google purges cancelled events. Purged, an event answers 404, a sync
    token that never saw its deletion expires (410), and its id stays burnt or is free."""
    with GoogleStandIn(purge_deleted_after=0.0, purged_ids=purged_ids) as g:
        service = build_service(g, g.add_account(EMAIL))
        token = service.events().list(calendarId="primary").execute()["nextSyncToken"]
        made = service.events().insert(calendarId="primary", body=body(id="abcde12345")).execute()
        g.user_delete_event(EMAIL, made["id"])
        refused(service.events().get(calendarId="primary", eventId=made["id"]), 404)
        refused(service.events().list(calendarId="primary", syncToken=token), 410)
        again = service.events().insert(calendarId="primary", body=body(id="abcde12345"))
        if purged_ids == "burnt":
            refused(again, 409, "duplicate")
        else:
            assert again.execute()["status"] == "confirmed"


def test_reinserting_a_deleted_id_mode() -> None:
    """Undocumented: inserting with a deleted event's id is 409 (observed) or brings it back."""
    with GoogleStandIn(reinsert_deleted="restore") as g:
        service = build_service(g, g.add_account(EMAIL))
        made = service.events().insert(calendarId="primary", body=body(id="abcde12345")).execute()
        service.events().delete(calendarId="primary", eventId=made["id"]).execute()
        back = service.events().insert(calendarId="primary", body=body(id="abcde12345")).execute()
        assert back["status"] == "confirmed" and back["id"] == made["id"]

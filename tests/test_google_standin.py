"""Pins the documented Calendar v3 behaviour the Google stand-in reproduces, through the real
google-api-python-client and google-auth (tests/support/google_standin/README.md lists the
choices)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httplib2
import pytest
from google.auth.exceptions import RefreshError
from googleapiclient.errors import HttpError

from tests.support.google_standin import GoogleStandIn, fixtures
from tests.support.google_standin.fixtures import GoogleAccount, build_service
from tests.support.tls import server_context

# The package's fixtures, made visible to this module.
google_standin = fixtures.google_standin
google_account = fixtures.google_account
google_service = fixtures.google_service

OTHER = "other@example.com"
ETAG_RE = re.compile(r'^"\d+"$')
BASE32HEX_RE = re.compile(r"^[a-v0-9]+$")


def event_body(
    start: str = "2026-12-01T10:00:00Z", end: str = "2026-12-01T10:50:00Z", **extra: Any
) -> dict[str, Any]:
    return {
        "summary": "Therapy session",
        "start": {"dateTime": start},
        "end": {"dateTime": end},
    } | extra


def error_of(exc: HttpError) -> dict[str, Any]:
    error: dict[str, Any] = json.loads(exc.content)["error"]
    return error


def reason_of(exc: HttpError) -> str:
    return str(error_of(exc)["errors"][0]["reason"])


class RaisesHttp:
    """The block must raise ``HttpError`` with ``status`` (and ``reason``, if given); the error
    and its body are kept for further checks."""

    error: dict[str, Any]
    exc: HttpError

    def __init__(self, status: int, reason: str | None = None) -> None:
        self.status, self.reason = status, reason

    def __enter__(self) -> RaisesHttp:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        assert exc_type is HttpError, f"expected HttpError {self.status}, got {exc_type}"
        assert exc.status_code == self.status, (exc.status_code, exc.content)
        if self.reason is not None:
            assert reason_of(exc) == self.reason, exc.content
        self.error = error_of(exc) if exc.content else {}
        self.exc = exc
        return True


def raises_http(status: int, reason: str | None = None) -> RaisesHttp:
    return RaisesHttp(status, reason)


# --- discovery, OAuth, counters --------------------------------------------------------------


def test_discovery_document_points_at_the_stand_in(google_standin: GoogleStandIn) -> None:
    doc = google_standin.discovery_document()
    assert google_standin.root_url.startswith("http://127.0.0.1:")
    assert doc["rootUrl"] == google_standin.root_url
    assert doc["servicePath"] == "calendar/v3/"
    assert doc["batchPath"] == "batch/calendar/v3"
    assert google_standin.token_url == google_standin.root_url + "token"
    assert google_standin.auth_url == google_standin.root_url + "o/oauth2/auth"
    assert google_standin.revoke_url == google_standin.root_url + "revoke"


def test_token_refresh_counters_and_reset(
    google_standin: GoogleStandIn, google_service: Any, google_account: GoogleAccount
) -> None:
    items = google_service.calendarList().list().execute()["items"]
    assert [(c["id"], c["primary"], c["accessRole"]) for c in items] == [
        (google_account.email, True, "owner")
    ]
    assert google_standin.calls == {"token": 1, "calendarList.list": 1}
    assert google_standin.requests == 2
    google_service.calendars().get(calendarId="primary").execute()
    assert google_standin.calls["token"] == 1  # the access token is reused
    google_standin.reset_counts()
    assert google_standin.requests == 0
    assert not google_standin.calls


def test_requests_without_valid_bearer_token_get_401(google_standin: GoogleStandIn) -> None:
    google_standin.add_account("a@example.com")
    url = google_standin.root_url + "calendar/v3/users/me/calendarList"
    resp, content = httplib2.Http().request(url)
    assert resp.status == 401
    error = json.loads(content)["error"]
    assert error["code"] == 401 and error["status"] == "UNAUTHENTICATED"
    assert error["errors"][0]["domain"] == "global"
    resp, content = httplib2.Http().request(url, headers={"Authorization": "Bearer nope"})
    assert resp.status == 401
    assert json.loads(content)["error"]["errors"][0]["reason"] == "authError"


def test_expired_access_token_is_refreshed_transparently(
    google_standin: GoogleStandIn, google_service: Any
) -> None:
    google_service.calendarList().list().execute()
    google_standin.expire_access_tokens()
    google_service.calendarList().list().execute()
    assert google_standin.calls["token"] == 2
    assert google_standin.calls["calendarList.list"] == 3  # one of them answered 401


def test_revoked_refresh_token_surfaces_as_refresh_error(
    google_standin: GoogleStandIn, google_service: Any, google_account: GoogleAccount
) -> None:
    google_service.calendarList().list().execute()
    google_standin.revoke(google_account.refresh_token)
    with pytest.raises(RefreshError, match="invalid_grant"):
        google_service.calendarList().list().execute()
    with pytest.raises(RefreshError, match="invalid_grant"):
        build_service(google_standin, google_account.refresh_token).events().list(
            calendarId="primary"
        ).execute()


def test_revoke_endpoint_revokes_refresh_token(google_standin: GoogleStandIn) -> None:
    token = google_standin.add_account("a@example.com")
    service = build_service(google_standin, token)
    service.calendarList().list().execute()
    http = httplib2.Http()
    resp, _ = http.request(
        google_standin.revoke_url + "?" + urlencode({"token": token}),
        "POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status == 200
    with pytest.raises(RefreshError, match="invalid_grant"):
        service.calendarList().list().execute()
    resp, content = http.request(google_standin.revoke_url + "?token=unknown", "POST")
    assert resp.status == 400 and json.loads(content)["error"] == "invalid_token"


def _pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _authorize(stand_in: GoogleStandIn, challenge: str, redirect_uri: str) -> dict[str, str]:
    query = {
        "client_id": "syncd-client",
        "redirect_uri": redirect_uri,
        "response_type": "code",
        "scope": "https://www.googleapis.com/auth/calendar openid email",
        "state": "st-42",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "access_type": "offline",
        "prompt": "consent",
    }
    http = httplib2.Http()
    http.follow_redirects = False
    resp, _ = http.request(stand_in.auth_url + "?" + urlencode(query))
    assert resp.status == 302
    location = resp["location"]
    assert location.startswith(redirect_uri + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def _exchange(stand_in: GoogleStandIn, **form: str) -> tuple[int, dict[str, Any]]:
    fields = {"grant_type": "authorization_code", "client_id": "syncd-client"}
    fields["client_secret"] = "s3cret"
    fields.update(form)
    resp, content = httplib2.Http().request(
        stand_in.token_url,
        "POST",
        body=urlencode(fields),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    return resp.status, json.loads(content)


def test_pkce_authorization_code_flow(google_standin: GoogleStandIn) -> None:
    google_standin.add_account("a@example.com", "syncd-client", "s3cret")
    google_standin.add_account("b@example.com", "syncd-client", "s3cret")
    redirect = "http://127.0.0.1:9/oauth/callback"
    verifier, challenge = _pkce_pair()

    google_standin.consenting_account = None
    assert _authorize(google_standin, challenge, redirect) == {
        "state": "st-42",
        "error": "access_denied",
    }

    google_standin.consenting_account = "b@example.com"
    answer = _authorize(google_standin, challenge, redirect)
    assert answer["state"] == "st-42" and answer["code"]
    status, body = _exchange(
        google_standin, code=answer["code"], redirect_uri=redirect, code_verifier="wrong" * 10
    )
    assert (status, body["error"]) == (400, "invalid_grant")
    status, body = _exchange(
        google_standin, code=answer["code"], redirect_uri=redirect + "x", code_verifier=verifier
    )
    assert (status, body["error"]) == (400, "redirect_uri_mismatch")
    status, body = _exchange(
        google_standin, code=answer["code"], redirect_uri=redirect, code_verifier=verifier
    )
    assert status == 200, body
    assert body["token_type"] == "Bearer" and body["expires_in"] > 0
    assert body["access_token"] and body["refresh_token"] and body["id_token"]
    claims = body["id_token"].split(".")[1]
    assert json.loads(base64.urlsafe_b64decode(claims + "=="))["email"] == "b@example.com"
    # A code is single use.
    status, again = _exchange(
        google_standin, code=answer["code"], redirect_uri=redirect, code_verifier=verifier
    )
    assert (status, again["error"]) == (400, "invalid_grant")

    service = build_service(google_standin, body["refresh_token"])
    primary = service.calendarList().get(calendarId="primary").execute()
    assert primary["id"] == "b@example.com"


# --- calendars -----------------------------------------------------------------------------


def test_calendars_insert_get_list_delete_and_isolation(
    google_standin: GoogleStandIn, google_service: Any, google_account: GoogleAccount
) -> None:
    created = (
        google_service.calendars()
        .insert(
            body={
                "summary": "Therapy (syncd)",
                "description": "mirror",
                "timeZone": "Europe/London",
            }
        )
        .execute()
    )
    assert created["id"].endswith("@group.calendar.google.com")
    assert created["summary"] == "Therapy (syncd)" and created["timeZone"] == "Europe/London"
    assert ETAG_RE.match(created["etag"])
    got = google_service.calendars().get(calendarId=created["id"]).execute()
    assert got["description"] == "mirror"
    entries = google_service.calendarList().list().execute()["items"]
    assert [(e["id"], e.get("primary", False)) for e in entries] == [
        (google_account.email, True),
        (created["id"], False),
    ]
    assert all(e["accessRole"] == "owner" for e in entries)

    other = build_service(google_standin, google_standin.add_account(OTHER))
    with raises_http(404, "notFound"):
        other.calendars().get(calendarId=created["id"]).execute()
    with raises_http(404, "notFound"):
        other.events().list(calendarId=google_account.email).execute()

    google_service.calendars().delete(calendarId=created["id"]).execute()
    with raises_http(404, "notFound"):
        google_service.calendars().get(calendarId=created["id"]).execute()
    with raises_http(400):
        google_service.calendars().delete(calendarId="primary").execute()


# --- events: ids, etags, conditional writes --------------------------------------------------


def test_insert_generates_google_fields_and_stores_what_is_sent(
    google_service: Any, google_account: GoogleAccount
) -> None:
    body = event_body(
        description="Follow-up",
        location="10 Harley St, London",
        colorId="5",
        status="tentative",
        transparency="opaque",
        visibility="private",
        extendedProperties={"private": {"syncd_uid": "s-1001"}, "shared": {"kind": "session"}},
        reminders={"useDefault": False, "overrides": [{"method": "popup", "minutes": 15}]},
    )
    ev = google_service.events().insert(calendarId="primary", body=body).execute()
    assert BASE32HEX_RE.match(ev["id"]) and len(ev["id"]) >= 5
    assert ETAG_RE.match(ev["etag"])
    assert ev["iCalUID"] == f"{ev['id']}@google.com"
    assert ev["sequence"] == 0 and ev["kind"] == "calendar#event"
    assert ev["created"].endswith("Z") and ev["updated"].endswith("Z")
    assert ev["organizer"]["email"] == google_account.email
    for key, value in body.items():
        assert ev[key] == value, key
    assert google_service.events().get(calendarId="primary", eventId=ev["id"]).execute() == ev


def test_client_ids_are_validated_and_unique_even_after_deletion(google_service: Any) -> None:
    events = google_service.events()
    for bad in ("abc", "UPPERCASE123", "with-dash-1", "wxyz12345"):
        with raises_http(400, "invalid"):
            events.insert(calendarId="primary", body=event_body(id=bad)).execute()
    ev = events.insert(calendarId="primary", body=event_body(id="session0001")).execute()
    assert ev["id"] == "session0001"
    with raises_http(409, "duplicate"):
        events.insert(calendarId="primary", body=event_body(id="session0001")).execute()
    events.delete(calendarId="primary", eventId="session0001").execute()
    with raises_http(409, "duplicate") as ctx:
        events.insert(calendarId="primary", body=event_body(id="session0001")).execute()
    assert ctx.error["message"] == "The requested identifier already exists."

    events.insert(calendarId="primary", body=event_body(iCalUID="s-1@syncd")).execute()
    with raises_http(409, "duplicate"):
        events.insert(calendarId="primary", body=event_body(iCalUID="s-1@syncd")).execute()


def test_deleted_events_get_cancelled_delete_twice_410_unknown_404(google_service: Any) -> None:
    events = google_service.events()
    ev = events.insert(calendarId="primary", body=event_body()).execute()
    assert events.delete(calendarId="primary", eventId=ev["id"]).execute() == ""
    got = events.get(calendarId="primary", eventId=ev["id"]).execute()
    assert got["status"] == "cancelled" and got["etag"] != ev["etag"]
    with raises_http(410, "deleted"):
        events.delete(calendarId="primary", eventId=ev["id"]).execute()
    with raises_http(404, "notFound"):
        events.delete(calendarId="primary", eventId="nosuchevent1").execute()
    with raises_http(404, "notFound"):
        events.get(calendarId="primary", eventId="nosuchevent1").execute()
    # Writing to a deleted event: 403 forbidden (observed behaviour, see README).
    with raises_http(403, "forbidden"):
        events.update(calendarId="primary", eventId=ev["id"], body=event_body()).execute()


def test_update_deleted_mode_can_be_switched() -> None:
    with GoogleStandIn(update_deleted="gone") as stand_in:
        service = build_service(stand_in, stand_in.add_account("a@example.com"))
        ev = service.events().insert(calendarId="primary", body=event_body()).execute()
        stand_in.delete_event("a@example.com", ev["id"])
        with raises_http(410, "deleted"):
            service.events().patch(
                calendarId="primary", eventId=ev["id"], body={"summary": "x"}
            ).execute()


def test_if_match_and_etags(google_service: Any) -> None:
    events = google_service.events()
    ev = events.insert(calendarId="primary", body=event_body()).execute()
    stale = ev["etag"]
    moved = events.patch(
        calendarId="primary",
        eventId=ev["id"],
        body={
            "start": {"dateTime": "2026-12-02T10:00:00Z"},
            "end": {"dateTime": "2026-12-02T10:50:00Z"},
        },
    ).execute()
    assert moved["etag"] != stale and moved["sequence"] == 1
    assert moved["summary"] == "Therapy session"  # patch keeps what it does not name

    request = events.update(calendarId="primary", eventId=ev["id"], body=event_body(summary="x"))
    request.headers["If-Match"] = stale
    with raises_http(412, "conditionNotMet"):
        request.execute()
    request = events.patch(calendarId="primary", eventId=ev["id"], body={"summary": "x"})
    request.headers["If-Match"] = stale
    with raises_http(412, "conditionNotMet"):
        request.execute()
    request = events.delete(calendarId="primary", eventId=ev["id"])
    request.headers["If-Match"] = stale
    with raises_http(412, "conditionNotMet"):
        request.execute()

    request = events.update(
        calendarId="primary", eventId=ev["id"], body=event_body(summary="Renamed")
    )
    request.headers["If-Match"] = moved["etag"]
    updated = request.execute()
    assert updated["summary"] == "Renamed" and updated["etag"] != moved["etag"]
    assert "description" not in updated  # update replaces the whole event
    request = events.get(calendarId="primary", eventId=ev["id"])
    request.headers["If-None-Match"] = updated["etag"]
    with raises_http(304):
        request.execute()


# --- listing, paging, sync tokens ------------------------------------------------------------


def _insert_many(service: Any, count: int, **extra: Any) -> list[dict[str, Any]]:
    created: list[dict[str, Any]] = []
    batch = service.new_batch_http_request(callback=lambda _id, resp, exc: created.append(resp))
    for i in range(count):
        day = 1 + i
        body = event_body(f"2026-12-{day:02d}T10:00:00Z", f"2026-12-{day:02d}T10:50:00Z", **extra)
        batch.add(service.events().insert(calendarId="primary", body=body))
    batch.execute()
    return created


def _list_all(service: Any, **params: Any) -> tuple[list[dict[str, Any]], str, int]:
    items: list[dict[str, Any]] = []
    page_token = None
    pages = 0
    while True:
        page = service.events().list(calendarId="primary", pageToken=page_token, **params).execute()
        pages += 1
        items.extend(page["items"])
        page_token = page.get("nextPageToken")
        if page_token is None:
            return items, page["nextSyncToken"], pages
        assert "nextSyncToken" not in page  # only on the last page


def test_paging_with_small_max_results(google_standin: GoogleStandIn, google_service: Any) -> None:
    created = _insert_many(google_service, 7)
    first = google_service.events().list(calendarId="primary", maxResults=3).execute()
    assert len(first["items"]) == 3 and "nextPageToken" in first and "nextSyncToken" not in first
    items, sync_token, pages = _list_all(google_service, maxResults=3)
    assert pages == 3 and sync_token
    assert [e["id"] for e in items] == [e["id"] for e in created]
    assert len(google_service.events().list(calendarId="primary").execute()["items"]) == 7
    huge = google_service.events().list(calendarId="primary", maxResults=5000).execute()
    assert len(huge["items"]) == 7


def test_sync_token_incremental_listing_with_deletions(
    google_standin: GoogleStandIn, google_service: Any, google_account: GoogleAccount
) -> None:
    events = google_service.events()
    a, b, c = _insert_many(google_service, 3, extendedProperties={"private": {"syncd": "1"}})
    _, token, _ = _list_all(google_service)

    nothing = events.list(calendarId="primary", syncToken=token).execute()
    assert nothing["items"] == [] and nothing["nextSyncToken"]

    events.patch(calendarId="primary", eventId=a["id"], body={"summary": "moved"}).execute()
    events.delete(calendarId="primary", eventId=b["id"]).execute()
    google_standin.edit_event(google_account.email, c["id"], summary="therapist edit")
    d = google_standin.put_event(google_account.email, event_body(summary="dentist"))
    items, token2, pages = _list_all(google_service, syncToken=token, maxResults=2)
    assert pages == 2
    by_id = {e["id"]: e for e in items}
    assert set(by_id) == {a["id"], b["id"], c["id"], d["id"]}
    assert by_id[a["id"]]["summary"] == "moved"
    assert by_id[c["id"]]["summary"] == "therapist edit"
    assert by_id[b["id"]]["status"] == "cancelled"
    assert set(by_id[b["id"]]) <= {"kind", "etag", "id", "status"}  # only the id is guaranteed
    assert events.list(calendarId="primary", syncToken=token2).execute()["items"] == []

    # A full listing hides deleted events unless showDeleted.
    assert b["id"] not in {e["id"] for e in _list_all(google_service)[0]}
    assert b["id"] in {e["id"] for e in _list_all(google_service, showDeleted=True)[0]}

    for params in (
        {"timeMin": "2026-01-01T00:00:00Z"},
        {"privateExtendedProperty": "syncd=1"},
        {"iCalUID": a["iCalUID"]},
        {"q": "x"},
        {"showDeleted": False},
    ):
        with raises_http(400):
            events.list(calendarId="primary", syncToken=token2, **params).execute()


def test_expired_sync_token_answers_410_full_sync_required(
    google_standin: GoogleStandIn, google_service: Any
) -> None:
    _insert_many(google_service, 1)
    _, token, _ = _list_all(google_service)
    google_standin.expire_sync_tokens()
    with raises_http(410, "fullSyncRequired") as ctx:
        google_service.events().list(calendarId="primary", syncToken=token).execute()
    assert ctx.error["errors"][0]["domain"] == "calendar"
    with raises_http(410, "fullSyncRequired"):
        google_service.events().list(calendarId="primary", syncToken="bogus").execute()


def test_list_filters_extended_properties_ical_uid_and_time_window(google_service: Any) -> None:
    events = google_service.events()
    mine = events.insert(
        calendarId="primary",
        body=event_body(
            extendedProperties={
                "private": {"syncd": "1", "kind": "session"},
                "shared": {"platform": "p"},
            }
        ),
    ).execute()
    events.insert(
        calendarId="primary",
        body=event_body(extendedProperties={"private": {"syncd": "1", "kind": "hold"}}),
    ).execute()
    late = events.insert(
        calendarId="primary", body=event_body("2027-03-01T09:00:00Z", "2027-03-01T10:00:00Z")
    ).execute()

    def ids(**params: Any) -> set[str]:
        return {e["id"] for e in events.list(calendarId="primary", **params).execute()["items"]}

    assert len(ids(privateExtendedProperty="syncd=1")) == 2
    assert ids(privateExtendedProperty=["syncd=1", "kind=session"]) == {mine["id"]}
    assert ids(sharedExtendedProperty="platform=p") == {mine["id"]}
    assert ids(sharedExtendedProperty="syncd=1") == set()
    assert ids(iCalUID=mine["iCalUID"]) == {mine["id"]}
    assert ids(timeMin="2027-01-01T00:00:00Z") == {late["id"]}
    assert late["id"] not in ids(timeMax="2027-01-01T00:00:00Z")
    with raises_http(400):
        events.list(calendarId="primary", orderBy="startTime").execute()


def test_recurring_event_expansion_keeps_local_time_across_dst(google_service: Any) -> None:
    events = google_service.events()
    series = events.insert(
        calendarId="primary",
        body={
            "summary": "Reserved slot",
            "start": {"dateTime": "2026-10-20T10:00:00", "timeZone": "Europe/London"},
            "end": {"dateTime": "2026-10-20T10:50:00", "timeZone": "Europe/London"},
            "recurrence": [
                "RRULE:FREQ=WEEKLY;COUNT=4",
                "EXDATE;TZID=Europe/London:20261103T100000",
            ],
        },
    ).execute()
    listing = events.list(
        calendarId="primary",
        singleEvents=True,
        orderBy="startTime",
        timeMin="2026-10-01T00:00:00Z",
        timeMax="2026-12-31T00:00:00Z",
    ).execute()["items"]
    assert [e["start"]["dateTime"] for e in listing] == [
        "2026-10-20T10:00:00+01:00",
        "2026-10-27T10:00:00+00:00",
        "2026-11-10T10:00:00+00:00",
    ]
    assert all(e["recurringEventId"] == series["id"] for e in listing)
    assert listing[1]["id"] == f"{series['id']}_20261027T100000Z"
    # Deleting one instance leaves a cancelled exception; the series itself stays.
    events.delete(calendarId="primary", eventId=listing[1]["id"]).execute()
    remaining = events.list(
        calendarId="primary", singleEvents=True, timeMin="2026-10-01T00:00:00Z"
    ).execute()["items"]
    assert len(remaining) == 2
    with raises_http(400):
        events.insert(
            calendarId="primary",
            body=event_body("2026-10-20T10:00:00Z", recurrence=["RRULE:FREQ=WEEKLY"]),
        ).execute()  # a recurring timed event needs start.timeZone


def test_changing_one_instance_makes_an_exception(
    google_service: Any, google_account: GoogleAccount
) -> None:
    events = google_service.events()
    series = events.insert(
        calendarId="primary",
        body={
            "summary": "Reserved slot",
            "start": {"dateTime": "2026-12-01T10:00:00", "timeZone": "Europe/London"},
            "end": {"dateTime": "2026-12-01T10:50:00", "timeZone": "Europe/London"},
            "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=3"],
        },
    ).execute()
    instances = events.instances(calendarId="primary", eventId=series["id"]).execute()["items"]
    assert len(instances) == 3
    moved = events.patch(
        calendarId="primary",
        eventId=instances[1]["id"],
        body={
            "start": {"dateTime": "2026-12-08T12:00:00"},
            "end": {"dateTime": "2026-12-08T12:50:00"},
        },
    ).execute()
    assert moved["recurringEventId"] == series["id"]
    assert moved["originalStartTime"]["dateTime"] == "2026-12-08T10:00:00+00:00"
    busy = (
        google_service.freebusy()
        .query(
            body={
                "timeMin": "2026-12-08T00:00:00Z",
                "timeMax": "2026-12-09T00:00:00Z",
                "items": [{"id": "primary"}],
            }
        )
        .execute()["calendars"]["primary"]["busy"]
    )
    assert busy == [{"start": "2026-12-08T12:00:00Z", "end": "2026-12-08T12:50:00Z"}]
    # Listed as the series plus its exception when singleEvents is false.
    listed = events.list(calendarId="primary").execute()["items"]
    assert [e["id"] for e in listed] == [series["id"], moved["id"]]


def test_concurrent_clients(google_standin: GoogleStandIn) -> None:
    tokens = [google_standin.add_account(f"t{i}@example.com") for i in range(6)]
    errors: list[BaseException] = []

    def work(token: str) -> None:
        try:
            service = build_service(google_standin, token)
            for day in range(1, 11):
                body = event_body(f"2026-12-{day:02d}T10:00:00Z", f"2026-12-{day:02d}T11:00:00Z")
                service.events().insert(calendarId="primary", body=body).execute()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    etags = [e["etag"] for i in range(6) for e in google_standin.events(f"t{i}@example.com")]
    assert len(etags) == 60 and len(set(etags)) == 60
    assert google_standin.calls["events.insert"] == 60


def test_fields_selects_a_partial_response(google_service: Any) -> None:
    _insert_many(google_service, 2)
    page = (
        google_service.events()
        .list(calendarId="primary", fields="items(id,etag),nextSyncToken")
        .execute()
    )
    assert set(page) == {"items", "nextSyncToken"}
    assert all(set(item) == {"id", "etag"} for item in page["items"])


# --- freebusy --------------------------------------------------------------------------------


def test_freebusy_busy_intervals_and_errors(
    google_standin: GoogleStandIn, google_service: Any, google_account: GoogleAccount
) -> None:
    events = google_service.events()
    body = event_body
    events.insert(
        calendarId="primary", body=body("2026-12-01T09:00:00Z", "2026-12-01T10:00:00Z")
    ).execute()
    events.insert(
        calendarId="primary",
        body=body("2026-12-01T09:30:00Z", "2026-12-01T11:00:00Z", status="tentative"),
    ).execute()
    events.insert(
        calendarId="primary",
        body=body("2026-12-01T12:00:00Z", "2026-12-01T13:00:00Z", transparency="transparent"),
    ).execute()
    gone = events.insert(
        calendarId="primary", body=body("2026-12-01T14:00:00Z", "2026-12-01T15:00:00Z")
    ).execute()
    events.delete(calendarId="primary", eventId=gone["id"]).execute()
    events.insert(
        calendarId="primary",
        body={
            "start": {"dateTime": "2026-11-30T16:00:00", "timeZone": "Europe/Berlin"},
            "end": {"dateTime": "2026-11-30T17:00:00", "timeZone": "Europe/Berlin"},
            "recurrence": ["RRULE:FREQ=DAILY;COUNT=3", "EXDATE;TZID=Europe/Berlin:20261201T160000"],
        },
    ).execute()
    other_cal = build_service(google_standin, google_standin.add_account(OTHER))
    other_cal.events().insert(calendarId="primary", body=body()).execute()

    answer = (
        google_service.freebusy()
        .query(
            body={
                "timeMin": "2026-12-01T00:00:00Z",
                "timeMax": "2026-12-03T00:00:00Z",
                "items": [
                    {"id": google_account.email},
                    {"id": "nobody@example.com"},
                    {"id": OTHER},
                ],
            }
        )
        .execute()
    )
    assert answer["kind"] == "calendar#freeBusy"
    assert answer["calendars"][google_account.email] == {
        "busy": [
            {"start": "2026-12-01T09:00:00Z", "end": "2026-12-01T11:00:00Z"},
            {"start": "2026-12-02T15:00:00Z", "end": "2026-12-02T16:00:00Z"},
        ]
    }
    for unknown in ("nobody@example.com", OTHER):
        assert answer["calendars"][unknown] == {
            "errors": [{"domain": "global", "reason": "notFound"}],
            "busy": [],
        }


# --- batch -----------------------------------------------------------------------------------


def test_batch_is_one_http_request_with_per_part_results(
    google_standin: GoogleStandIn, google_service: Any
) -> None:
    google_service.calendarList().list().execute()  # fetch the access token first
    google_standin.reset_counts()
    results: dict[str, tuple[Any, Any]] = {}

    def callback(request_id: str, response: Any, exception: Any) -> None:
        results[request_id] = (response, exception)

    batch = google_service.new_batch_http_request(callback=callback)
    for i in range(4):
        batch.add(
            google_service.events().insert(
                calendarId="primary", body=event_body(id=f"batch{i:04d}")
            ),
            request_id=f"ins-{i}",
        )
    batch.add(
        google_service.events().insert(calendarId="primary", body=event_body(id="batch0000")),
        request_id="dup",
    )
    batch.add(
        google_service.events().get(calendarId="primary", eventId="nosuchevent1"), request_id="get"
    )
    batch.execute()

    assert google_standin.requests == 1
    assert google_standin.calls == {"batch": 1, "events.insert": 5, "events.get": 1}
    assert [results[f"ins-{i}"][0]["id"] for i in range(4)] == [f"batch{i:04d}" for i in range(4)]
    assert all(results[f"ins-{i}"][1] is None for i in range(4))
    assert results["dup"][0] is None and results["dup"][1].status_code == 409
    assert reason_of(results["dup"][1]) == "duplicate"
    assert results["get"][1].status_code == 404


def test_batch_over_the_limit_is_rejected_whole(
    google_standin: GoogleStandIn, google_service: Any
) -> None:
    google_standin.max_batch = 3
    batch = google_service.new_batch_http_request()
    for _ in range(4):
        batch.add(google_service.events().insert(calendarId="primary", body=event_body()))
    with raises_http(400):
        batch.execute()
    assert google_standin.calls["events.insert"] == 0


def test_fault_in_one_batch_part(google_standin: GoogleStandIn, google_service: Any) -> None:
    google_standin.inject("rate_limit", times=1, methods=["events.insert"])
    outcomes: list[Any] = []
    batch = google_service.new_batch_http_request(
        callback=lambda _id, resp, exc: outcomes.append(exc)
    )
    for _ in range(3):
        batch.add(google_service.events().insert(calendarId="primary", body=event_body()))
    batch.execute()
    assert outcomes[0].status_code == 403 and reason_of(outcomes[0]) == "rateLimitExceeded"
    assert outcomes[1:] == [None, None]


# --- faults ----------------------------------------------------------------------------------


def test_faults_are_scoped_to_one_account(google_standin: GoogleStandIn) -> None:
    a = build_service(google_standin, google_standin.add_account("a@example.com"))
    b = build_service(google_standin, google_standin.add_account("b@example.com"))
    rule = google_standin.inject("rate_limit", times=None, account="a@example.com")
    for _ in range(3):
        with raises_http(403, "rateLimitExceeded") as ctx:
            a.events().list(calendarId="primary").execute()
        b.events().list(calendarId="primary").execute()
    assert ctx.error["errors"][0]["domain"] == "usageLimits"
    assert ctx.error["status"] == "PERMISSION_DENIED"
    assert rule.hits == 3
    google_standin.clear_faults()
    a.events().list(calendarId="primary").execute()


@pytest.mark.parametrize(
    ("kind", "status", "reason"),
    [
        ("user_rate_limit", 403, "userRateLimitExceeded"),
        ("quota", 403, "quotaExceeded"),
        ("too_many", 429, "rateLimitExceeded"),
        ("server_error", 500, "backendError"),
        ("unavailable", 503, "backendError"),
    ],
)
def test_fault_kinds(
    google_standin: GoogleStandIn, google_service: Any, kind: str, status: int, reason: str
) -> None:
    google_standin.inject(kind, retry_after=7 if kind == "too_many" else None)
    with raises_http(status, reason) as ctx:
        google_service.events().list(calendarId="primary").execute()
    if kind == "too_many":
        assert ctx.exc.resp["retry-after"] == "7"
    google_service.events().list(calendarId="primary").execute()  # one shot only


def test_calendar_scoped_and_slow_faults(
    google_standin: GoogleStandIn, google_service: Any, google_account: GoogleAccount
) -> None:
    secondary = google_service.calendars().insert(body={"summary": "syncd"}).execute()["id"]
    google_standin.inject("server_error", calendar_id=secondary)
    google_service.events().list(calendarId="primary").execute()
    with raises_http(500):
        google_service.events().list(calendarId=secondary).execute()
    google_standin.inject("slow", delay=0.3, methods=["freebusy.query"])
    started = time.monotonic()
    google_service.freebusy().query(
        body={"timeMin": "2026-12-01T00:00:00Z", "timeMax": "2026-12-02T00:00:00Z", "items": []}
    ).execute()
    assert time.monotonic() - started >= 0.3


# --- push notifications ----------------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def wait(self, count: int, timeout: float = 60.0) -> list[tuple[dict[str, str], bytes]]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.received) >= count, timeout), self.received
            return list(self.received)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    box: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            rec = box[0]
            with rec.cond:
                rec.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                rec.cond.notify_all()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # Google delivers only to HTTPS receivers ("Push notifications" guide).
    server.socket = server_context().wrap_socket(server.socket, server_side=True)
    box.append(Receiver(f"https://127.0.0.1:{server.server_address[1]}/google/push"))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield box[0]
    server.shutdown()
    server.server_close()


def test_watch_sends_sync_then_exists_notifications_and_stop(
    google_standin: GoogleStandIn,
    google_service: Any,
    google_account: GoogleAccount,
    receiver: Receiver,
) -> None:
    channel = (
        google_service.events()
        .watch(
            calendarId="primary",
            body={
                "id": "chan-1",
                "type": "web_hook",
                "address": receiver.url,
                "token": "target=syncd",
                "params": {"ttl": "3600"},
            },
        )
        .execute()
    )
    assert channel["kind"] == "api#channel" and channel["id"] == "chan-1"
    assert channel["token"] == "target=syncd" and channel["resourceId"]
    assert channel["resourceUri"].startswith(google_standin.root_url + "calendar/v3/calendars/")
    assert 3500_000 < int(channel["expiration"]) - time.time() * 1000 <= 3600_000

    headers, body = receiver.wait(1)[0]
    assert body == b""
    assert headers["x-goog-resource-state"] == "sync"
    assert headers["x-goog-message-number"] == "1"
    assert headers["x-goog-channel-id"] == "chan-1"
    assert headers["x-goog-channel-token"] == "target=syncd"
    assert headers["x-goog-resource-id"] == channel["resourceId"]
    assert headers["x-goog-resource-uri"] == channel["resourceUri"]
    assert headers["x-goog-channel-expiration"].endswith(" GMT")

    ev = google_service.events().insert(calendarId="primary", body=event_body()).execute()
    google_standin.edit_event(google_account.email, ev["id"], summary="therapist edit")
    received = receiver.wait(3)
    states = [h["x-goog-resource-state"] for h, _ in received]
    numbers = [int(h["x-goog-message-number"]) for h, _ in received]
    assert states == ["sync", "exists", "exists"]
    assert numbers == sorted(numbers) and len(set(numbers)) == 3
    sent = google_standin.wait_for_notifications(3, timeout=60)
    assert [n.message_number for n in sent] == numbers
    assert all(n.status == 200 for n in sent)

    with raises_http(400, "channelIdNotUnique"):
        google_service.events().watch(
            calendarId="primary", body={"id": "chan-1", "type": "web_hook", "address": receiver.url}
        ).execute()
    google_service.channels().stop(
        body={"id": "chan-1", "resourceId": channel["resourceId"]}
    ).execute()
    assert google_standin.active_channels == []
    google_service.events().insert(calendarId="primary", body=event_body()).execute()
    time.sleep(0.2)
    assert len(receiver.received) == 3
    with raises_http(404, "notFound"):
        google_service.channels().stop(
            body={"id": "chan-1", "resourceId": channel["resourceId"]}
        ).execute()


def test_deleting_a_watched_calendar_sends_not_exists(
    google_standin: GoogleStandIn, google_service: Any, receiver: Receiver
) -> None:
    calendar = google_service.calendars().insert(body={"summary": "syncd"}).execute()["id"]
    google_service.events().watch(
        calendarId=calendar, body={"id": "c2", "type": "webhook", "address": receiver.url}
    ).execute()
    google_service.calendars().delete(calendarId=calendar).execute()
    states = [h["x-goog-resource-state"] for h, _ in receiver.wait(2)]
    assert states == ["sync", "not_exists"]
    assert "x-goog-channel-token" not in receiver.received[0][0]


def test_unreachable_push_receiver_does_not_block_the_api(
    google_standin: GoogleStandIn, google_service: Any
) -> None:
    """A receiver that takes the connection and never answers holds the first notification
    for a minute; the API answers five inserts meanwhile. Then it goes away altogether."""
    google_standin.notify_timeout = 60
    with socket.socket() as stuck:
        stuck.bind(("127.0.0.1", 0))
        stuck.listen(8)  # the kernel accepts; nobody ever reads or answers
        address = f"https://127.0.0.1:{stuck.getsockname()[1]}/"
        google_service.events().watch(
            calendarId="primary", body={"id": "chan-dead", "type": "web_hook", "address": address}
        ).execute()
        for _ in range(5):
            google_service.events().insert(calendarId="primary", body=event_body()).execute()
        assert google_standin.notifications_sent == []  # the first is still waiting
    # closed: the waiting notification is reset, the next ones are refused
    sent = google_standin.wait_for_notifications(6, timeout=120)
    assert all(n.status is None and n.error for n in sent)
    assert [n.resource_state for n in sent] == ["sync"] + ["exists"] * 5


class FreePort:
    """A free loopback port (bound while in the ``with`` block)."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


# --- direct state controls -------------------------------------------------------------------


def test_put_edit_delete_event_as_the_therapist(
    google_standin: GoogleStandIn, google_service: Any, google_account: GoogleAccount
) -> None:
    email = google_account.email
    dentist = google_standin.put_event(email, event_body(summary="Dentist"))
    assert google_standin.calls == {}  # not an API call
    seen = google_service.events().get(calendarId="primary", eventId=dentist["id"]).execute()
    assert seen == dentist
    edited = google_standin.edit_event(
        email,
        dentist["id"],
        start={"dateTime": "2026-12-01T11:00:00Z"},
        end={"dateTime": "2026-12-01T12:00:00Z"},
        description=None,
    )
    assert edited["etag"] != dentist["etag"] and edited["sequence"] == 1
    google_standin.delete_event(email, dentist["id"])
    assert google_standin.events(email) == []
    assert [e["status"] for e in google_standin.events(email, include_deleted=True)] == [
        "cancelled"
    ]

"""GoogleStandIn: a local HTTP stand-in of the Google Calendar v3 API and Google's OAuth
endpoints, for driving the real google-api-python-client in tests and benchmarks.

See ``README.md`` in this package for the behaviours reproduced and the choices made. This
module holds the public face (construction, lifecycle, addresses, accounts, inspection); the
parts it is composed of are listed there too.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from types import TracebackType
from typing import Any

from ._api import CalendarApi
from ._faults import USER_RATE_LIMIT, USER_RATE_WINDOW
from ._http import HttpDispatch, _Server
from ._model import Account, Calendar, Client, Notification
from ._oauth import CALENDAR_SCOPE
from ._push import PushDelivery
from ._rules import ROLES
from ._therapist import TherapistUi
from ._util import JSON, deep_copy

UPDATE_DELETED_MODES = ("forbidden", "gone", "not_found", "restore")
REINSERT_DELETED_MODES = ("duplicate", "restore")
PURGED_ID_MODES = ("burnt", "free")
ID_AND_ICAL_UID_MODES = ("accepted", "rejected")

# Where Google's behaviour is undocumented, each plausible one as a named set of modes; syncd's
# Google tests run against every profile (tests/support/google_standin/README.md, "Modes").
MODE_PROFILES: dict[str, dict[str, Any]] = {
    "observed": {},
    "update-gone": {"update_deleted": "gone"},
    "update-404": {"update_deleted": "not_found"},
    "undelete": {"update_deleted": "restore", "reinsert_deleted": "restore"},
    "purge-burnt": {"purge_deleted_after": 0.0, "purged_ids": "burnt"},
    "purge-free": {"purge_deleted_after": 0.0, "purged_ids": "free"},
    "one-id-only": {"id_and_ical_uid": "rejected"},
}


def packaged_discovery_document() -> JSON:
    """The calendar.v3 discovery document packaged in google-api-python-client."""
    docs = resources.files("googleapiclient.discovery_cache") / "documents"
    doc: JSON = json.loads((docs / "calendar.v3.json").read_text(encoding="utf-8"))
    return doc


class GoogleStandIn(PushDelivery, TherapistUi, HttpDispatch, CalendarApi):
    """A Calendar v3 API on 127.0.0.1 that behaves as Google documents it.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        *,
        max_batch: int = 50,
        access_token_ttl: int = 3599,
        notify_timeout: float = 2.0,
        update_deleted: str = "forbidden",
        reinsert_deleted: str = "duplicate",
        purge_deleted_after: float | None = None,
        purged_ids: str = "burnt",
        id_and_ical_uid: str = "accepted",
        user_rate_limit: int | None = USER_RATE_LIMIT,
        user_rate_window: float = USER_RATE_WINDOW,
    ) -> None:
        super().__init__()
        for value, allowed, name in (
            (update_deleted, UPDATE_DELETED_MODES, "update_deleted"),
            (reinsert_deleted, REINSERT_DELETED_MODES, "reinsert_deleted"),
            (purged_ids, PURGED_ID_MODES, "purged_ids"),
            (id_and_ical_uid, ID_AND_ICAL_UID_MODES, "id_and_ical_uid"),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}")
        self.max_batch = max_batch
        self.access_token_ttl = access_token_ttl
        self.notify_timeout = notify_timeout
        self.update_deleted = update_deleted
        self.reinsert_deleted = reinsert_deleted
        self.purge_deleted_after = purge_deleted_after
        self.purged_ids = purged_ids
        self.id_and_ical_uid = id_and_ical_uid
        self.user_rate_limit = user_rate_limit
        self.user_rate_window = user_rate_window
        self._user_calls: dict[str, deque[float]] = {}
        self._calendar_limits: dict[str, tuple[float, float | None]] = {}
        self._freebusy_errors = {}
        self.consenting_account: str | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._executor: ThreadPoolExecutor | None = None

    # lifecycle ----------------------------------------------------------------------------------

    def start(self) -> GoogleStandIn:
        if self._server is not None:
            return self
        self._server = _Server(self)
        port = self._server.server_address[1]
        self._root_url = f"http://127.0.0.1:{port}/"
        self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="standin-push")
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="google-standin",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> GoogleStandIn:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # addresses ----------------------------------------------------------------------------------

    @property
    def root_url(self) -> str:
        return self._root_url

    @property
    def token_url(self) -> str:
        return self._root_url + "token"

    @property
    def auth_url(self) -> str:
        return self._root_url + "o/oauth2/auth"

    @property
    def revoke_url(self) -> str:
        return self._root_url + "revoke"

    def discovery_document(self) -> JSON:
        """The packaged calendar.v3 discovery document with its roots pointed here."""
        doc = packaged_discovery_document()
        doc["rootUrl"] = self._root_url
        doc["mtlsRootUrl"] = self._root_url
        doc["baseUrl"] = self._root_url + doc["servicePath"]
        return doc

    # accounts (test controls) -------------------------------------------------------------------

    def add_account(
        self,
        email: str,
        client_id: str = "cid",
        client_secret: str = "csecret",
        *,
        time_zone: str = "UTC",
        summary: str | None = None,
        scopes: Iterable[str] = (CALENDAR_SCOPE,),
    ) -> str:
        """Register an account (and OAuth client) with its primary calendar, whose id is the
        email; returns a refresh token for it, granted ``scopes`` (full calendar access unless
        told). Again for a known account: a new token."""
        with self._lock:
            client = self._clients.get(client_id)
            if client is None:
                self._clients[client_id] = Client(client_id, client_secret)
            elif client.client_secret != client_secret:
                raise ValueError(f"client {client_id!r} is registered with another secret")
            if email not in self._accounts:
                self._accounts[email] = Account(email, client_id, [email])
                self._calendars[email] = Calendar(
                    id=email,
                    owner=email,
                    summary=summary or email,
                    description=None,
                    time_zone=time_zone,
                    primary=True,
                    etag=self._next_etag(),
                    resource_id=secrets.token_urlsafe(18),
                )
            return self._issue_refresh_token(email, client_id, " ".join(scopes))

    def add_calendar(self, email: str, summary: str, *, time_zone: str | None = None) -> str:
        """Create a secondary calendar for an account, as the user would in Google's UI."""
        with self._lock:
            tz = time_zone or self._calendars[email].time_zone
            return self._new_calendar(email, summary, time_zone=tz).id

    def share_calendar(self, calendar_id: str, email: str, role: str) -> None:
        """Share a calendar with another account as its owner would in Google's UI: it appears
        in that account's calendar list with ``role`` as its accessRole (one of ``ROLES``; owner is
        "Make changes and manage sharing")."""
        if role not in ROLES:
            raise ValueError(f"accessRole {role!r} is not one of {ROLES}")
        with self._lock:
            cal = self._calendars[calendar_id]
            if email not in cal.shared:
                self._accounts[email].calendar_ids.append(calendar_id)
            cal.shared[email] = role

    def client_credentials(self, refresh_token: str) -> tuple[str, str]:
        """(client_id, client_secret) of the OAuth client a refresh token was issued to."""
        with self._lock:
            client = self._clients[self._refresh_tokens[refresh_token].client_id]
            return client.client_id, client.client_secret

    def revoke(self, refresh_token: str) -> None:
        """Revoke a refresh token and every access token obtained with it (as the user does
        under "Third-party apps with account access")."""
        with self._lock:
            self._revoke_refresh_token(refresh_token)

    def expire_access_tokens(self) -> None:
        """Make every access token invalid: the next API call answers 401 and the client
        refreshes."""
        with self._lock:
            self._access_tokens.clear()

    def expire_sync_tokens(self, calendar_id: str | None = None) -> None:
        """Forget sync tokens (of one calendar, or all): using one answers 410
        fullSyncRequired."""
        with self._lock:
            for token, sync in list(self._sync_tokens.items()):
                if calendar_id is None or sync.calendar_id == calendar_id:
                    del self._sync_tokens[token]

    # counters and inspection --------------------------------------------------------------------

    @property
    def requests(self) -> int:
        """HTTP requests received (a batch is one)."""
        with self._lock:
            return self._requests

    @property
    def calls(self) -> Counter[str]:
        """API calls by method name (``events.insert``, ``batch``, ``token``...); each batch part
        counts as its own call."""
        with self._lock:
            return Counter(self._calls)

    def reset_counts(self) -> None:
        with self._lock:
            self._requests = 0
            self._calls.clear()

    @property
    def notifications_sent(self) -> list[Notification]:
        with self._lock:
            return list(self._notifications)

    def wait_for_notifications(self, count: int, timeout: float = 5.0) -> list[Notification]:
        """Block until at least ``count`` notifications were delivered (or tried)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._notifications) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{len(self._notifications)} notifications after {timeout}s, "
                        f"expected {count}"
                    )
                self._changed_cond.wait(remaining)
            return list(self._notifications)

    @property
    def active_channels(self) -> list[str]:
        with self._lock:
            return [c.id for c in self._channels.values() if self._channel_live(c)]

    def calendars(self, email: str) -> list[str]:
        """Ids of an account's calendars, the primary first."""
        with self._lock:
            return list(self._accounts[email].calendar_ids)

    def events(self, calendar_id: str, include_deleted: bool = False) -> list[JSON]:
        """The stored events of a calendar (full resources, deleted ones with status
        "cancelled" when asked), in creation order."""
        with self._lock:
            cal = self._calendars[calendar_id]
            return [
                deep_copy(s.body)
                for s in sorted(cal.events.values(), key=lambda s: s.order)
                if include_deleted or not s.deleted
            ]

    def get_event(self, calendar_id: str, event_id: str) -> JSON | None:
        with self._lock:
            stored = self._calendars[calendar_id].events.get(event_id)
            return deep_copy(stored.body) if stored is not None else None

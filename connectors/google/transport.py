"""Google: how a request reaches the Calendar API.

The client is built from the discovery document packaged with google-api-python-client, its
``rootUrl`` pointed at ``settings.url``, so batch requests (``rootUrl`` + ``batchPath``) follow
the endpoint too. Every connection, token refreshes included, passes the outbound policy
(:class:`connectors.egress_http.PolicyHttp`), and every request carries the pass header.

Calls to one account are spaced by ``min_interval``: Google counts requests per user, each part
of a batch as one ("Send batch requests"), so after a request of ``cost`` calls the next waits
``cost`` intervals, which keeps one busy therapist under the per-user rate limit instead of
bursting into 403s.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import threading
import time
from typing import Any

import google_auth_httplib2
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build_from_document

from connectors.base import pass_headers
from connectors.egress_http import PolicyHttp
from connectors.google.errors import Fallback, translated
from connectors.google.settings import GoogleSettings


def discovery_document(root: str) -> dict[str, Any]:
    path = importlib.resources.files("googleapiclient").joinpath(
        "discovery_cache/documents/calendar.v3.json"
    )
    doc: dict[str, Any] = json.loads(path.read_text())
    # Batch requests are built from rootUrl + batchPath, so they follow the endpoint too.
    doc["rootUrl"] = root if root.endswith("/") else root + "/"
    return doc


class _PassTaggedHttp(PolicyHttp):
    """Adds the pass header to every request, batches included (one outer POST); every
    connection, token refreshes included, passes the outbound policy."""

    def request(
        self,
        uri: Any,
        method: str = "GET",
        body: Any = None,
        headers: Any = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        return super().request(
            uri, method, body, {**pass_headers(), **(headers or {})}, *args, **kwargs
        )


class Pacer:
    """Spaces the calls to one account by ``interval`` seconds each."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._ready_at = 0.0
        self._lock = threading.Lock()

    def wait(self, cost: int = 1) -> None:
        """Wait until a request of ``cost`` calls may go."""
        if self._interval <= 0:
            return
        with self._lock:
            now = time.monotonic()
            wait = self._ready_at - now
            if wait > 0:
                time.sleep(wait)
                now = time.monotonic()
            self._ready_at = now + cost * self._interval


class Api:
    """The Calendar API client of one connector. No network I/O happens on construction."""

    def __init__(self, settings: GoogleSettings) -> None:
        credentials = Credentials(
            token=None,
            refresh_token=settings.refresh_token,
            token_uri=settings.token_uri,
            client_id=settings.client_id,
            client_secret=settings.client_secret,
        )
        http = google_auth_httplib2.AuthorizedHttp(
            credentials, http=_PassTaggedHttp(settings.egress, timeout=settings.timeout)
        )
        self.service: Any = build_from_document(discovery_document(settings.url), http=http)
        self.pacer = Pacer(settings.min_interval)
        self._events: Any = None

    def events(self) -> Any:
        # Building the resource walks the discovery document: ~30% of a batched mirror's CPU
        # when done per write (bench/ profile), so it is built once per connector.
        if self._events is None:
            self._events = self.service.events()
        return self._events

    def execute(
        self,
        request: Any,
        what: str,
        *,
        if_match: str | None = None,
        fallback: Fallback | None = None,
    ) -> Any:
        """Send one request (paced); its answer, or the translated error. ``fallback`` may
        claim an error as an internal signal for the caller instead."""
        if if_match:
            request.headers["If-Match"] = if_match
        self.pacer.wait()
        with translated(what, fallback):
            return request.execute(num_retries=0)

    def execute_batch(self, batch: Any, parts: int) -> None:
        """Send a batch of ``parts`` requests, paced as that many calls. Each part's outcome
        goes to its own callback; only a failure of the batch as a whole raises here."""
        self.pacer.wait(parts)
        with translated("batch"):
            batch.execute()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.service.close()

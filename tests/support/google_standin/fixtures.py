"""Pytest fixtures and helpers for tests that talk to the Google Calendar stand-in.

Import what you need into a test module or conftest.py::

    from tests.support.google_standin.fixtures import build_service, google_standin  # noqa: F401

- ``google_standin``: a started :class:`GoogleStandIn`, fresh per test, stopped afterwards.
- ``google_account``: an account on it (``therapist@example.com``) and its refresh token.
- ``google_service``: a googleapiclient ``calendar`` v3 Resource for that account.
- ``build_service(stand_in, refresh_token, *, timeout=5)``: such a Resource for any account.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import google_auth_httplib2
import httplib2
import pytest
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build_from_document

from tests.support.google_standin.server import MODE_PROFILES, GoogleStandIn

__all__ = [
    "GoogleAccount",
    "build_service",
    "credentials_for",
    "entry_uid",
    "google_account",
    "google_service",
    "google_standin",
    "google_standin_every_mode",
]

DEFAULT_EMAIL = "therapist@example.com"


@dataclass(frozen=True)
class GoogleAccount:
    email: str
    refresh_token: str


def credentials_for(
    stand_in: GoogleStandIn,
    refresh_token: str,
    *,
    client_id: str | None = None,
    client_secret: str | None = None,
) -> Credentials:
    """google-auth user credentials that refresh against the stand-in's token endpoint."""
    if client_id is None or client_secret is None:
        known_id, known_secret = stand_in.client_credentials(refresh_token)
        client_id = client_id or known_id
        client_secret = client_secret or known_secret
    # google-auth leaves the Credentials constructor unannotated (as in pyproject.toml).
    return Credentials(  # type: ignore[no-untyped-call]
        token=None,
        refresh_token=refresh_token,
        token_uri=stand_in.token_url,
        client_id=client_id,
        client_secret=client_secret,
    )


def build_service(
    stand_in: GoogleStandIn,
    refresh_token: str,
    *,
    timeout: float = 5,
    client_id: str | None = None,
    client_secret: str | None = None,
) -> Any:
    """A calendar v3 Resource built from the packaged discovery document with its rootUrl
    pointed at the stand-in, authorised through google_auth_httplib2.AuthorizedHttp."""
    credentials = credentials_for(
        stand_in, refresh_token, client_id=client_id, client_secret=client_secret
    )
    http = google_auth_httplib2.AuthorizedHttp(credentials, http=httplib2.Http(timeout=timeout))
    return build_from_document(stand_in.discovery_document(), http=http)


def entry_uid(event: dict[str, Any]) -> str:
    """The UID of the entry syncd wrote as ``event``: kept in a private extended property, since
    syncd supplies only the event id at creation (Google's iCalUID is then its own)."""
    private = (event.get("extendedProperties") or {}).get("private") or {}
    return str(private.get("syncdUid") or event.get("iCalUID"))


@pytest.fixture
def google_standin() -> Iterator[GoogleStandIn]:
    with GoogleStandIn() as stand_in:
        yield stand_in


@pytest.fixture(name="google_standin", params=sorted(MODE_PROFILES))
def google_standin_every_mode(request: pytest.FixtureRequest) -> Iterator[GoogleStandIn]:
    """The stand-in in each of its profiles of undocumented behaviour (MODE_PROFILES): a test
    module that assigns this to ``google_standin`` runs every test against each of them."""
    with GoogleStandIn(**MODE_PROFILES[request.param]) as stand_in:
        yield stand_in


@pytest.fixture
def google_account(google_standin: GoogleStandIn) -> GoogleAccount:
    return GoogleAccount(DEFAULT_EMAIL, google_standin.add_account(DEFAULT_EMAIL))


@pytest.fixture
def google_service(google_standin: GoogleStandIn, google_account: GoogleAccount) -> Any:
    return build_service(google_standin, google_account.refresh_token)

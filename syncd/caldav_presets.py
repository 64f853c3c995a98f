"""What the connect page knows about CalDAV providers: where each one's server is, which password
it wants and how to make one, and how to say in plain words what went wrong when connecting.

Pure data and wording, no I/O: the page renders it, :mod:`syncd.connect_flow` acts on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from connectors.errors import AuthFailed, ConnectorError, NotFound, ProtocolError, Transient


@dataclass(frozen=True, slots=True)
class Preset:
    key: str  # in URLs: /connect/<token>/caldav/<key>
    name: str  # what the therapist sees
    company: str  # who refused a password ("Apple did not accept …")
    server_url: str | None  # None: the therapist gives it (Nextcloud, other)
    username_label: str
    credential_label: str
    # Which password, and how to make one: shown beside the form, and again when it is refused.
    password_help: tuple[str, ...]
    # For presets without a fixed server: what the address field asks for.
    address_label: str = ""
    address_hint: str = ""
    # Nextcloud's CalDAV root sits below the address the therapist knows.
    address_suffix: str = ""


ICLOUD = Preset(
    key="icloud",
    name="Apple iCloud",
    company="Apple",
    server_url="https://caldav.icloud.com/",
    username_label="Apple Account email",
    credential_label="App-specific password",
    password_help=(
        "iCloud needs an app-specific password, not your usual Apple Account password.",
        "To make one: sign in at appleid.apple.com (account.apple.com), open Sign-In and "
        "Security, choose App-Specific Passwords, and create one named, for example, "
        "“Therapy calendar”. Copy the password it shows (xxxx-xxxx-xxxx-xxxx) into the field "
        "below.",
        "App-specific passwords need two-factor authentication to be on for your Apple Account.",
    ),
)

FASTMAIL = Preset(
    key="fastmail",
    name="Fastmail",
    company="Fastmail",
    server_url="https://caldav.fastmail.com/dav/",
    username_label="Fastmail email address",
    credential_label="App password",
    password_help=(
        "Fastmail needs an app password; your usual Fastmail password will not work here.",
        "To make one: in Fastmail open Settings → Privacy & Security, create a new app "
        "password, and give it access to calendars (CalDAV). Copy it into the field below.",
    ),
)

NEXTCLOUD = Preset(
    key="nextcloud",
    name="Nextcloud",
    company="Your Nextcloud server",
    server_url=None,
    username_label="Nextcloud user name",
    credential_label="App password",
    password_help=(
        "Use an app password, especially if you sign in to Nextcloud with two-factor "
        "authentication.",
        "To make one: in Nextcloud open Settings → Security → Devices & sessions, type a name "
        "such as “Therapy calendar” and choose Create new app password.",
    ),
    address_label="Your Nextcloud address",
    address_hint="The address you open Nextcloud at, e.g. https://cloud.example.com",
    address_suffix="remote.php/dav/",
)

OTHER = Preset(
    key="other",
    name="Other CalDAV calendar",
    company="The server",
    server_url=None,
    username_label="User name",
    credential_label="Password",
    password_help=(
        "Use the user name and password your calendar provider gives for calendar apps. If it "
        "offers app passwords (or app-specific passwords), use one of those.",
    ),
    address_label="Email address, domain or server address",
    address_hint=(
        "Your email address or your provider's domain (we look the server up), or the full "
        "CalDAV address your provider gives, e.g. https://dav.example.com/"
    ),
)

PRESETS: dict[str, Preset] = {p.key: p for p in (ICLOUD, FASTMAIL, NEXTCLOUD, OTHER)}


@dataclass(frozen=True, slots=True)
class Problem:
    """What went wrong, for a therapist: the message first, the technical detail second."""

    message: str
    detail: str = ""
    field: str = ""  # the form field to look at, if one


def _host(url: str) -> str:
    return urlsplit(url).hostname or url


def explain(preset: Preset, error: ConnectorError, url: str) -> Problem:
    """A connector error met while trying the therapist's credentials, in plain words."""
    detail = f"{type(error).__name__}: {error}"
    host = _host(url)
    if isinstance(error, AuthFailed):
        first = (
            f"{preset.company} did not accept this password."
            if preset.company != OTHER.company
            else "The server did not accept this user name and password."
        )
        return Problem(" ".join((first, *preset.password_help)), detail, "password")
    if isinstance(error, Transient):
        return Problem(
            f"We could not reach {host}. Check the server address; if it is right, the "
            "server may be down, so try again in a few minutes.",
            detail,
            "address",
        )
    if isinstance(error, NotFound | ProtocolError):
        return Problem(
            f"{host} answered, but we found no calendar there. Check the address: use the "
            "CalDAV address your provider gives for calendar apps.",
            detail,
            "address",
        )
    return Problem("Connecting did not work. Please try again.", detail)

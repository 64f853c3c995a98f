"""Finding a CalDAV server from an email address or a domain (RFC 6764).

In the order RFC 6764 §6 gives: DNS SRV ``_caldavs._tcp.<domain>`` (TLS) then ``_caldav._tcp``,
each with the context path from the TXT record at the same name (``path=/dav/``), else the
well-known URI on the host the SRV record names; without SRV records, the well-known URI
``/.well-known/caldav`` on the domain itself (https first). The well-known URI is probed with a
PROPFIND whose redirects are followed one hop at a time, every address checked by the caller's
outbound-request policy *before* it is contacted (``check_url``), so a DNS answer or a redirect
cannot aim a request at an address the policy refuses.

DNS goes through :class:`DnsResolver`, an interface: dnspython in production, a mapping in tests.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol
from urllib.parse import urljoin, urlsplit

import httpx

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::\d{1,5})?$")
_PROPFIND = (
    '<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop>'
    "<D:current-user-principal/></D:prop></D:propfind>"
)
# What a CalDAV context answers to an unauthenticated PROPFIND: the listing, or a demand for
# credentials (the usual case), or a refusal of the anonymous request.
_ANSWERED = (200, 207, 401, 403)


class Srv(NamedTuple):
    priority: int
    weight: int
    target: str
    port: int


class DnsResolver(Protocol):
    def srv(self, name: str) -> list[Srv]:
        """SRV records of ``name``; empty when there are none (or the lookup failed)."""
        ...

    def txt(self, name: str) -> list[str]:
        """TXT strings of ``name``; empty when there are none (or the lookup failed)."""
        ...


class DnsPythonResolver:
    """The system's resolver through dnspython, each lookup bounded by ``timeout`` seconds."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout

    def _answer(self, name: str, kind: str) -> list[object]:
        import dns.exception
        import dns.resolver

        try:
            return list(dns.resolver.resolve(name, kind, lifetime=self.timeout))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as exc:
            log.info("DNS %s lookup of %s failed: %s", kind, name, type(exc).__name__)
            return []

    def srv(self, name: str) -> list[Srv]:
        out = []
        for record in self._answer(name, "SRV"):
            target = str(getattr(record, "target", "")).rstrip(".")
            out.append(
                Srv(
                    int(getattr(record, "priority", 0)),
                    int(getattr(record, "weight", 0)),
                    target,
                    int(getattr(record, "port", 0)),
                )
            )
        return out

    def txt(self, name: str) -> list[str]:
        out = []
        for record in self._answer(name, "TXT"):
            strings = getattr(record, "strings", ())
            out.append(b"".join(strings).decode("utf-8", "replace"))
        return out


class DiscoveryError(Exception):
    """Nothing usable was found; the message is for the therapist, ``detail`` for support."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Address:
    """What the therapist typed, understood: a full URL, or a domain to look up (and the email
    address it came from, which is usually also the user name)."""

    url: str | None = None
    domain: str | None = None
    email: str | None = None


def parse_address(text: str) -> Address:
    """An email address, a domain (``example.com``, ``dav.example.com:8443``) or a URL."""
    value = text.strip()
    if not value:
        raise DiscoveryError("Enter your email address, your provider's domain or its address.")
    if len(value) > 2000 or any(c.isspace() for c in value):
        raise DiscoveryError("That does not look like an email address or a web address.")
    if "://" in value:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DiscoveryError("A server address starts with https:// and names a server.")
        return Address(url=value)
    if "@" in value:
        local, _, domain = value.rpartition("@")
        if not local or not _HOST.match(domain):
            raise DiscoveryError("That does not look like an email address.")
        return Address(domain=domain.lower(), email=value)
    if "/" in value:  # a URL without its scheme: dav.example.com/dav/
        return parse_address("https://" + value)
    if not _HOST.match(value):
        raise DiscoveryError("That does not look like a domain such as example.com.")
    return Address(domain=value.lower())


def _has_dns_name(host: str) -> bool:
    """Whether SRV records could exist for ``host``: not for an address or ``localhost``."""
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return False


def _srv_candidates(resolver: DnsResolver, domain: str) -> list[str]:
    found: list[str] = []
    if not _has_dns_name(domain):
        return found
    for service, scheme in (("_caldavs._tcp", "https"), ("_caldav._tcp", "http")):
        name = f"{service}.{domain}"
        records = [r for r in resolver.srv(name) if r.target and r.target != "."]
        if not records:
            continue  # no record, or "." (RFC 2782: the service is not offered here)
        paths = [t[5:] for t in resolver.txt(name) if t.startswith("path=")]
        for record in sorted(records, key=lambda r: (r.priority, -r.weight)):
            host = f"[{record.target}]" if ":" in record.target else record.target
            base = f"{scheme}://{host}:{record.port}"
            path = paths[0] if paths and paths[0].startswith("/") else None
            found.append(base + path if path else base + "/.well-known/caldav")
    return found


def _probe(client: httpx.Client, url: str, check_url: Callable[[str], None]) -> str | None:
    """The context URL a well-known (or given) URL leads to, following redirects one by one
    through ``check_url``; None when nothing there answers like a CalDAV server."""
    for _hop in range(MAX_REDIRECTS + 1):
        check_url(url)
        try:
            reply = client.request(
                "PROPFIND",
                url,
                content=_PROPFIND,
                headers={"Depth": "0", "Content-Type": "application/xml; charset=utf-8"},
            )
        except httpx.HTTPError as exc:
            log.info("CalDAV discovery: %s did not answer (%s)", url, type(exc).__name__)
            return None
        if reply.is_redirect and "location" in reply.headers:
            url = urljoin(url, reply.headers["location"])
            continue
        return url if reply.status_code in _ANSWERED else None
    return None


def discover(
    address: Address,
    *,
    resolver: DnsResolver,
    check_url: Callable[[str], None],
    open_client: Callable[[float], httpx.Client],
    timeout: float,
) -> str:
    """The CalDAV context URL for ``address`` (a given URL is returned as it is, after the
    check). ``check_url`` raises to refuse an address; it is called before every request.
    ``open_client(timeout)`` gives the HTTP client: one bound to the outbound-request policy,
    so the address connected to is the one checked, whatever DNS answers in between."""
    if address.url is not None:
        check_url(address.url)
        return address.url
    assert address.domain is not None
    domain = address.domain
    candidates = _srv_candidates(resolver, domain.split(":")[0])
    candidates += [f"https://{domain}/.well-known/caldav", f"http://{domain}/.well-known/caldav"]
    tried: list[str] = []
    with open_client(timeout) as client:
        for candidate in candidates:
            tried.append(candidate)
            if not candidate.endswith("/.well-known/caldav"):
                check_url(candidate)  # the TXT record named the path: nothing to probe
                return candidate
            found = _probe(client, candidate, check_url)
            if found is not None:
                return found
    raise DiscoveryError(
        f"We could not find a calendar server for {domain}. Enter the full CalDAV address "
        "your provider gives for calendar apps (it starts with https://).",
        "tried: " + ", ".join(tried),
    )

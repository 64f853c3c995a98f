"""Where syncd may connect: one policy for every outbound request.

CalDAV URLs come from therapists and the servers they name (principals, calendar homes,
calendars, redirects), so without a check a therapist, or a server, could point the daemon at
its own network: the database, the cloud metadata service, an admin panel on localhost. Every
HTTP client syncd uses (the CalDAV library's session, Google's httplib2, the OAuth calls and
the webhook sender, see :mod:`connectors.egress_http`) resolves names through
:meth:`EgressPolicy.resolve` *when it opens a connection* and connects to exactly the
addresses that passed, so a name that
changes its answer between a check and the connection (DNS rebinding) gains nothing, and every
redirect hop, which opens its own connection, is checked like the first request.

Only globally routable addresses pass, unless ``allow_private`` (tests, a CalDAV server on the
LAN) or the address is inside one of ``allowed_networks``. A name passes only if *every* address
it resolves to passes: a mixed answer is how rebinding attacks start.

:func:`check_url` is the entry point for validating a URL before storing it (``syncd connect``,
a connect page): it raises :class:`DestinationRefused` with a message meant for the person who
typed the URL.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from connectors.errors import DestinationRefused

__all__ = [
    "DestinationRefused",
    "EgressPolicy",
    "Resolver",
    "check_url",
    "refusal",
    "system_resolver",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# (host, port) -> the addresses (as text) the host resolves to. Tests inject one that maps
# names such as ``dav.test`` to the addresses under test, so no test needs real DNS.
Resolver = Callable[[str, int], Sequence[str]]


def _nets(*spec: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(net), why) for net, why in spec)


# IANA's special-purpose registries, written out rather than taken from ``is_global`` alone:
# Python's own tables differ between versions and (3.11) count 6to4, NAT64 and CGNAT-adjacent
# forms as global.
_V4_DENIED: Final = _nets(
    ("0.0.0.0/8", "an unspecified address (this machine)"),
    ("10.0.0.0/8", "a private-network address"),
    ("100.64.0.0/10", "a carrier-grade NAT address (shared, not public)"),
    ("127.0.0.0/8", "a loopback address (this machine)"),
    ("169.254.0.0/16", "a link-local address (cloud metadata services live here)"),
    ("172.16.0.0/12", "a private-network address"),
    ("192.0.0.0/24", "an address reserved for protocol use"),
    ("192.0.2.0/24", "a documentation address"),
    ("192.88.99.0/24", "a 6to4 relay address"),
    ("192.168.0.0/16", "a private-network address"),
    ("198.18.0.0/15", "a benchmarking address"),
    ("198.51.100.0/24", "a documentation address"),
    ("203.0.113.0/24", "a documentation address"),
    ("224.0.0.0/4", "a multicast address"),
    ("240.0.0.0/4", "a reserved address"),
)
_V6_DENIED: Final = _nets(
    ("::/128", "an unspecified address (this machine)"),
    ("::1/128", "a loopback address (this machine)"),
    ("::/96", "an IPv4-compatible address (deprecated)"),
    ("64:ff9b:1::/48", "a local-use NAT64 address"),
    ("100::/64", "a discard-only address"),
    ("2001::/32", "a Teredo tunnel address"),
    ("2001::/23", "an address reserved for protocol use"),
    ("2001:db8::/32", "a documentation address"),
    ("3fff::/20", "a documentation address"),
    ("5f00::/16", "a segment-routing address"),
    ("fc00::/7", "a unique-local (private-network) address"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a site-local address (deprecated)"),
    ("ff00::/8", "a multicast address"),
)
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
_SIXTOFOUR: Final = ipaddress.ip_network("2002::/16")


def _embedded_v4(addr: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 form carries, for the forms that route to it."""
    if addr.ipv4_mapped is not None:
        return "an IPv4-mapped form of", addr.ipv4_mapped
    if addr in _SIXTOFOUR and addr.sixtofour is not None:
        return "a 6to4 form of", addr.sixtofour
    if addr in _NAT64:
        return "a NAT64 form of", ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr.teredo is not None:
        server, client = addr.teredo
        for v4 in (client, server):
            if _denied(v4) is not None:
                return "a Teredo form of", v4
    return None


def _denied(addr: IPAddress) -> str | None:
    """Why ``addr`` is not a public internet address, or None when it is one."""
    if isinstance(addr, ipaddress.IPv6Address):
        embedded = _embedded_v4(addr)
        if embedded is not None:
            form, v4 = embedded
            inner = _denied(v4)
            if inner is not None:
                return f"{form} {v4}, {inner}"
        table = _V6_DENIED
    else:
        table = _V4_DENIED
    for net, why in table:
        if addr in net:
            return why
    if not addr.is_global:
        return "not a public internet address"
    return None


def refusal(address: str) -> str | None:
    """Why the strict policy refuses ``address`` (text, an IPv6 scope allowed), or None."""
    return _denied(ipaddress.ip_address(address))


def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver, in its order, without duplicates.
    Raises ``socket.gaierror`` (an OSError: a resolution failure is worth retrying)."""
    seen: dict[str, None] = {}
    for _family, _type, _proto, _name, sockaddr in socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM
    ):
        seen.setdefault(str(sockaddr[0]), None)
    return list(seen)


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """``["10.1.0.0/16", "fd00::/8"]`` as networks; ValueError naming a bad entry."""
    out: list[IPNetwork] = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP network such as 10.1.0.0/16") from None
    return tuple(out)


@dataclass(frozen=True)
class EgressPolicy:
    """Which addresses outbound connections may reach, and how names are resolved.

    The default is the strict policy: public internet addresses only, system DNS.
    """

    allow_private: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()
    resolver: Resolver = field(default=system_resolver, compare=False)

    def permits(self, address: str) -> str | None:
        """None when ``address`` may be reached, else why not."""
        addr = ipaddress.ip_address(address)
        if self.allow_private or any(
            addr.version == net.version and addr in net for net in self.allowed_networks
        ):
            return None
        return _denied(addr)

    def resolve(self, host: str, port: int) -> list[str]:
        """The addresses to connect to for ``host``: every one of them checked. Raises
        :class:`DestinationRefused` if any is refused, OSError when the name does not resolve."""
        host = host.strip("[]")
        literal = _literal(host)
        addresses = [str(literal)] if literal is not None else list(self.resolver(host, port))
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} has no address")
        for address in addresses:
            why = self.permits(address)
            if why is not None:
                named = host if literal is not None else f"{host} resolves to {address}, which"
                raise DestinationRefused(
                    f"{named} is {why}; syncd only connects to public internet addresses "
                    "(an operator can allow it with [outbound] allowed_networks or "
                    "allow_private_hosts)",
                    host=host,
                    address=address,
                )
        return addresses

    def connect(
        self,
        host: str,
        port: int,
        timeout: object,
        source_address: tuple[str, int] | None = None,
    ) -> socket.socket:
        """A TCP connection to ``host``, opened to an address that passed the policy.
        ``timeout`` as for :func:`socket.create_connection` (seconds, None, or its default)."""
        last: OSError | None = None
        for address in self.resolve(host, port):
            try:
                return socket.create_connection((address, port), timeout, source_address)  # type: ignore[arg-type]
            except OSError as exc:
                last = exc
        assert last is not None  # resolve() never returns an empty list
        raise last

    def check_url(self, url: str) -> None:
        """Refuse ``url`` unless it is http(s) and its host passes the policy now. Raises
        :class:`DestinationRefused` (refused or unresolvable) with a plain-language message."""
        parts = urlsplit(url)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise DestinationRefused(f"{url} has an invalid port number") from None
        host = parts.hostname
        if parts.scheme not in ("http", "https") or not host:
            raise DestinationRefused(f"{url} is not an http:// or https:// URL with a host name")
        try:
            self.resolve(host, port)
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise DestinationRefused(f"cannot resolve {host}: {reason}", host=host) from None


STRICT: Final = EgressPolicy()


def check_url(url: str, policy: EgressPolicy = STRICT) -> None:
    """:meth:`EgressPolicy.check_url` under ``policy`` (the strict one by default)."""
    policy.check_url(url)

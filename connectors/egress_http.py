"""The outbound policy (:mod:`connectors.egress`) fitted into each HTTP library syncd uses.

Each adapter makes its library open every connection through :meth:`EgressPolicy.resolve`:
the name is resolved and checked when the connection is opened (also for each redirect hop and
each reconnect), and the socket goes to an address that passed. TLS still verifies the
certificate against the host *name*. Proxies from the environment are not used: a proxy would
resolve the name where syncd cannot check it.

- niquests (the caldav library's session): a resolver object, niquests' own extension point.
- httplib2 (Google's API client and google-auth's token refresh): connection classes.
- httpx (OAuth code exchange and revocation, the webhook sender): a network backend.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httplib2
import httpx
import niquests
from niquests.packages.urllib3.contrib.resolver import BaseResolver, ProtocolResolver

from connectors.egress import EgressPolicy

__all__ = ["PolicyHttp", "httpx_client", "niquests_session"]


# -- niquests ------------------------------------------------------------------------------------


class _PolicyResolver(BaseResolver):  # type: ignore[misc]
    """niquests/urllib3-future connect to whatever their resolver returns, for every new
    connection (happy-eyeballs included), so answering with checked addresses is enough."""

    protocol = ProtocolResolver.CUSTOM
    implementation = "syncd-egress"

    def __init__(self, policy: EgressPolicy) -> None:
        super().__init__(None, None)
        self._policy = policy
        self._closed = False

    def recycle(self) -> BaseResolver:
        return _PolicyResolver(self._policy)

    def close(self) -> None:
        self._closed = True

    def is_available(self) -> bool:
        return not self._closed

    def getaddrinfo(
        self,
        host: bytes | str | None,
        port: str | int | None,
        family: socket.AddressFamily,
        type: socket.SocketKind,
        proto: int = 0,
        flags: int = 0,
        *,
        quic_upgrade_via_dns_rr: bool = False,
    ) -> list[tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[Any, ...]]]:
        name = host.decode("ascii") if isinstance(host, bytes) else (host or "localhost")
        number = int(port or 0)
        return [
            info
            for info in _addrinfo(self._policy.resolve(name, number), number, type)
            if family in (socket.AF_UNSPEC, info[0])
        ]


def _addrinfo(
    addresses: Iterable[str], port: int, kind: socket.SocketKind
) -> list[tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[Any, ...]]]:
    out: list[tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[Any, ...]]] = []
    for address in addresses:
        # Numeric only: no name service is asked again for an address already checked.
        for family, _type, proto, _name, sockaddr in socket.getaddrinfo(
            address, port, type=kind or socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
        ):
            out.append((family, kind or socket.SOCK_STREAM, proto, "", sockaddr))
    return out


def niquests_session(policy: EgressPolicy, *, multiplexed: bool = False) -> niquests.Session:
    """A niquests session whose every connection passes ``policy``; no environment proxies
    or .netrc credentials."""
    session = niquests.Session(resolver=_PolicyResolver(policy), multiplexed=multiplexed)
    session.trust_env = False
    return session


# -- httplib2 ------------------------------------------------------------------------------------


class _PolicyHTTPConnection(httplib2.HTTPConnectionWithTimeout):  # type: ignore[misc]
    policy: EgressPolicy

    def connect(self) -> None:
        # httplib2's own connect() resolves the name, then connects to the *name* again.
        self.sock = self.policy.connect(self.host, self.port, self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PolicyHTTPSConnection(httplib2.HTTPSConnectionWithTimeout):  # type: ignore[misc]
    policy: EgressPolicy

    def connect(self) -> None:
        sock = self.policy.connect(self.host, self.port, self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


class PolicyHttp(httplib2.Http):  # type: ignore[misc]
    """An ``httplib2.Http`` whose connections pass ``policy``. Redirects are not followed:
    Google's APIs do not send them, and httplib2 would forward the bearer token to whatever
    host a redirect names."""

    def __init__(self, policy: EgressPolicy, *, timeout: float | None = None) -> None:
        super().__init__(timeout=timeout, proxy_info=None)
        self.follow_redirects = False
        self._connection_types = {
            "http": type("PolicyHTTPConnection", (_PolicyHTTPConnection,), {"policy": policy}),
            "https": type("PolicyHTTPSConnection", (_PolicyHTTPSConnection,), {"policy": policy}),
        }

    def request(self, uri: Any, *args: Any, **kwargs: Any) -> Any:
        scheme = str(uri).split(":", 1)[0].lower()
        if kwargs.get("connection_type") is None and scheme in self._connection_types:
            kwargs["connection_type"] = self._connection_types[scheme]
        return super().request(uri, *args, **kwargs)


# -- httpx ---------------------------------------------------------------------------------------


class _PolicyBackend(httpcore.NetworkBackend):
    """httpcore connects to the host given here and runs TLS against the URL's host name, so
    connecting to a checked address keeps certificate verification intact."""

    def __init__(self, policy: EgressPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        last: Exception | None = None
        for address in self._policy.resolve(host, port):
            try:
                return self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None  # resolve() never returns an empty list
        raise last

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not outbound destinations")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _PolicyTransport(httpx.HTTPTransport):
    def __init__(self, policy: EgressPolicy) -> None:
        super().__init__(trust_env=False)
        # httpx.HTTPTransport takes no network backend; its pool is rebuilt with one, with the
        # TLS context httpx makes by default (SSL_CERT_FILE / SSL_CERT_DIR still name a CA).
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            network_backend=_PolicyBackend(policy),
        )


def httpx_client(policy: EgressPolicy, *, timeout: float) -> httpx.Client:
    """An httpx client whose every connection passes ``policy``. It follows no redirects
    (httpx's default), and reads no proxy from the environment."""
    return httpx.Client(transport=_PolicyTransport(policy), timeout=timeout, trust_env=False)

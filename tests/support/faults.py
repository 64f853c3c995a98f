"""A fault-injecting loopback HTTP proxy for the tests, built on :class:`HTTPProxy`.

Put it in front of any real server (Radicale, Xandikos, the Google stand-in)::

    proxy = FaultProxy(server.url)
    proxy.add(Rule(Action.STATUS, status=503, retry_after=1, schedule=first(2)))
    ...                               # point the client at proxy.url
    assert proxy.injected[Action.STATUS] == 2

A :class:`Rule` matches requests by method and path regex and fires on a schedule (:func:`first`
N matching requests, :func:`every` Nth, :func:`probability` with a seeded random, or
:func:`window` for a span of time since the rule was added). The first rule (in order added)
that matches and whose schedule fires decides the fault; requests that no rule hits are
forwarded untouched. Actions: ``DELAY`` (sleep then forward), ``DROP`` (close without an
answer), ``RESET`` (RST via ``SO_LINGER`` 0), ``TRUNCATE`` (the server's reply with its full
Content-Length but only part of its body, then close), ``STATUS`` (answer 500/502/503/429…,
with Retry-After when given, without asking the server).
"""

from __future__ import annotations

import enum
import http.server
import os
import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from tests.support.caldav_servers import HTTPProxy, ProxiedRequest, ProxyReply

__all__ = [
    "Action",
    "FaultProxy",
    "Rule",
    "every",
    "fault_proxy",
    "first",
    "probability",
    "window",
]


class Action(enum.Enum):
    DELAY = "delay"
    DROP = "drop"
    RESET = "reset"
    TRUNCATE = "truncate"
    STATUS = "status"


# A schedule is called once per matching request with its 1-based match number and the seconds
# since the rule was added; it says whether the fault fires for this request.
Schedule = Callable[[int, float], bool]


def always() -> Schedule:
    return lambda n, elapsed: True


def first(count: int) -> Schedule:
    """The first ``count`` matching requests."""
    return lambda n, elapsed: n <= count


def every(nth: int) -> Schedule:
    """Every ``nth`` matching request (the nth, 2nth, …)."""
    return lambda n, elapsed: n % nth == 0


def probability(p: float, seed: int = 0) -> Schedule:
    """Each matching request with probability ``p``, from a random seeded with ``seed``."""
    rng = random.Random(seed)  # reproducible test faults
    return lambda n, elapsed: rng.random() < p


def window(start: float, end: float) -> Schedule:
    """Requests arriving between ``start`` and ``end`` seconds after the rule was added."""
    return lambda n, elapsed: start <= elapsed < end


@dataclass
class Rule:
    action: Action
    method: str = ".*"  # regex, matched in full against the method, case-insensitive
    path: str = ".*"  # regex, searched in the request path
    schedule: Schedule = field(default_factory=always)
    delay: float = 0.0  # DELAY: seconds before forwarding
    status: int = 503  # STATUS: the status to answer
    retry_after: float | str | None = None  # STATUS: the Retry-After header, when given
    keep: int = 0  # TRUNCATE: bytes of the body to send (at most half of it)
    matched: int = 0
    fired: int = 0
    added: float = field(default_factory=time.monotonic)

    def hits(self, request: ProxiedRequest) -> bool:
        return bool(
            re.fullmatch(self.method, request.method, re.IGNORECASE)
            and re.search(self.path, request.path)
        )


class FaultProxy(HTTPProxy):
    """:class:`HTTPProxy` that applies :class:`Rule` faults; ``injected`` counts them by action."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.rules: list[Rule] = []
        self.injected: Counter[Action] = Counter()
        self._rules_lock = threading.Lock()

    def add(self, rule: Rule) -> Rule:
        rule.added = time.monotonic()
        with self._rules_lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._rules_lock:
            self.rules.clear()

    @property
    def total_injected(self) -> int:
        with self._rules_lock:
            return sum(self.injected.values())

    def _pick(self, request: ProxiedRequest) -> Rule | None:
        with self._rules_lock:
            now = time.monotonic()
            for rule in self.rules:
                if not rule.hits(request):
                    continue
                rule.matched += 1
                if rule.schedule(rule.matched, now - rule.added):
                    rule.fired += 1
                    self.injected[rule.action] += 1
                    return rule
            return None

    def _serve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        request = self._receive(handler)
        rule = self._pick(request)
        if rule is None or rule.action is Action.DELAY:
            if rule is not None:
                time.sleep(rule.delay)
            self._reply(handler, request, self._forward(request))
        elif rule.action is Action.STATUS:
            headers = {"Content-Type": "text/plain"}
            if rule.retry_after is not None:
                ra = rule.retry_after
                headers["Retry-After"] = str(int(ra)) if isinstance(ra, float | int) else ra
            self._reply(handler, request, ProxyReply(rule.status, headers, b"injected fault\n"))
        elif rule.action is Action.DROP:
            _hang_up(handler, reset=False)
        elif rule.action is Action.RESET:
            _hang_up(handler, reset=True)
        elif rule.action is Action.TRUNCATE:
            reply = self._forward(request)
            full = reply.body or b"x" * 64
            keep = min(rule.keep, len(full) // 2)
            handler.send_response(reply.status)
            for name, value in reply.headers.items():
                if name.lower() not in ("connection", "transfer-encoding", "content-length"):
                    handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(full)))
            handler.end_headers()
            handler.wfile.write(full[:keep])
            handler.wfile.flush()
            _hang_up(handler, reset=False)

    def _reply(
        self,
        handler: http.server.BaseHTTPRequestHandler,
        request: ProxiedRequest,
        reply: ProxyReply,
    ) -> None:
        if self.on_response:
            reply = self.on_response(request, reply)
        handler.send_response(reply.status)
        for name, value in reply.headers.items():
            if name.lower() not in ("connection", "transfer-encoding", "content-length"):
                handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(reply.body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(reply.body)


def _hang_up(handler: http.server.BaseHTTPRequestHandler, *, reset: bool) -> None:
    """Close the client's connection without (the rest of) an answer: FIN, or RST if ``reset``."""
    handler.close_connection = True
    sock: socket.socket = handler.connection
    try:
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            os.close(sock.detach())  # close(2) with linger 0 sends RST; no FIN first
        else:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


@pytest.fixture
def fault_proxy() -> Iterator[Callable[[str], FaultProxy]]:
    """Factory: ``fault_proxy(server.url)`` gives a running :class:`FaultProxy`, closed at
    teardown."""
    proxies: list[FaultProxy] = []

    def make(upstream: str) -> FaultProxy:
        proxy = FaultProxy(upstream)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()

"""``GET /feeds/{token}.ics``: a therapist's read-only ICS feed (see ``syncd.feeds``).

The token is the only credential, so every failure looks the same (404), whether the token was
never issued, was rotated away, or is malformed. Calendar apps poll: responses carry an ETag and
answer ``If-None-Match`` with 304, and ``Cache-Control: private`` keeps shared caches from
holding what is health data. Misses are rate-limited per client address, so tokens cannot be
guessed at speed (not that 256 random bits could be)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from syncd import feeds
from syncd.app import App
from syncd.ratelimit import Kind
from syncd.web import security
from syncd.web.host import Host
from syncd.web.responses import error_response

CACHE_CONTROL = "private, max-age=300"


def etag_matches(header: str | None, etag: str) -> bool:
    """``If-None-Match`` uses the weak comparison (RFC 9110 §13.1.2): ``W/`` is ignored."""
    if not header:
        return False
    for candidate in header.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def routes(app: App, _daemon: Host) -> list[BaseRoute]:
    async def feed(request: Request) -> Response:
        wait = await security.refused_for(request, app, Kind.FEED)
        if wait is not None:
            return security.too_many(Kind.FEED, wait)
        token = request.path_params["token"]
        found = await security.off_loop(feeds.render_feed, app, token)
        if found is None:
            await security.count_failure(request, app, Kind.FEED)
            return error_response(404, "Not Found", {"Cache-Control": "no-store"})
        body, etag = found
        headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
        if etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        return Response(body.encode(), media_type=feeds.CONTENT_TYPE, headers=headers)

    return [Route(feeds.PATH, feed, methods=["GET"])]

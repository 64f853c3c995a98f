"""``GET /metrics``: the daemon's Prometheus metrics (text exposition format).

Counts and ids only, never personal data, so the endpoint needs no token; keep the HTTP service
on a private interface or behind the reverse proxy's access rules as for the rest of the API.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from syncd.app import App
from syncd.web.host import Host


def routes(_app: App, daemon: Host) -> list[BaseRoute]:
    async def metrics(_request: Request) -> Response:
        body = await daemon.metrics.scrape()
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return [Route("/metrics", metrics, methods=["GET"])]

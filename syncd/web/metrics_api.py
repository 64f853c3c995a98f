"""``GET /metrics``: the daemon's Prometheus metrics (text exposition format).

Counts and ids only, never personal data, so the endpoint needs no token; keep the HTTP service
on a private interface or behind the reverse proxy's access rules as for the rest of the API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from syncd.app import App
from syncd.web.app import register_routes

if TYPE_CHECKING:
    from syncd.daemon import Daemon


@register_routes
def metrics_routes(_app: App, daemon: Daemon) -> list[BaseRoute]:
    async def metrics(_request: Request) -> Response:
        body = await daemon.metrics.scrape()
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return [Route("/metrics", metrics, methods=["GET"])]

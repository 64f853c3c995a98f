"""The one error shape of the HTTP API, shared by every route and by the application's own
handlers (a module of its own, so routes need not import the application that serves them)."""

from __future__ import annotations

from starlette.responses import JSONResponse


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The one error shape of the HTTP API: ``{"status": 404, "error": "Not Found"}``."""
    return JSONResponse({"status": status, "error": message}, status_code=status, headers=headers)

"""Google's error JSON and the fault kinds of the stand-in.

Shape (Calendar API guide "Handle API errors"):
``{"error": {"code", "message", "errors": [{"domain", "reason", "message", ...}], "status"}}``.
"""

from __future__ import annotations

from typing import Any

# The canonical status names Google's front end adds next to the HTTP code. 410 has no canonical
# code, and the guide's 410 examples carry none, so it is left out there.
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
}


class ApiError(Exception):
    """An error answer of the Calendar API, raised by handlers and turned into a response."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        domain: str = "global",
        location: str | None = None,
        location_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.domain = domain
        self.location = location
        self.location_type = location_type
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "domain": self.domain,
            "reason": self.reason,
            "message": self.message,
        }
        if self.location is not None:
            item["locationType"] = self.location_type or "parameter"
            item["location"] = self.location
        error: dict[str, Any] = {"code": self.code, "message": self.message, "errors": [item]}
        if self.code in _STATUS:
            error["status"] = _STATUS[self.code]
        return {"error": error}


def not_found() -> ApiError:
    return ApiError(404, "notFound", "Not Found")


def bad_request(message: str, *, reason: str = "invalid", location: str | None = None) -> ApiError:
    return ApiError(400, reason, message, location=location)


def required(message: str, *, location: str | None = None) -> ApiError:
    return ApiError(400, "required", message, location=location)


def deleted() -> ApiError:
    return ApiError(410, "deleted", "Resource has been deleted")


def full_sync_required() -> ApiError:
    return ApiError(
        410,
        "fullSyncRequired",
        "Sync token is no longer valid, a full sync is required.",
        domain="calendar",
        location="syncToken",
    )


def duplicate() -> ApiError:
    return ApiError(409, "duplicate", "The requested identifier already exists.")


def condition_not_met() -> ApiError:
    return ApiError(
        412,
        "conditionNotMet",
        "Precondition Failed",
        location="If-Match",
        location_type="header",
    )


def forbidden() -> ApiError:
    return ApiError(403, "forbidden", "Forbidden")


def required_access(role: str) -> ApiError:
    """A method the caller's role on the calendar does not allow (Google's answer to an event
    written into a calendar shared read-only: 403 ``requiredAccessLevel``)."""
    return ApiError(
        403,
        "requiredAccessLevel",
        f"You need to have {role} access to this calendar.",
        domain="calendar",
    )


def unauthenticated(missing: bool) -> ApiError:
    headers = {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'}
    if missing:
        return ApiError(
            401,
            "required",
            "Login Required.",
            location="Authorization",
            location_type="header",
            headers=headers,
        )
    return ApiError(
        401,
        "authError",
        "Invalid Credentials",
        location="Authorization",
        location_type="header",
        headers=headers,
    )


# kind -> (HTTP code, domain, reason, message)
FAULT_KINDS: dict[str, tuple[int, str, str, str] | None] = {
    "rate_limit": (403, "usageLimits", "rateLimitExceeded", "Rate Limit Exceeded"),
    "user_rate_limit": (403, "usageLimits", "userRateLimitExceeded", "User Rate Limit Exceeded"),
    "quota": (403, "usageLimits", "quotaExceeded", "Calendar usage limits exceeded."),
    "too_many": (429, "usageLimits", "rateLimitExceeded", "Rate Limit Exceeded"),
    "server_error": (500, "global", "backendError", "Backend Error"),
    "unavailable": (503, "global", "backendError", "The service is currently unavailable."),
    "slow": None,
}


def fault_error(kind: str, retry_after: float | None) -> ApiError:
    spec = FAULT_KINDS[kind]
    assert spec is not None
    code, domain, reason, message = spec
    headers = {"Retry-After": str(int(retry_after))} if retry_after is not None else None
    return ApiError(code, reason, message, domain=domain, headers=headers)

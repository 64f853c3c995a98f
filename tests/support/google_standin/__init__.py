"""A faithful local stand-in of the Google Calendar v3 API (and Google's OAuth endpoints) for
tests and benchmarks, driven by the real google-api-python-client. See README.md."""

from ._discovery import method_scopes
from ._errors import FAULT_KINDS, ApiError
from ._model import Fault, Notification
from .server import MODE_PROFILES, GoogleStandIn, packaged_discovery_document

__all__ = [
    "FAULT_KINDS",
    "MODE_PROFILES",
    "ApiError",
    "Fault",
    "GoogleStandIn",
    "Notification",
    "method_scopes",
    "packaged_discovery_document",
]

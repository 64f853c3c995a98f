"""Google Calendar: one calendar of one Google account. :class:`GoogleConnector` (in
:mod:`connectors.google.connector`, which lists the parts of this package) is made from
:class:`GoogleSettings`."""

from connectors.google.calendar import MARKER
from connectors.google.connector import GoogleConnector
from connectors.google.errors import translate
from connectors.google.ids import event_id_for, generation, name_for_event_id, split_generation
from connectors.google.settings import (
    GOOGLE_API,
    GOOGLE_REVOKE_URI,
    GOOGLE_TOKEN_URI,
    GoogleSettings,
)

__all__ = [
    "GOOGLE_API",
    "GOOGLE_REVOKE_URI",
    "GOOGLE_TOKEN_URI",
    "MARKER",
    "GoogleConnector",
    "GoogleSettings",
    "event_id_for",
    "generation",
    "name_for_event_id",
    "split_generation",
    "translate",
]

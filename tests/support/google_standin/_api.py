"""The Calendar v3 methods of the stand-in, composed from their parts:

- ``_access.py``: which calendar a call reaches and with what role;
- ``_calendars.py``: calendars.*, calendarList.*, colors.get;
- ``_instances.py``: recurring events' instances and exceptions;
- ``_events.py``: events.insert/get/update/patch/delete and the purge mode;
- ``_listing.py``: events.list (paging, sync tokens) and events.instances;
- ``_freebusy.py``: freebusy.query;
- ``_channels.py``: events.watch and channels.stop.

Every ``_m_<resource>_<method>`` handler runs under the state lock and returns
``(status, json_or_None, extra_headers)`` or raises :class:`ApiError`.
"""

from __future__ import annotations

from ._calendars import CalendarsApi
from ._channels import ChannelsApi
from ._events import EventsApi
from ._freebusy import FreeBusyApi
from ._listing import EventListing


class CalendarApi(CalendarsApi, EventsApi, EventListing, FreeBusyApi, ChannelsApi):
    """Calendar v3 resources on top of :class:`StandInState`."""

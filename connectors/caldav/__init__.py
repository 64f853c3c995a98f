"""CalDAV: one calendar on any CalDAV server. :class:`CalDAVConnector` (in
:mod:`connectors.caldav.connector`, which lists the parts of this package) is made from
:class:`CalDAVSettings`; connectors made by one process share a :class:`ServerMemory`."""

from connectors.caldav.connector import CalDAVConnector
from connectors.caldav.memory import ServerMemory
from connectors.caldav.settings import CalDAVSettings

__all__ = ["CalDAVConnector", "CalDAVSettings", "ServerMemory"]

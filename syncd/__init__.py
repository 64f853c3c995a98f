"""syncd: mirrors a therapy booking platform into therapists' own calendars, and back."""

__version__ = "0.1.0"

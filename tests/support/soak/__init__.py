"""Soak: a seeded, mixed platform workload fed with ``syncd ingest`` while the real ``syncd run``
is SIGKILLed and restarted at random moments and a fault-injecting proxy sits in front of every
server (Radicale, Xandikos, the Google stand-in, the platform's webhook receiver), and the
therapists edit syncd's entries by hand. Every answer of ingest must be the one the workload's
own platform model predicts; afterwards every calendar must hold exactly the oracle's entries
for the platform as the workload knows it (tests/support/oracle.py; syncd's projection of what it
stored is compared as well), the therapists' own events must be as they were, and every
notification must have been delivered (the verdicts: tests/support/soak/verdict.py).

Its parts: ``workload`` (the events, and the platform model they go through), ``world`` (fault
proxies, the webhook receiver, the calendars and their setup), ``google_actions`` and the hand
edits in ``verdict`` (the therapists' own actions), ``checks`` and ``verdict`` (what is judged,
from outside syncd), ``drive`` (the run), ``report`` (what it counted).

From pytest (tests/test_soak.py) or the command line::

    python -m tests.support.soak --events 1000 --therapists 50 --kills 20 --seconds 900 [--keep DIR]
    python -m tests.support.soak ... --mutation NAME   # syncd broken on purpose (mutations.py)
"""

from __future__ import annotations

from tests.support.soak.drive import run
from tests.support.soak.google_actions import KINDS as GOOGLE_ACTIONS
from tests.support.soak.report import Report
from tests.support.soak.workload import FATES

__all__ = ["FATES", "GOOGLE_ACTIONS", "Report", "run"]

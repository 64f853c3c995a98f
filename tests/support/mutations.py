"""Deliberately broken variants of syncd, to prove that the oracles catch what they claim to.

Each mutation patches one syncd function the way a plausible bug would break it:

- ``drift_ignored``: the planner never repairs a hand-edited entry (drift "edited" dropped);
- ``stale_applied``: the ingestor applies a session version older than the stored one;
- ``accepted_holds_kept``: projection keeps the holds of an offer after it was accepted;
- ``label_ignored``: titles ignore the therapist's privacy choice (the first name, always);
- ``occurrences_ignored``: on Google, an occurrence of a series that the therapist moved,
  retitled or deleted is never recognised as changed (so never put back).

In-process tests use :func:`applied` (a context manager); the soak's processes are mutated
through :data:`ENV`, which the ``sitecustomize`` module in tests/support/mutation_hook/ reads
at start (``python -m tests.support.soak --mutation NAME``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ENV = "SYNCD_TEST_MUTATION"
HOOK_DIR = Path(__file__).parent / "mutation_hook"


def _drift_ignored() -> list[tuple[Any, str, Any]]:
    from syncd import engine
    from syncd import plan as planner

    real = planner.plan

    def plan(*args: Any, **kwargs: Any) -> list[planner.Action]:
        return [a for a in real(*args, **kwargs) if a.drift is not planner.Drift.EDITED]

    return [(engine, "plan", plan)]


def _stale_applied() -> list[tuple[Any, str, Any]]:
    from syncd.ingest import Ingestor
    from syncd.store.tables import SessionRow

    real = Ingestor._session

    def _session(self: Ingestor, s: Any, data: Any, now: Any) -> Any:
        row = s.get(SessionRow, data.id)
        if row is not None and row.version >= data.version:
            row.version = data.version - 1  # the version check passes: the old data is applied
        return real(self, s, data, now)

    return [(Ingestor, "_session", _session)]


def _accepted_holds_kept() -> list[tuple[Any, str, Any]]:
    from syncd import domain as d
    from syncd import engine
    from syncd import project as projection

    real = projection.project

    def project(state: d.PlatformState, now: Any, **kw: Any) -> dict[str, projection.Entry]:
        offers = tuple(
            dataclasses.replace(o, state=d.OfferState.PENDING)
            if o.state is d.OfferState.ACCEPTED
            else o
            for o in state.offers
        )
        return real(dataclasses.replace(state, offers=offers), now, **kw)

    return [(engine, "project", project)]


def _label_ignored() -> list[tuple[Any, str, Any]]:
    from syncd import domain as d
    from syncd import project as projection

    real = projection.client_label

    def client_label(client: d.Client, _choice: d.ClientLabel) -> str | None:
        return real(client, d.ClientLabel.FIRST_NAME)

    return [(projection, "client_label", client_label)]


def _occurrences_ignored() -> list[tuple[Any, str, Any]]:
    from connectors.google import series

    def tampered(_master: dict[str, Any], _instance: dict[str, Any]) -> bool:
        return False

    return [(series, "tampered", tampered)]


MUTATIONS: dict[str, Callable[[], list[tuple[Any, str, Any]]]] = {
    "drift_ignored": _drift_ignored,
    "stale_applied": _stale_applied,
    "accepted_holds_kept": _accepted_holds_kept,
    "label_ignored": _label_ignored,
    "occurrences_ignored": _occurrences_ignored,
}


def apply(name: str) -> Callable[[], None]:
    """Patch syncd with mutation ``name``; returns the function that undoes it."""
    patches = MUTATIONS[name]()
    saved = [(target, attr, getattr(target, attr)) for target, attr, _new in patches]
    for target, attr, new in patches:
        setattr(target, attr, new)

    def undo() -> None:
        for target, attr, old in saved:
            setattr(target, attr, old)

    return undo


@contextmanager
def applied(name: str) -> Iterator[None]:
    undo = apply(name)
    try:
        yield
    finally:
        undo()

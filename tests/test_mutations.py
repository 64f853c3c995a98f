"""Each oracle proven able to fail: syncd deliberately broken (tests/support/mutations.py) in four
plausible ways, and the state machine of tests/test_model.py driven through a scenario that
meets the bug. Unbroken, the scenario passes; broken, the model's checks report it, with the
reason. (The soak's runs under the same mutations are in docs/reliability.md.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from syncd.plan import resource_name
from syncd.project import is_ours
from tests.support import mutations
from tests.test_model import EngineModel


@pytest.fixture
def machine() -> Iterator[EngineModel]:
    m = EngineModel()
    m.setup()
    yield m
    m.teardown()


def hand_edit(m: EngineModel) -> None:
    """The therapist edits the title of the session syncd wrote; the next pass must restore it."""
    m.session_upserted(sid="s-1", hours=5, status="confirmed", reason=None)
    m.quiet_pass()
    [href] = [h for h in m.cal.items if is_ours(resource_name(h))]
    m.touch(href, "edit")
    m.quiet_pass()


def stale_copy(m: EngineModel) -> None:
    """A session moved twice, then the first move again under a new event id: ``stale``."""
    m.session_upserted(sid="s-1", hours=5, status="confirmed", reason=None)
    m.session_upserted(sid="s-1", hours=9, status="confirmed", reason="client_requested")
    first_move = m.sent[-1]
    m.session_upserted(sid="s-1", hours=12, status="confirmed", reason="client_requested")
    m._ingest(dict(first_move, id="m-stale-copy"))
    m.quiet_pass()


def offer_accepted(m: EngineModel) -> None:
    """An offer held in the calendar, then accepted: the session moves, the holds go."""
    m.session_upserted(sid="s-1", hours=5, status="confirmed", reason=None)
    m.offer("s-1", "a", [8, 30], "pending")
    m.quiet_pass()
    m.answer("o-s-1-a", 1)
    m.quiet_pass()


def no_label(m: EngineModel) -> None:
    """The therapist chose no client label (the default): titles are generic."""
    m.session_upserted(sid="s-1", hours=5, status="confirmed", reason=None)
    m.quiet_pass()


CASES: list[tuple[str, Callable[[EngineModel], None], str]] = [
    ("drift_ignored", hand_edit, "summary is 'moved by me Therapy session'"),
    ("stale_applied", stale_copy, "syncd answered applied, the model expects stale"),
    ("accepted_holds_kept", offer_accepted, "t-1: unexpected syncd-hold-o-s-1-a.0@syncd"),
    ("label_ignored", no_label, "summary is 'Therapy session · Jane', expected 'Therapy session'"),
]


@pytest.mark.parametrize(("mutation", "scenario", "caught"), CASES, ids=[c[0] for c in CASES])
def test_the_model_passes_syncd_and_catches_the_broken_variant(
    machine: EngineModel,
    mutation: str,
    scenario: Callable[[EngineModel], None],
    caught: str,
) -> None:
    scenario(machine)  # the real syncd: every check passes
    broken = EngineModel()
    broken.setup()
    try:
        with mutations.applied(mutation), pytest.raises(AssertionError) as failure:
            scenario(broken)
    finally:
        broken.teardown()
    assert caught in str(failure.value)


def test_a_hand_edit_was_invisible_to_the_projection_comparison_alone(
    machine: EngineModel,
) -> None:
    """Why the oracle: with edits never repaired, syncd's own view (UIDs and the X-SYNCD-HASH
    stamp, which a hand edit leaves alone) still agrees with the calendar."""
    with mutations.applied("drift_ignored"):
        machine.session_upserted(sid="s-1", hours=5, status="confirmed", reason=None)
        machine.quiet_pass()
        [href] = [h for h in machine.cal.items if is_ours(resource_name(h))]
        machine.touch(href, "edit")
        machine.engine.run_pass("t-1")
        machine.check_converged()  # passes: blind to the edit
        with pytest.raises(AssertionError, match="moved by me"):
            machine.check_oracle()

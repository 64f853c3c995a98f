"""The in-memory calendar of the model tests (tests/memory_calendar.py, used by
tests/test_model.py) run through the connector contract tests that need only a connector."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest

from connectors.base import Connector
from tests import test_connector_contract as contract
from tests.memory_calendar import MemoryCalendar

CONN_ONLY: list[Callable[[Connector], None]] = [
    fn
    for name, fn in vars(contract).items()
    if name.startswith("test_")
    and callable(fn)
    and list(inspect.signature(fn).parameters) == ["conn"]
]


@pytest.mark.parametrize("check", CONN_ONLY, ids=lambda fn: fn.__name__)
def test_memory_calendar_keeps_the_connector_contract(
    check: Callable[[Connector], None],
) -> None:
    check(MemoryCalendar())

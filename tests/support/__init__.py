"""What the tests run on but do not themselves test: real CalDAV servers, the Google Calendar
stand-in, the fault proxy, the replica harness, the platform model and its oracle, mutations,
clocks and factories. Kept apart from the ``test_*.py`` files so that tests/ lists tests."""

"""What the tests run against but do not themselves test: real CalDAV servers, the Google
Calendar stand-in, the fault proxy, the replica harness, the soak, the platform model and its
oracle, mutations, clocks and factories. Kept apart so that tests/ lists conftest and tests."""

"""Benchmarks for DESIGN.md §7 (not part of CI pass/fail): ``python -m bench.run [--quick]``."""

"""Reliability and security suite (issue 8): faults, floods, bad input, restarts.

Every guarantee listed in docs/reliability.md has its test here; fixtures come from the
plugins in tests/fixtures/ (no conftest of its own).
"""

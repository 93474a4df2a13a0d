"""Shared pytest configuration: fixture plugins live in tests/fixtures/, one module per concern."""

pytest_plugins = [
    "tests.fixtures.telemetry",
    "tests.fixtures.kube",
]

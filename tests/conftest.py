"""Fixtures shared by the test files."""

from phones.node import start_node  # noqa: F401  (fixture: starts real meshsip nodes)

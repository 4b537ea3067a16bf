"""Shared by every suite: puts `tests/` on the import path so suites can share helpers
(`wire.py`) without making the tests a package."""

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--crash-suite",
        choices=("short", "long"),
        default=os.environ.get("PITLANE_CRASH_SUITE", "short"),
        help="size of tests/faults/test_crash_equivalence.py: short (CI) or long (more "
        "customers and kill points, and the soak test); default $PITLANE_CRASH_SUITE or short",
    )

"""Shared by every suite: puts `tests/` on the import path so suites can share helpers
(`wire.py`) without making the tests a package."""

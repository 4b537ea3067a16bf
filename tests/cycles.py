"""Helpers for tests of garbage-collection policies: reference cycles to watch."""

from __future__ import annotations

import weakref


class Node:
    """Something that can sit in a reference cycle and be watched with a weakref."""

    def __init__(self) -> None:
        self.other: Node | None = None


def reference_cycle() -> weakref.ref[Node]:
    """A cycle nothing else refers to: only a collection can free it."""
    first, second = Node(), Node()
    first.other, second.other = second, first
    return weakref.ref(first)

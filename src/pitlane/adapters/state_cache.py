"""The worker's copy of entity states it wrote or read lately, keyed with their version.

Decoding a stored state costs more than any other single step of a batch, and a
worker sees the same customers and cars again and again (their partitions are its
own). So a batch asks Redis only whether a cached entity is still at the cached
version, and decodes a value only when another worker moved it on; a cached copy is
never used without that check, so the cache can be stale but never wrong.

States are mutable dicts that a batch changes in place. `take` therefore hands an
entry over (it leaves the cache), and only a transaction that wrote its batch gives
entries back with `put`; a batch that fails leaves nothing half-changed behind.
"""

from __future__ import annotations

from pitlane.domain.entities import EntityKey
from pitlane.domain.profile import State


class StateCache:
    """At most `capacity` states, the least recently put dropped first; 0 turns it off."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be at least 0, got {capacity}")
        self.capacity = capacity
        self._entries: dict[EntityKey, tuple[int, State]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def take(self, key: EntityKey) -> tuple[int, State] | None:
        """The cached version and state of `key`, removed from the cache; or None."""
        return self._entries.pop(key, None)

    def put(self, key: EntityKey, version: int, state: State | None) -> None:
        """Remember `state` as stored at `version`; None (a deleted entity) forgets it."""
        entries = self._entries
        entries.pop(key, None)
        if state is None or not self.capacity:
            return
        entries[key] = (version, state)
        if len(entries) > self.capacity:
            # dicts keep insertion order, and put re-inserts: the first key is the oldest.
            del entries[next(iter(entries))]

    def clear(self) -> None:
        """Forget everything (the worker lost its partitions, or Redis was replaced)."""
        self._entries.clear()

"""The worker's state cache: entries are handed over, given back, and bounded."""

from __future__ import annotations

import pytest

from pitlane.adapters.state_cache import StateCache
from pitlane.domain import entities

A, B, C = (entities.customer(c) for c in ("A", "B", "C"))


def test_take_hands_the_entry_over() -> None:
    cache = StateCache(10)
    state = {"kind": "customer"}
    cache.put(A, 3, state)

    taken = cache.take(A)

    assert taken is not None
    assert taken[0] == 3
    assert taken[1] is state
    assert cache.take(A) is None  # a failed batch cannot leave a half-changed copy


def test_the_least_recently_put_entry_goes_first() -> None:
    cache = StateCache(2)
    cache.put(A, 1, {"n": "a"})
    cache.put(B, 1, {"n": "b"})
    cache.put(A, 2, {"n": "a2"})  # given back after a batch: now the newest

    cache.put(C, 1, {"n": "c"})

    assert len(cache) == 2
    assert B not in cache
    assert cache.take(A) == (2, {"n": "a2"})
    assert cache.take(C) == (1, {"n": "c"})


def test_a_deleted_entity_is_forgotten() -> None:
    cache = StateCache(10)
    cache.put(A, 1, {"n": "a"})

    cache.put(A, 0, None)

    assert cache.take(A) is None


def test_capacity_zero_caches_nothing() -> None:
    cache = StateCache(0)

    cache.put(A, 1, {"n": "a"})

    assert len(cache) == 0


def test_clear_empties_it() -> None:
    cache = StateCache(10)
    cache.put(A, 1, {"n": "a"})

    cache.clear()

    assert cache.take(A) is None


def test_negative_capacity_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 0"):
        StateCache(-1)

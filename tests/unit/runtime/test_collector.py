"""The worker's garbage-collection policy: between batches, frozen survivors, full
collections on a timer."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from cycles import Node, reference_cycle
from pitlane.runtime.collector import BatchCollector


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Iterator[Clock]:
    yield Clock()
    gc.unfreeze()
    gc.enable()


def test_start_turns_automatic_collection_off(clock: Clock) -> None:
    collector = BatchCollector(60, clock)

    collector.start()

    assert not gc.isenabled()
    assert gc.get_freeze_count() > 0
    collector.stop()
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_stop_leaves_collection_off_if_start_found_it_off(clock: Clock) -> None:
    gc.disable()
    collector = BatchCollector(60, clock)
    collector.start()

    collector.stop()

    assert not gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_a_cycle_a_batch_dropped_is_collected_after_the_batch(clock: Clock) -> None:
    collector = BatchCollector(60, clock)
    collector.start()
    garbage = reference_cycle()
    assert garbage() is not None  # automatic collection is off

    collector.after_batch()

    assert garbage() is None
    collector.stop()


def test_survivors_are_frozen_and_a_cycle_among_them_waits_for_the_full_collection(
    clock: Clock,
) -> None:
    collector = BatchCollector(60, clock)
    collector.start()
    first, second = Node(), Node()
    first.other, second.other = second, first
    survivor = weakref.ref(first)
    collector.after_batch()  # the cycle is still referenced: it survives, frozen
    del first, second

    clock.now = 30
    collector.after_batch()
    still_there = survivor() is not None
    clock.now = 61
    collector.after_batch()

    assert still_there
    assert survivor() is None
    collector.stop()

"""When the worker's garbage collector runs: between batches, not in the middle of one.

A batch allocates hundreds of thousands of objects (decoded events, states, trigger
messages) that reference counting frees when the batch ends. CPython's collector,
left automatic, runs every few thousand allocations and so scans each batch's live
objects many times over: measured with `gc.callbacks` on the batch handler, 0.5 CPU s
per 100,000 events (about 8 % of the worker) at a threshold of 10,000, far more at the
default of 700, against 0.04 s collecting after each batch. Collecting the young
generation right after a batch finds almost nothing alive, which makes it cheap; the
survivors (connections, buffers, what faust keeps) are then frozen so that no later
collection scans them again. Only reference cycles can outlive a batch unnoticed
once frozen, so a full collection over everything runs every `full_every_s`.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

FULL_COLLECTION_EVERY_S = 300.0
"""How often frozen objects are collected too, for reference cycles only (the hot path
creates none): one pause as long as a scan of everything the worker holds, about
50 ms for a worker's 100,000 start-up objects on the benchmark machine."""


class BatchCollector:
    """Owns the process's garbage collector once `start` has been called."""

    def __init__(
        self,
        full_every_s: float = FULL_COLLECTION_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._full_every_s = full_every_s
        self._clock = clock
        self._last_full = clock()
        self._was_enabled = True

    def start(self) -> None:
        """Collect and freeze what start-up allocated, then stop automatic collection."""
        self._was_enabled = gc.isenabled()
        gc.collect()
        gc.freeze()
        gc.disable()
        self._last_full = self._clock()

    def after_batch(self) -> None:
        """Collect what the batch left behind and freeze the survivors."""
        if self._clock() - self._last_full >= self._full_every_s:
            gc.unfreeze()
            gc.collect()
            self._last_full = self._clock()
        else:
            gc.collect(0)
        gc.freeze()

    def stop(self) -> None:
        """Give the collector back as `start` found it (tests and tools share the process)."""
        gc.unfreeze()
        if self._was_enabled:
            gc.enable()

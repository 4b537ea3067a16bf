"""The event clock's bookkeeping: which events are held, which may go, and where each
input partition stands.

With `PITLANE_CLOCK=event` the outcome of a run must be a function of the recorded
input alone: the same triggers and the same state whatever the batch boundaries, the
order partitions are read in, a crash, a restart or a second worker. So events are
applied in one total order, `(release time, event id)`, and deadlines are fired
between them at their own times (the handler merges the two):

- An event's *release time* is its `occurred_at`, or, for an event that arrives
  later than the allowed lateness behind the newest event read before it from its own
  partition (its *mark*), that mark less the lateness. Both depend on the partition's
  own order only, so they are the same in every run.
- The *watermark* is the smallest mark, less the lateness, over the partitions that
  still hold back: no event still to be read can have a release time below it, so
  everything below it may be applied for good. A partition read to its end that has
  received nothing for `idle_partition_s` no longer holds back; when none does, the
  watermark is just past the newest event time read anywhere, so a replay finishes on
  its own.
- Each partition's *position* (the first offset not yet applied, the offsets above it
  that are done, and the mark at that first offset) is written with the state it
  belongs to, in the same atomic write. A restart, or a standby worker taking over,
  reads on from there with the same marks, skips what is done, and so applies every
  event exactly once, in the same order.

Pure: time comes in as arguments; nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import orjson

R = TypeVar("R")
"""Whatever the caller holds with an event (the decoded event and its record)."""

NO_MARK = float("-inf")


@dataclass(slots=True)
class Position:
    """Where one input partition stands, as stored with the state it produced.

    `next` is the first offset not applied yet (the consumer's committed offset);
    `done` the offsets at or above it that are applied or dead-lettered already (events
    released ahead of an earlier one still held); `mark` the newest event time of the
    records below `next`, which the release times of the records after it depend on.
    """

    next: int
    mark: float = NO_MARK
    done: list[int] = field(default_factory=list)

    def encode(self) -> bytes:
        """The stored form: compact JSON, `done` as `[first, last]` runs."""
        return orjson.dumps(
            {
                "next": self.next,
                "mark": None if self.mark == NO_MARK else self.mark,
                "done": _runs(self.done),
            }
        )

    @classmethod
    def decode(cls, raw: bytes | str) -> Position:
        """A stored position back."""
        data = orjson.loads(raw)
        mark = NO_MARK if data["mark"] is None else float(data["mark"])
        done = [offset for first, last in data["done"] for offset in range(first, last + 1)]
        return cls(int(data["next"]), mark, done)


def _runs(offsets: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for offset in sorted(offsets):
        if runs and runs[-1][1] == offset - 1:
            runs[-1][1] = offset
        else:
            runs.append([offset, offset])
    return runs


@dataclass(slots=True)
class Held(Generic[R]):
    """An event read and not applied yet."""

    release_at: float
    event_id: str
    partition: str
    offset: int
    mark_before: float
    item: R


@dataclass(slots=True)
class _Partition:
    position: Position
    read_to: int
    mark: float
    done: set[int]
    order: deque[int] = field(default_factory=deque)
    # Offsets of the events held from it, in the order read (ascending).
    caught_up_since: float | None = None


@dataclass(frozen=True, slots=True)
class Release(Generic[R]):
    """One step's worth of held events, in order, and the positions it leaves behind."""

    frontier: float
    held: list[Held[R]]
    positions: dict[str, Position]


class EventClock(Generic[R]):
    """Held events and partition positions of the one worker applying in event time."""

    def __init__(self, allowed_lateness_s: float, idle_partition_s: float) -> None:
        self._lateness = allowed_lateness_s
        self._idle_s = idle_partition_s
        self._partitions: dict[str, _Partition] = {}
        self._held: dict[tuple[str, int], Held[R]] = {}
        self._queue: list[tuple[float, str, str, int]] = []
        # Held events by release order; entries of released ones are dropped as met.
        self._finished: dict[str, set[int]] = {}
        # Offsets read and finished (dead letters) since the positions were last stored.

    @property
    def held_count(self) -> int:
        """How many events are read and wait for the watermark."""
        return len(self._held)

    def restore(self, partition: str, position: Position | None, first_offset: int) -> int:
        """Start `partition` from its stored position, else from `first_offset` (the
        consumer's committed or earliest offset); returns the offset to read from."""
        start = position or Position(first_offset)
        self._partitions[partition] = _Partition(
            Position(start.next, start.mark, list(start.done)),
            start.next,
            start.mark,
            set(start.done),
        )
        return start.next

    def to_read(self, partition: str, offset: int) -> bool:
        """False for a record this worker, or the one before it, has finished already."""
        state = self._partitions[partition]
        return offset >= state.position.next and offset not in state.done

    def read(self, partition: str, offset: int, occurred: float, event_id: str, item: R) -> None:
        """Hold the event read at `offset`, unless it was finished before (`to_read`),
        in which case it only moves the partition's mark, as it did the first time."""
        state = self._arrived(partition, offset)
        if self.to_read(partition, offset):
            release_at = max(occurred, state.mark - self._lateness)
            self._held[(partition, offset)] = Held(
                release_at, event_id, partition, offset, state.mark, item
            )
            heapq.heappush(self._queue, (release_at, event_id, partition, offset))
            state.order.append(offset)
        state.mark = max(state.mark, occurred)

    def finish(self, partition: str, offset: int) -> None:
        """A record read at `offset` that is finished at once (a dead letter)."""
        self._arrived(partition, offset)
        if self.to_read(partition, offset):
            self._finished.setdefault(partition, set()).add(offset)

    def _arrived(self, partition: str, offset: int) -> _Partition:
        state = self._partitions[partition]
        state.read_to = max(state.read_to, offset + 1)
        state.caught_up_since = None  # data arrived: not idle, whatever `saw_end` saw
        return state

    def saw_end(self, partition: str, end: int, now: float) -> None:
        """The partition's end offset at `now` (monotonic seconds): idleness starts
        once everything up to the end is read, and stops when more arrives."""
        state = self._partitions[partition]
        if state.read_to >= end:
            if state.caught_up_since is None:
                state.caught_up_since = now
        else:
            state.caught_up_since = None

    def watermark(self, now: float) -> float:
        """Below this event time nothing is left to read: see the module docstring."""
        holding = [
            state
            for state in self._partitions.values()
            if state.caught_up_since is None or now - state.caught_up_since < self._idle_s
        ]
        if holding:
            return min(state.mark for state in holding) - self._lateness
        newest = max((state.mark for state in self._partitions.values()), default=NO_MARK)
        return math.nextafter(newest, math.inf)  # events go strictly below: the newest too

    def ready(self, frontier: float, limit: int) -> Release[R]:
        """The held events below `frontier` in release order, at most `limit` (fewer
        when the next ones tie), with the positions applying them would leave; nothing
        changes until `released` is called with it."""
        taken: list[Held[R]] = []
        while len(taken) <= limit and (held := self._next_held()) is not None:
            if held.release_at >= frontier:
                break
            taken.append(held)
            heapq.heappop(self._queue)
        if len(taken) > limit:
            # Stop below the first event left out; a tie filling the whole step goes
            # whole, so that every step makes progress.
            frontier = taken[limit].release_at
            cut = [h for h in taken[:limit] if h.release_at < frontier]
            if not cut:
                while (held := self._next_held()) is not None and held.release_at == frontier:
                    heapq.heappop(self._queue)
                    taken.append(held)
            ready = cut or taken
        else:
            ready = taken
        for held in taken:  # back in the queue: nothing changes before `released`
            heapq.heappush(
                self._queue, (held.release_at, held.event_id, held.partition, held.offset)
            )
        return Release(frontier, ready, self._positions_after(ready))

    def _next_held(self) -> Held[R] | None:
        """The held event first in release order, dropping entries of released ones."""
        while self._queue:
            _, _, partition, offset = self._queue[0]
            held = self._held.get((partition, offset))
            if held is not None:
                return held
            heapq.heappop(self._queue)
        return None

    def released(self, release: Release[R]) -> None:
        """The release was applied and its positions stored."""
        for held in release.held:
            del self._held[(held.partition, held.offset)]
        for partition, position in release.positions.items():
            state = self._partitions[partition]
            state.position, state.done = position, set(position.done)
            while state.order and (partition, state.order[0]) not in self._held:
                state.order.popleft()
            self._finished.pop(partition, None)

    def positions(self) -> dict[str, Position]:
        """Every partition's current position (for the consumer's commit)."""
        return {name: state.position for name, state in self._partitions.items()}

    def _positions_after(self, leaving: Iterable[Held[R]]) -> dict[str, Position]:
        gone: dict[str, set[int]] = {}
        for held in leaving:
            gone.setdefault(held.partition, set()).add(held.offset)
        for partition, offsets in self._finished.items():
            gone.setdefault(partition, set()).update(offsets)
        positions = {}
        for partition, offsets in gone.items():
            state = self._partitions[partition]
            first = next(
                (
                    self._held[(partition, offset)]
                    for offset in state.order
                    if offset not in offsets and (partition, offset) in self._held
                ),
                None,
            )
            if first is not None:
                position = Position(first.offset, first.mark_before)
            else:
                position = Position(state.read_to, state.mark)
            position.done = sorted(o for o in state.done | offsets if o >= position.next)
            positions[partition] = position
        return positions

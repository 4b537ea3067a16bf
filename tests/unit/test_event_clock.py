"""The event clock's bookkeeping: release order, watermark, idleness and positions."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from pitlane.event_clock import EventClock, Position

P0, P1 = "booking.events:0", "telematics.events:0"


def _clock(lateness: float = 10, idle: float = 5) -> EventClock[str]:
    clock: EventClock[str] = EventClock(lateness, idle)
    clock.restore(P0, None, 0)
    clock.restore(P1, None, 0)
    return clock


def _read(clock: EventClock[str], partition: str, times: list[float], start: int = 0) -> None:
    for offset, at in enumerate(times, start):
        clock.read(partition, offset, at, f"{partition}@{offset}", f"{partition}@{offset}")


def _release_all(clock: EventClock[str], frontier: float, limit: int = 1000) -> list[str]:
    release = clock.ready(frontier, limit)
    clock.released(release)
    return [held.item for held in release.held]


def test_the_watermark_waits_for_every_partition_and_subtracts_the_lateness() -> None:
    clock = _clock()
    _read(clock, P0, [100, 200])

    assert clock.watermark(now=0) == float("-inf")  # P1 has told nothing yet

    _read(clock, P1, [150])

    assert clock.watermark(now=0) == 150 - 10


def test_events_go_in_event_time_order_across_partitions_and_below_the_frontier_only() -> None:
    clock = _clock()
    _read(clock, P0, [100, 130, 160])
    _read(clock, P1, [110, 120, 170])

    released = _release_all(clock, clock.watermark(now=0))  # 160 - 10 = 150

    assert released == [f"{P0}@0", f"{P1}@0", f"{P1}@1", f"{P0}@1"]
    assert clock.held_count == 2


def test_an_event_later_than_the_lateness_behind_its_own_partition_goes_at_that_mark() -> None:
    clock = _clock(lateness=10)
    _read(clock, P0, [100, 50])  # 50 is 50 s behind 100: released as if at 90

    release = clock.ready(float("inf"), 10)

    assert [(h.item, h.release_at) for h in release.held] == [(f"{P0}@1", 90), (f"{P0}@0", 100)]


def test_an_idle_partition_stops_holding_back_and_all_idle_releases_everything() -> None:
    clock = _clock(lateness=10, idle=5)
    _read(clock, P0, [100, 300])
    _read(clock, P1, [120])
    clock.saw_end(P1, 1, now=0)

    assert clock.watermark(now=4) == 110  # P1 read to its end, not idle long enough
    assert clock.watermark(now=5) == 290  # P1 idle: only P0 holds back

    clock.saw_end(P0, 2, now=6)

    assert clock.watermark(now=11) == math.nextafter(300, math.inf)  # past the newest read
    assert len(_release_all(clock, clock.watermark(now=11))) == 3


def test_a_record_arriving_makes_an_idle_partition_hold_back_again() -> None:
    clock = _clock(lateness=10, idle=5)
    _read(clock, P0, [100])
    _read(clock, P1, [120])
    clock.saw_end(P1, 1, now=0)
    _read(clock, P1, [130], start=1)

    assert clock.watermark(now=60) == 90


def test_a_step_stops_below_the_first_event_left_out_and_a_whole_tie_goes_at_once() -> None:
    clock = _clock()
    _read(clock, P0, [100, 100, 100, 101])

    first = clock.ready(float("inf"), 2)  # the tie at 100 cannot be cut

    assert [h.offset for h in first.held] == [0, 1, 2]
    clock.released(first)
    assert [h.offset for h in clock.ready(float("inf"), 1).held] == [3]


def test_positions_stop_at_the_first_held_event_and_remember_what_is_done_above_it() -> None:
    clock = _clock(lateness=100)
    _read(clock, P0, [100, 200, 120])  # offset 2 goes before offset 1
    clock.finish(P0, 3)  # a dead letter

    release = clock.ready(150, 10)
    clock.released(release)

    assert release.positions[P0] == Position(1, 100, [2, 3])
    assert clock.positions()[P0] == Position(1, 100, [2, 3])


def test_a_restart_from_the_stored_positions_releases_the_rest_exactly_as_before() -> None:
    times = [100, 200, 120, 130, 90, 400, 410, 150]
    straight = _clock(lateness=30)
    _read(straight, P0, times)
    whole = _release_all(straight, float("inf"))

    first = _clock(lateness=30)
    _read(first, P0, times[:5])
    before = _release_all(first, 125)
    stored = Position.decode(first.positions()[P0].encode())

    second: EventClock[str] = EventClock(30, 5)
    start = second.restore(P0, stored, 0)
    for offset in range(start, len(times)):  # Kafka redelivers from the stored `next`
        if second.to_read(P0, offset):
            second.read(P0, offset, times[offset], f"{P0}@{offset}", f"{P0}@{offset}")
        else:
            second.read(P0, offset, times[offset], "", "done")
    after = _release_all(second, float("inf"))

    assert before + after == whole
    assert "done" not in after


@given(st.lists(st.floats(0, 1000, allow_nan=False), min_size=1, max_size=30), st.data())
def test_any_batching_and_frontiers_give_the_one_order(
    times: list[float], data: st.DataObject
) -> None:
    straight = _clock(lateness=50)
    _read(straight, P0, times)
    expected = _release_all(straight, float("inf"))

    clock = _clock(lateness=50)
    got: list[str] = []
    offset = 0
    while offset < len(times):
        size = data.draw(st.integers(1, len(times) - offset))
        _read(clock, P0, times[offset : offset + size], start=offset)
        offset += size
        got += _release_all(clock, clock.watermark(now=0), data.draw(st.integers(1, 5)))
    while clock.held_count:
        got += _release_all(clock, float("inf"))

    assert got == expected


def test_a_position_survives_its_stored_form() -> None:
    position = Position(7, 12.5, [8, 9, 10, 14])

    assert Position.decode(position.encode()) == position
    assert Position.decode(Position(3).encode()) == Position(3)

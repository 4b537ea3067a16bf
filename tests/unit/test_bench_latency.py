"""The latency probe's readings are encoded before the clock starts and stamped as sent;
what goes on the wire must still be the contract event, stamped when it was sent, mixed
into the background load at the documented share."""

from __future__ import annotations

import gc
import os
import signal
import threading
import time

import pytest

from cycles import reference_cycle
from pitlane.bench_latency import (
    DRIVER_NICENESS,
    MAX_NICE,
    PROBE_EVERY,
    LoadStopped,
    _encode_readings,
    _mixed,
    _stamped,
    at_lower_priority,
    collector_paused,
    until_stopped,
)
from pitlane.domain.events import TelematicsReading, decode_event
from pitlane.simulate import SimulatedMessage


def test_a_stamped_reading_is_a_contract_reading_stamped_when_sent() -> None:
    probes = [(f"C{n}", f"LATVIN{n:011d}") for n in range(3)]
    sent_at: dict[str, float] = {}

    before = time.time()
    messages = list(_stamped(_encode_readings(probes, 14_250.0), sent_at))
    after = time.time()

    assert [m.key for m in messages] == [vin.encode() for _, vin in probes]
    readings = [decode_event(m.value, m.topic) for m in messages]
    assert all(isinstance(r, TelematicsReading) for r in readings)
    assert [r.vin for r in readings if isinstance(r, TelematicsReading)] == [v for _, v in probes]
    assert [r.event_id for r in readings] == list(sent_at)
    assert len(set(sent_at)) == len(probes)
    for reading in readings:
        stamp = reading.occurred_at.timestamp()
        assert stamp == sent_at[reading.event_id]
        assert before - 0.001 <= stamp <= after + 0.001


def test_the_mix_puts_a_probe_in_place_of_every_twentieth_message() -> None:
    background = [SimulatedMessage("identity.events", b"C", b"%d" % n) for n in range(60)]
    readings = _encode_readings([(f"C{n}", f"LATVIN{n:011d}") for n in range(3)], 14_250.0)
    sent_at: dict[str, float] = {}

    mixed = list(_mixed(background, readings, sent_at))

    assert len(mixed) == 3 * PROBE_EVERY
    probes = [i for i, m in enumerate(mixed) if m.topic == "telematics.events"]
    assert probes == [PROBE_EVERY - 1, 2 * PROBE_EVERY - 1, 3 * PROBE_EVERY - 1]
    others = [m for m in mixed if m.topic != "telematics.events"]
    assert others == background[: 3 * (PROBE_EVERY - 1)]  # in order, none repeated
    assert len(sent_at) == 3


def test_while_a_load_runs_the_collector_neither_runs_nor_scans_the_workload() -> None:
    workload = [[n] for n in range(1_000)]

    with collector_paused():
        assert not gc.isenabled()
        assert gc.get_freeze_count() >= len(workload)
        cycle = reference_cycle()
        for _ in range(10_000):  # enough allocations to start many collections
            reference_cycle()
        assert cycle() is not None

    assert gc.isenabled()
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert cycle() is None


def test_the_collector_is_given_back_as_it_was_even_when_the_load_fails() -> None:
    gc.disable()
    try:
        with pytest.raises(RuntimeError), collector_paused():
            raise RuntimeError("the broker went away")
        assert not gc.isenabled()
        assert gc.get_freeze_count() == 0
    finally:
        gc.enable()


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, 0)  # the calling thread's, on Linux


def test_the_load_is_offered_from_a_nicer_thread_whose_threads_inherit_it() -> None:
    driver = _nice()
    seen: dict[str, int] = {}

    def offer(stop: threading.Event) -> int:
        assert threading.current_thread().daemon  # Ctrl-C need not wait for the load
        seen["offering"] = _nice()
        sender = threading.Thread(target=lambda: seen.update(sender=_nice()))
        sender.start()  # as kafka-python starts its sender thread
        sender.join()
        return 42

    assert at_lower_priority(offer) == 42
    assert seen == {
        "offering": min(driver + DRIVER_NICENESS, MAX_NICE),
        "sender": min(driver + DRIVER_NICENESS, MAX_NICE),
    }
    assert _nice() == driver  # the driver itself, and what it starts next, keep theirs


def test_a_failing_load_raises_in_the_driver() -> None:
    def offer(stop: threading.Event) -> int:
        raise RuntimeError("the broker went away")

    with pytest.raises(RuntimeError, match="the broker went away"):
        at_lower_priority(offer)


def test_an_interrupted_driver_stops_the_load_before_it_moves_on() -> None:
    stops: list[threading.Event] = []
    sent: list[int] = []

    def offer(stop: threading.Event) -> int:
        stops.append(stop)
        for n in until_stopped(range(1_000_000), stop):
            sent.append(n)
            time.sleep(0.001)
        return len(sent)  # never: the load is stopped first

    threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGINT)).start()  # Ctrl-C
    with pytest.raises(KeyboardInterrupt):
        at_lower_priority(offer)

    assert [stop.is_set() for stop in stops] == [True]
    ended = len(sent)
    time.sleep(0.05)
    assert 0 < ended == len(sent) < 1_000_000  # it had begun, and stopped with the driver


def test_a_stopped_load_raises_instead_of_ending_as_if_complete() -> None:
    stop = threading.Event()
    messages = until_stopped(iter(range(10)), stop)

    assert [next(messages), next(messages)] == [0, 1]
    stop.set()
    with pytest.raises(LoadStopped):
        next(messages)

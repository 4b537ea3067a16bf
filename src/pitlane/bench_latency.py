"""Latency: from an event's `occurred_at` to its trigger on a campaign topic, at a set load.

The load is the benchmark's own mixed workload, published at a fraction of the rate
the worker(s) drained it at; every `PROBE_EVERY`-th message in it is a probe whose
trigger is timed. A probe is a telematics reading that fires a service-due trigger at
once: its car was linked beforehand to a fresh owner who consented to email, on a
service plan the reading's odometer puts within `service_due_km` of its end. Owners
and cars are prepared first and drained by the worker; then the mix is published at
the offered rate, each probe stamped with the moment it is handed to the producer, and
a plain consumer (partitions assigned, no group join) reads `campaign.service-due` and
matches every trigger to its probe through `caused_by`. Latency therefore includes the
producer's linger, the broker, the worker's batch and both Redis round trips, the
trigger's publication and the consumer's fetch: what a channel service would see.

Probes are a small share of the load on purpose. Each one fires a trigger and touches
two entities, several times the work of an average event, so a load made of probes
alone would be far heavier than the workload whose peak sets the rate.

The driver must not add latency of its own. kafka-python is pure Python, so a
producer and a consumer in one process share one GIL: the consumer's fetches and
timestamps waited for the producer, and on two vCPUs the producer could not keep the
offered rate. The consumer therefore runs in a process of its own (`TriggerWatch`),
and every probe is encoded before the clock starts, all but its `occurred_at`, which
is filled in as it is sent. While the load runs, the driver's garbage collector is
paused (`collector_paused`), and the load is sent from a thread of lower priority
(`at_lower_priority`), so that the driver takes only the CPU pitlane leaves.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any, Self, TypeVar

import orjson
from kafka import KafkaConsumer, TopicPartition

from pitlane.bench_harness import (
    Reporter,
    group_complete,
    input_partitions,
    new_group,
    owned_partitions,
    percentiles,
    redis_stack,
    start_workers,
    stop_workers,
    wait_until,
    workers_consumed,
    workers_cpu_seconds,
)
from pitlane.runtime.collector import BatchCollector
from pitlane.settings import Settings
from pitlane.simulate import SimulatedMessage, publish
from pitlane.topics import Topics
from pitlane.worker_process import WorkerProcess

_T = TypeVar("_T")

PLAN_KM = 15_000
"""Service plan of every probe car."""
DRAIN_TIMEOUT_S = 30.0
"""How long triggers may still arrive after the last reading was sent."""
FETCH_WAIT_MS = 10
"""The trigger consumer's longest fetch wait: about 6 ms added on tansu, 9 ms at p95."""
DRIVER_NICENESS = 10
"""How much nicer than the driver the thread offering the load runs (`at_lower_priority`)."""
MAX_NICE = 19
"""The lowest priority Linux has."""
STOP_TIMEOUT_S = 2.0
"""How long an interrupted load may take to end before the driver tears the stack down."""
PROBE_EVERY = 20
"""One message in this many of the offered load is a timed probe (5 %)."""
WATCH_START_TIMEOUT_S = 30.0
"""How long the trigger consumer's process may take to start and poll once."""
WATCH_STOP_TIMEOUT_S = 10.0
"""How long it may take to stop when asked, and to answer once its wait is over, before
it is killed or given up on."""


@dataclass(frozen=True)
class Latency:
    """One offered load: what was sent, what arrived, and how late (milliseconds)."""

    load_fraction: float
    offered_per_s: float
    achieved_per_s: float
    offered: int
    """Messages of the load sent, probes included."""
    sent: int
    """Probes sent; `expected` probes were planned and `arrived` triggers came back."""
    expected: int
    arrived: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    worker_cpu_s_per_100k: float | None
    """CPU the worker(s) spent per 100,000 records they consumed while the load was sent
    (None if they consumed none): compare with the main run's drain."""
    worker_vcpu: float
    """The worker(s)' CPU while the load was sent, in vCPUs (1.0: one vCPU all the time)."""
    driver_vcpu: float
    """This process's CPU meanwhile (the producer offering the load, the progress bar):
    on one machine it competes with the worker(s) for the same cores."""


def measure_latency(
    background: Sequence[SimulatedMessage],
    topics: Topics,
    settings: Settings,
    workers: int,
    batch_size: int,
    load_fraction: float,
    peak_per_s: float,
    seconds: float,
    reporter: Reporter,
    timeout_s: float,
    redis_cluster: bool = False,
) -> Latency:
    """Offer `load_fraction` of `peak_per_s` for `seconds`: `background`, with probes mixed in.

    `peak_per_s` is the rate `workers` workers drained `background` at; the same number
    serve the load. A load that needs more background than there is ends early.
    """
    rate = load_fraction * peak_per_s
    # Each probe comes after PROBE_EVERY - 1 background messages, as many as there are.
    fitting = len(background) // (PROBE_EVERY - 1)
    count = max(1, min(round(rate * seconds) // PROBE_EVERY, fitting))
    total = count * PROBE_EVERY
    probes = [(f"LAT{index:07d}", f"LATVIN{index:011d}") for index in range(count)]
    with redis_stack(topics, redis_cluster) as stack:
        processes = start_workers(
            stack, workers, new_group("bench-latency"), batch_size, redis_cluster
        )
        try:
            reporter.phase(f"latency at {load_fraction:.0%} of peak: worker(s) joining")
            expected = input_partitions(topics)
            wait_until(
                lambda: group_complete([owned_partitions(w) for w in processes], expected),
                timeout_s,
                "a complete consumer group",
                processes,
            )
            reporter.phase(f"preparing {count:,} consenting owners and their cars", 2 * count)
            publish(stack.bootstrap_servers, _owners(probes), on_sent=reporter.advance)
            wait_until(
                lambda: workers_consumed(processes) >= 2 * count,
                timeout_s,
                "all owners and cars applied",
                processes,
            )
            readings = _encode_readings(probes, PLAN_KM - settings.service_due_km / 2)
            sent_at: dict[str, float] = {}
            with TriggerWatch(stack.bootstrap_servers, topics.topic("service_due")) as watch:
                reporter.phase(
                    f"offering {rate:,.0f} events/s for {total / rate:.3g} s, "
                    f"{count:,} of them probes",
                    total,
                )
                with collector_paused():
                    started = time.monotonic()
                    before = _Usage.now(processes)
                    offered = at_lower_priority(
                        lambda stop: (
                            publish(
                                stack.bootstrap_servers,
                                until_stopped(_mixed(background, readings, sent_at), stop),
                                on_sent=reporter.advance,
                                pace=rate,
                            ).total
                        )
                    )
                    sending_s = time.monotonic() - started
                    usage = _Usage.now(processes).since(before)
                reporter.phase("waiting for the last triggers")
                arrived = watch.wait_for(sent_at.keys(), DRAIN_TIMEOUT_S)
        finally:
            stop_workers(processes)
    delays = [(arrived[event] - sent) * 1000 for event, sent in sent_at.items() if event in arrived]
    spread = percentiles(delays)
    return Latency(
        load_fraction=load_fraction,
        offered_per_s=round(rate, 1),
        achieved_per_s=round(offered / sending_s, 1),
        offered=offered,
        sent=len(sent_at),
        expected=count,
        arrived=len(delays),
        p50_ms=None if spread is None else round(spread.p50, 1),
        p95_ms=None if spread is None else round(spread.p95, 1),
        p99_ms=None if spread is None else round(spread.p99, 1),
        max_ms=None if spread is None else round(spread.max, 1),
        worker_cpu_s_per_100k=(
            round(usage.worker_cpu_s / usage.consumed * 100_000, 2) if usage.consumed else None
        ),
        worker_vcpu=round(usage.worker_cpu_s / sending_s, 2),
        driver_vcpu=round(usage.driver_cpu_s / sending_s, 2),
    )


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Keep the driver's garbage collector from stopping its producer while a load runs.

    The driver holds the whole workload, hundreds of thousands of objects, and a full
    collection scans them all: three took 134-141 ms each in one 10 s load at 7,000
    events/s. For that long nothing reached the broker (the worker's fetches came back
    empty), then the producer caught up in a burst, and every probe in the burst was
    charged the pause as if pitlane had spent it. What exists is frozen out of reach
    of the collector and collection waits for the end of the load; the load's own
    garbage is freed by reference counting meanwhile: the worker's own policy, without
    its collections between batches.
    """
    collector = BatchCollector()
    collector.start()
    try:
        yield
    finally:
        collector.stop()


def at_lower_priority(offer: Callable[[threading.Event], _T]) -> _T:
    """Run `offer` in a thread that yields the CPU to the system under test.

    On one machine the load generator competes with the worker, the broker and Redis
    for the same cores, which it would not do from a machine of its own. The thread
    runs `DRIVER_NICENESS` steps nicer than the driver, and so do the threads it
    starts (kafka-python's sender): when every core is busy, pitlane's processes are
    served first. It still gets what they leave, which `achieved_per_s` shows. Linux
    keeps a nice value per thread, so the driver's other threads and the processes it
    starts later (the trigger watcher, whose timestamps must not wait) keep theirs.

    `offer` is handed an event to heed: if the driver is interrupted meanwhile
    (Ctrl-C), it is set, and the thread gets `STOP_TIMEOUT_S` to end before the driver
    moves on to tearing the stack down; it is a daemon, so it cannot keep the driver
    alive.
    """
    outcome: Future[_T] = Future()
    stop = threading.Event()

    def run() -> None:
        try:
            _lower_own_priority()
            outcome.set_result(offer(stop))
        except BaseException as error:
            outcome.set_exception(error)

    thread = threading.Thread(target=run, name="offered-load", daemon=True)
    thread.start()
    try:
        return outcome.result()
    finally:
        stop.set()
        thread.join(STOP_TIMEOUT_S)


class LoadStopped(Exception):
    """The driver was interrupted while it offered a load."""


def until_stopped(messages: Iterable[_T], stop: threading.Event) -> Iterator[_T]:
    """`messages`, until `stop` is set: then `LoadStopped` is raised.

    An exception rather than a plain end, so that `publish` skips its final flush and
    goes straight to closing the producer, which first unhooks kafka-python's exit
    handler. On Ctrl-C the embedded broker is already being stopped: a flush would wait
    for acknowledgements that never come, and at exit that handler would report that
    its own flush timed out. The abandoned daemon thread ends with the process.
    """
    for message in messages:
        if stop.is_set():
            raise LoadStopped("the driver was interrupted")
        yield message


def _lower_own_priority() -> None:
    nice = os.getpriority(os.PRIO_PROCESS, 0)  # this thread's, on Linux
    os.setpriority(os.PRIO_PROCESS, 0, min(nice + DRIVER_NICENESS, MAX_NICE))


@dataclass(frozen=True, slots=True)
class _Usage:
    """CPU spent so far by the workers and by this (the driver's) process, and the
    records the workers consumed: read before and after the load to tell what it cost."""

    worker_cpu_s: float
    driver_cpu_s: float
    consumed: int

    @classmethod
    def now(cls, workers: Sequence[WorkerProcess]) -> _Usage:
        return cls(
            workers_cpu_seconds(workers),
            time.process_time(),
            workers_consumed(workers),
        )

    def since(self, earlier: _Usage) -> _Usage:
        return _Usage(
            self.worker_cpu_s - earlier.worker_cpu_s,
            self.driver_cpu_s - earlier.driver_cpu_s,
            self.consumed - earlier.consumed,
        )


def _mixed(
    background: Sequence[SimulatedMessage],
    readings: list[_EncodedReading],
    sent_at: dict[str, float],
) -> Iterator[SimulatedMessage]:
    """The background in order with a stamped probe in place of every `PROBE_EVERY`-th."""
    probes = _stamped(readings, sent_at)
    others = iter(background)
    for index in range(len(readings) * PROBE_EVERY):
        if index % PROBE_EVERY == PROBE_EVERY - 1:
            yield next(probes)
        else:
            yield next(others)


def _stamp(epoch_s: float) -> str:
    moment = datetime.fromtimestamp(epoch_s, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event(topic: str, key: str, body: dict[str, object]) -> SimulatedMessage:
    return SimulatedMessage(topic, key.encode(), orjson.dumps(body))


def _owners(probes: list[tuple[str, str]]) -> Iterator[SimulatedMessage]:
    """Per probe: the owner's email consent and the car linked to them, a minute ago."""
    earlier = _stamp(time.time() - 60)
    for customer_id, vin in probes:
        common = {"occurred_at": earlier, "customer_id": customer_id}
        yield _event(
            "identity.events",
            customer_id,
            {
                "event_id": str(uuid.uuid4()),
                "type": "identity.consent_updated",
                "channel": "email",
                "granted": True,
                **common,
            },
        )
        yield _event(
            "identity.events",
            customer_id,
            {
                "event_id": str(uuid.uuid4()),
                "type": "identity.vehicle_linked",
                "vin": vin,
                "model_code": "ID4-PRO",
                "service_interval_km": PLAN_KM,
                "service_interval_months": 12,
                **common,
            },
        )


@dataclass(frozen=True, slots=True)
class _EncodedReading:
    """A probe's reading as JSON, split where its `occurred_at` goes."""

    event_id: str
    key: bytes
    head: bytes
    tail: bytes


_UNSTAMPED = "0000-00-00T00:00:00.000Z"
"""Stands in for `occurred_at` while a reading is encoded; the JSON is split around it."""


def _encode_readings(probes: list[tuple[str, str]], odometer_km: float) -> list[_EncodedReading]:
    """One due reading per car, encoded now so that sending one costs only its stamp."""
    encoded: list[_EncodedReading] = []
    for _, vin in probes:
        event_id = str(uuid.uuid4())
        body = {
            "event_id": event_id,
            "type": "telematics.reading",
            "occurred_at": _UNSTAMPED,
            "vin": vin,
            "odometer_km": odometer_km,
        }
        head, _, tail = orjson.dumps(body).partition(_UNSTAMPED.encode())
        encoded.append(_EncodedReading(event_id, vin.encode(), head, tail))
    return encoded


def _stamped(
    readings: list[_EncodedReading], sent_at: dict[str, float]
) -> Iterator[SimulatedMessage]:
    """Each reading, stamped (and remembered) as it is handed to the producer."""
    for reading in readings:
        # Whole milliseconds, as the wire format carries them.
        now = round(time.time(), 3)
        sent_at[reading.event_id] = now
        value = reading.head + _stamp(now).encode() + reading.tail
        yield SimulatedMessage("telematics.events", reading.key, value)


class TriggerWatch:
    """Reads a campaign topic in a process of its own and notes when each trigger arrived.

    Entering starts the process and returns once its consumer has polled, so nothing
    sent afterwards waits for a connection; leaving stops it in every case (killed if
    it does not stop in time). Arrival times are the watcher's `time.time()` when a
    fetch returned, comparable with the driver's wall clock on the same machine.
    """

    def __init__(self, bootstrap_servers: list[str], topic: str) -> None:
        spawn = multiprocessing.get_context("spawn")
        self._connection, self._child_end = spawn.Pipe()
        self._process = spawn.Process(
            target=_watch,
            args=(bootstrap_servers, topic, self._child_end),
            name="trigger-watch",
            daemon=True,
        )

    def __enter__(self) -> Self:
        try:
            self._process.start()
            # Once only the watcher holds its end, its exit reads here as end of file.
            self._child_end.close()
            if not self._connection.poll(WATCH_START_TIMEOUT_S):
                raise TimeoutError("the trigger consumer did not start polling")
            self._answer("start polling")
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop()

    def wait_for(self, expected: Iterable[str], timeout_s: float) -> dict[str, float]:
        """Arrival times of the triggers `expected` events caused, once all came or time is up.

        The watcher ends when it has answered, so this is asked once.
        """
        self._connection.send((list(expected), timeout_s))
        if not self._connection.poll(timeout_s + WATCH_STOP_TIMEOUT_S):
            raise TimeoutError("the trigger consumer did not report its arrivals")
        arrived: dict[str, float] = self._answer("report its arrivals")
        return arrived

    def _answer(self, what: str) -> Any:
        try:
            return self._connection.recv()
        except EOFError:
            self._process.join(WATCH_STOP_TIMEOUT_S)
            code = self._process.exitcode
            raise RuntimeError(
                f"the trigger consumer exited (code {code}) before it could {what}; "
                "its traceback is on stderr"
            ) from None

    def _stop(self) -> None:
        if self._process.is_alive():
            # It may have ended since: then there is nobody to read the request.
            with contextlib.suppress(OSError):
                self._connection.send(None)
            self._process.join(WATCH_STOP_TIMEOUT_S)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._connection.close()


def _watch(bootstrap_servers: list[str], topic: str, driver: Connection) -> None:
    """The watcher process: poll, note arrivals, and answer `TriggerWatch` through `driver`.

    It says once that it polls, then waits for a request: None (stop) or the expected
    event ids and a timeout, which it answers with their arrival times before it ends.
    It also ends when the driver is gone (end of file on `driver`).
    """
    # Ctrl-C reaches the whole process group; the driver stops this process itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        # tansu answers a fetch when its wait runs out rather than when data comes,
        # so the wait is what this consumer adds to every trigger's latency.
        fetch_max_wait_ms=FETCH_WAIT_MS,
    )
    try:
        found = consumer.partitions_for_topic(topic)
        if not found:
            raise ValueError(f"topic {topic!r} has no partitions")
        partitions = [TopicPartition(topic, p) for p in sorted(found)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        arrived: dict[str, float] = {}
        _note_arrivals(consumer, arrived)
        driver.send("polling")
        while not driver.poll():
            _note_arrivals(consumer, arrived)
        request = driver.recv()
        if request is None:
            return
        expected, timeout_s = request
        deadline = time.monotonic() + timeout_s
        missing = set(expected) - arrived.keys()
        while missing and time.monotonic() < deadline:
            missing -= _note_arrivals(consumer, arrived)
        driver.send({event: arrived[event] for event in expected if event in arrived})
    except (EOFError, BrokenPipeError):
        return
    finally:
        consumer.close()


def _note_arrivals(consumer: KafkaConsumer, arrived: dict[str, float]) -> set[str]:
    """Poll once and note when each event's first trigger came; returns those events."""
    batches = consumer.poll(timeout_ms=100)
    received = time.time()
    new: set[str] = set()
    for records in batches.values():
        for record in records:
            for event_id in orjson.loads(record.value)["caused_by"]:
                if event_id not in arrived:
                    arrived[event_id] = received
                    new.add(event_id)
    return new

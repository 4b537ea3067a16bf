"""Latency: from an event's `occurred_at` to its trigger on a campaign topic, at a set load.

Every probe is a telematics reading that fires a service-due trigger at once: its car
was linked beforehand to a fresh owner who consented to email, on a service plan the
reading's odometer puts within `service_due_km` of its end. Owners and cars are
prepared first and drained by the worker; then the readings are published at the
offered rate, each stamped with the moment it is handed to the producer, and a plain
consumer (partitions assigned, no group join) reads `campaign.service-due` and matches
every trigger to its reading through `caused_by`. Latency therefore includes the
producer's linger, the broker, the worker's batch and both Redis round trips, the
trigger's publication and the consumer's fetch: what a channel service would see.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from kafka import KafkaConsumer, TopicPartition

from pitlane.bench_harness import (
    Reporter,
    consumed,
    group_complete,
    input_partitions,
    new_group,
    owned_partitions,
    percentiles,
    start_workers,
    stop_workers,
    wait_until,
)
from pitlane.settings import Settings
from pitlane.simulate import SimulatedMessage, publish
from pitlane.stack.embedded import EmbeddedStack
from pitlane.topics import Topics

PLAN_KM = 15_000
"""Service plan of every probe car."""
DRAIN_TIMEOUT_S = 30.0
"""How long triggers may still arrive after the last reading was sent."""
FETCH_WAIT_MS = 10
"""The trigger consumer's longest fetch wait: about 6 ms added on tansu, 9 ms at p95."""


@dataclass(frozen=True)
class Latency:
    """One offered load: what was sent, what arrived, and how late (milliseconds)."""

    load_fraction: float
    offered_per_s: float
    achieved_per_s: float
    sent: int
    expected: int
    arrived: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None


def measure_latency(
    topics: Topics,
    settings: Settings,
    workers: int,
    batch_size: int,
    load_fraction: float,
    peak_per_s: float,
    seconds: float,
    reporter: Reporter,
    timeout_s: float,
) -> Latency:
    """Offer `load_fraction` of `peak_per_s` trigger-firing readings for `seconds`.

    `peak_per_s` is the rate `workers` workers reached; the same number serve the load.
    """
    rate = load_fraction * peak_per_s
    count = max(1, round(rate * seconds))
    probes = [(f"LAT{index:07d}", f"LATVIN{index:011d}") for index in range(count)]
    with EmbeddedStack(topics) as stack:
        processes = start_workers(stack, workers, new_group("bench-latency"), batch_size)
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
                lambda: sum(consumed(w.stats()) for w in processes) >= 2 * count,
                timeout_s,
                "all owners and cars applied",
                processes,
            )
            odometer = PLAN_KM - settings.service_due_km / 2
            sent_at: dict[str, float] = {}
            with _TriggerWatch(stack.bootstrap_servers, topics.topic("service_due")) as watch:
                reporter.phase(f"offering {rate:,.0f} readings/s for {seconds:g} s", count)
                started = time.monotonic()
                publish(
                    stack.bootstrap_servers,
                    _readings(probes, odometer, sent_at),
                    on_sent=reporter.advance,
                    pace=rate,
                )
                sending_s = time.monotonic() - started
                reporter.phase("waiting for the last triggers")
                arrived = watch.wait_for(sent_at.keys(), DRAIN_TIMEOUT_S)
        finally:
            stop_workers(processes)
    delays = [(arrived[event] - sent) * 1000 for event, sent in sent_at.items() if event in arrived]
    spread = percentiles(delays)
    return Latency(
        load_fraction=load_fraction,
        offered_per_s=round(rate, 1),
        achieved_per_s=round(len(sent_at) / sending_s, 1),
        sent=len(sent_at),
        expected=count,
        arrived=len(delays),
        p50_ms=None if spread is None else round(spread.p50, 1),
        p95_ms=None if spread is None else round(spread.p95, 1),
        p99_ms=None if spread is None else round(spread.p99, 1),
        max_ms=None if spread is None else round(spread.max, 1),
    )


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


def _readings(
    probes: list[tuple[str, str]], odometer_km: float, sent_at: dict[str, float]
) -> Iterator[SimulatedMessage]:
    """One due reading per car, stamped (and remembered) as it is handed to the producer."""
    for _, vin in probes:
        # Whole milliseconds, as the wire format carries them.
        now = round(time.time(), 3)
        event_id = str(uuid.uuid4())
        sent_at[event_id] = now
        yield _event(
            "telematics.events",
            vin,
            {
                "event_id": event_id,
                "type": "telematics.reading",
                "occurred_at": _stamp(now),
                "vin": vin,
                "odometer_km": odometer_km,
            },
        )


class _TriggerWatch:
    """Reads a campaign topic in a thread and notes when each trigger arrived."""

    def __init__(self, bootstrap_servers: list[str], topic: str) -> None:
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            enable_auto_commit=False,
            # tansu answers a fetch when its wait runs out rather than when data comes,
            # so the wait is what this consumer adds to every trigger's latency.
            fetch_max_wait_ms=FETCH_WAIT_MS,
        )
        partitions = self._consumer.partitions_for_topic(topic) or set()
        self._partitions = [TopicPartition(topic, p) for p in sorted(partitions)]
        self._arrived: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._polling = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trigger-watch", daemon=True)

    def __enter__(self) -> _TriggerWatch:
        self._consumer.assign(self._partitions)
        self._consumer.seek_to_beginning(*self._partitions)
        self._thread.start()
        if not self._polling.wait(30):
            raise TimeoutError("the trigger consumer did not start polling")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            batches = self._consumer.poll(timeout_ms=100)
            received = time.time()
            self._polling.set()
            with self._lock:
                for records in batches.values():
                    for record in records:
                        for event_id in orjson.loads(record.value)["caused_by"]:
                            self._arrived.setdefault(event_id, received)

    def wait_for(self, expected: Iterable[str], timeout_s: float) -> dict[str, float]:
        """Arrival times of the triggers `expected` events caused, once all came or time is up."""
        wanted = set(expected)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if wanted <= self._arrived.keys():
                    break
            time.sleep(0.05)
        with self._lock:
            return {event: at for event, at in self._arrived.items() if event in wanted}

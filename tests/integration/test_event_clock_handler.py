"""The event clock's handler and store against a real Redis: the lease that makes one
worker the writer, deadlines fired between events at their own times, and positions
that let a new leader go on without applying anything twice."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from pitlane.adapters.redis_store import LEASE_KEY, Fence, LeaseLost, RedisStore, Write
from pitlane.domain import entities
from pitlane.event_clock import Position
from pitlane.ingest import BatchHandler
from pitlane.settings import Settings
from pitlane.stack.embedded import EmbeddedStack
from pitlane.topics import load_topics
from wire import Sink, event, records, unique, vin

pytestmark = pytest.mark.integration

IDENTITY = "identity.events"


@pytest.fixture
async def store(embedded_stack: EmbeddedStack) -> AsyncIterator[RedisStore]:
    redis_store = RedisStore(embedded_stack.redis_url.rsplit("/", 1)[0] + "/8")
    await redis_store.start()
    await redis_store.redis.flushdb()  # one lease and one set of positions per test
    yield redis_store
    await redis_store.close()


async def _leader(
    store: RedisStore,
    sink: Sink,
    partitions: dict[str, int],
    token: str = "leader",
    **overrides: Any,
) -> BatchHandler:
    """A handler leading the event clock, as `token`, over `partitions` (name ->
    records in it), with settings `overrides`."""
    settings = Settings(clock="event", idle_partition_s=1, **overrides)
    handler = BatchHandler(settings, store, sink, load_topics(settings.topics_file))
    assert await store.hold_lease(LEASE_KEY, token, 10, take=True)
    handler.lead(token)
    stored = await store.positions()
    for name in partitions:
        position = Position.decode(stored[name]) if name in stored else None
        handler.event_clock.restore(name, position, 0)
    return handler


async def _run_to_end(handler: BatchHandler, batch: list[Any], partitions: dict[str, int]) -> None:
    """Read `batch`, let every partition go idle, and apply everything."""
    await handler.read(batch, datetime.now(UTC))
    for name, end in partitions.items():
        handler.event_clock.saw_end(name, end, now=0)
    await handler.advance(datetime.now(UTC), monotonic=10)


async def test_the_lease_has_one_holder_and_a_renewal_never_takes_a_lapsed_one(
    store: RedisStore,
) -> None:
    assert await store.hold_lease(LEASE_KEY, "a", 10, take=True)
    assert not await store.hold_lease(LEASE_KEY, "b", 10, take=True)
    assert await store.hold_lease(LEASE_KEY, "a", 10, take=False)

    await store.drop_lease(LEASE_KEY, "b")  # not b's to drop
    assert not await store.hold_lease(LEASE_KEY, "b", 10, take=True)
    await store.drop_lease(LEASE_KEY, "a")

    assert not await store.hold_lease(LEASE_KEY, "a", 10, take=False)
    assert await store.hold_lease(LEASE_KEY, "b", 10, take=True)


async def test_a_write_under_a_lost_lease_stores_nothing(store: RedisStore) -> None:
    key = entities.customer(unique("C"))
    await _leader(store, Sink(), {}, token="first")
    await store.drop_lease(LEASE_KEY, "first")
    assert await store.hold_lease(LEASE_KEY, "second", 10, take=True)

    with pytest.raises(LeaseLost):
        await store.write([Write(key, 0, {"n": 1})], fence=Fence(LEASE_KEY, "first"))

    assert (await store.load([key]))[key].state is None


async def test_a_deadline_fires_at_its_own_time_before_a_later_event_in_the_same_step(
    store: RedisStore,
) -> None:
    """The car comes due on 1 November; its owner withdraws consent on 15 November.
    Both are in one step: the reminder must still go out, as it did live."""
    customer, car = unique("C"), vin()
    batch = records(
        IDENTITY,
        event(
            "identity.consent_updated",
            customer_id=customer,
            channel="email",
            granted=True,
            occurred_at="2026-09-30T08:00:00Z",
        ),
        event(
            "identity.vehicle_linked",
            customer_id=customer,
            vin=car,
            model_code="ID4",
            first_registered_on="2025-12-01",
            occurred_at="2026-10-01T08:00:00Z",
        ),
        event(
            "identity.consent_updated",
            customer_id=customer,
            channel="email",
            granted=False,
            occurred_at="2026-11-15T08:00:00Z",
        ),
    )
    partitions = {f"{IDENTITY}:0": len(batch)}
    sink = Sink()

    await _run_to_end(await _leader(store, sink, partitions), batch, partitions)

    triggers = sink.on("campaign.service-due")
    assert [t["fired_at"] for t in triggers] == ["2026-11-01T00:00:00Z"]
    assert triggers[0]["channels"] == ["email"]
    assert sink.on("pitlane.suppressed") == []


async def test_a_new_leader_goes_on_from_the_stored_positions_and_applies_nothing_twice(
    store: RedisStore,
) -> None:
    customer = unique("C")
    clicks = [
        event(
            "configurator.option_selected",
            customer_id=customer,
            session_id="S1",
            model_code="ID4",
            category="wheels",
            option_code=f"W{i}",
            occurred_at=f"2026-11-02T08:0{i}:00Z",
        )
        for i in range(6)
    ]
    batch = records("configurator.events", *clicks)
    partitions = {"configurator.events:0": len(batch)}
    first = await _leader(store, Sink(), partitions, token="first")
    await first.read(batch[:4], datetime.now(UTC))
    first.event_clock.saw_end("configurator.events:0", 4, now=0)
    await first.advance(datetime.now(UTC), monotonic=10)  # all four applied
    await store.drop_lease(LEASE_KEY, "first")

    second = await _leader(store, Sink(), partitions, token="second")
    skipped = [second.event_clock.to_read("configurator.events:0", r.offset) for r in batch]
    await _run_to_end(second, batch, partitions)  # Kafka redelivers from the start

    loaded = await store.load([entities.customer(customer)])
    profile = loaded[entities.customer(customer)].state
    assert skipped == [False] * 4 + [True] * 2
    assert profile is not None
    assert profile["sessions"]["S1"]["n"] == 6
    assert Position.decode((await store.positions())["configurator.events:0"]).next == 6


async def test_events_wait_for_the_watermark_and_the_position_for_the_first_held(
    store: RedisStore,
) -> None:
    customer = unique("C")
    early, late, moves_watermark = (
        event(
            "configurator.option_selected",
            customer_id=who,
            session_id="S1",
            model_code="ID4",
            category="wheels",
            option_code=code,
            occurred_at=when,
        )
        for who, code, when in (
            (customer, "A", "2026-11-02T08:00:00Z"),
            (customer, "B", "2026-11-02T08:00:30Z"),
            (unique("C"), "X", "2026-11-02T08:01:10Z"),
        )
    )
    name = "configurator.events:0"
    handler = await _leader(store, Sink(), {name: 3}, allowed_lateness_s=60)

    await handler.read(records("configurator.events", early, late), datetime.now(UTC))
    await handler.advance(datetime.now(UTC), monotonic=0)
    nothing = await store.positions()
    await handler.read(records("configurator.events", moves_watermark, start=2), datetime.now(UTC))
    await handler.advance(datetime.now(UTC), monotonic=0)

    loaded = await store.load([entities.customer(customer)])
    profile = loaded[entities.customer(customer)].state
    assert nothing == {}
    assert profile is not None
    assert profile["sessions"]["S1"]["n"] == 1  # 08:00:30 is within 60 s of 08:01:10
    first_click = datetime(2026, 11, 2, 8, tzinfo=UTC).timestamp()
    assert Position.decode((await store.positions())[name]) == Position(1, first_click)
    assert handler.event_clock.held_count == 2

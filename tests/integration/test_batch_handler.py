"""The batch handler against a real Redis, with an in-memory sink for what it produces.

Covers what is hard to provoke through a whole worker: a poisonous event, Redis going
away mid-batch, two workers racing on one customer, an erased customer's visitor, and
the store's all-or-nothing write.
"""

from __future__ import annotations

import asyncio
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import RedisError

from pitlane.adapters.redis_store import OutboxEntry, RedisStore, VersionConflict, Write, redis_key
from pitlane.domain import entities
from pitlane.domain.apply import _HANDLERS
from pitlane.ingest import BatchHandler
from pitlane.settings import Settings
from pitlane.stack.embedded import EmbeddedStack, find_redis_server, free_port
from pitlane.topics import load_topics
from wire import Sink, at, event, option_click, pausing_first_write, records, unique, vin

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_url(embedded_stack: EmbeddedStack) -> str:
    return embedded_stack.redis_url.rsplit("/", 1)[0] + "/5"


def _handler(store: RedisStore, sink: Sink, **settings: Any) -> BatchHandler:
    return BatchHandler(Settings(**settings), store, sink, load_topics(Settings().topics_file))


async def _session(store: RedisStore, customer: str) -> dict[str, Any]:
    loaded = await store.load([entities.customer(customer)])
    profile = loaded[entities.customer(customer)].state
    assert profile is not None
    return dict(profile["sessions"]["S1"])


async def test_a_poisonous_event_goes_to_deadletter_and_the_rest_apply(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    customer = unique("C")
    poison = option_click(customer, "BAD")
    real_apply = _HANDLERS["configurator.option_selected"]

    def apply_or_fail(step: Any) -> None:
        # Patched where `apply` dispatches, a dict it reads at run time, so that the
        # compiled build (whose calls between modules are bound when compiled) fails too.
        if step.event.event_id == poison["event_id"]:
            raise ZeroDivisionError("a defect this event triggers")
        real_apply(step)

    monkeypatch.setitem(_HANDLERS, "configurator.option_selected", apply_or_fail)
    sink = Sink()
    handler = _handler(store, sink)

    result = await handler.handle(
        records(
            "configurator.events", option_click(customer, "A"), poison, option_click(customer, "B")
        ),
        datetime.now(UTC),
    )

    letters = sink.on("pitlane.deadletter")
    assert result.dead_letters == 1
    assert [letter["offset"] for letter in letters] == [1]
    assert "ZeroDivisionError" in letters[0]["reason"]
    assert (await _session(store, customer))["n"] == 2


async def test_a_batch_redelivered_after_a_crash_changes_nothing(store: RedisStore) -> None:
    """More events of one customer than its id window keeps, written but not committed
    when the worker died: the restarted worker reads them all again."""
    customer = unique("C")
    burst = records(
        "configurator.events", *(option_click(customer, f"ACC-{i}") for i in range(40)), start=100
    )
    await _handler(store, Sink()).handle(burst, datetime.now(UTC))

    restarted = _handler(store, Sink())
    again = await restarted.handle(burst, datetime.now(UTC))

    assert again.duplicates == 40
    assert (await _session(store, customer))["n"] == 40


async def test_an_erased_customers_visitor_is_not_rebuilt_by_a_redelivery(
    store: RedisStore,
) -> None:
    """The worker erased a customer, then died before committing: Kafka redelivers the
    visitor's clicks, the login and the erasure from the same offsets, first the
    configurator partition alone (another worker may own it), then everything."""
    customer, visitor = unique("C"), unique("A")
    clicks = records(
        "configurator.events",
        *(
            event(
                "configurator.option_selected",
                anonymous_id=visitor,
                session_id="S1",
                model_code="ID4-PRO",
                category="accessory",
                option_code=code,
                occurred_at=at(-60),
            )
            for code in "ABC"
        ),
        start=200,
    )
    login, erasure = records(
        "identity.events",
        event("identity.customer_identified", customer_id=customer, anonymous_id=visitor),
        event("identity.customer_erased", customer_id=customer),
        start=70,
    )
    handler = _handler(store, Sink())
    await handler.handle([*clicks, login], datetime.now(UTC))
    assert await store.redis.keys(f"pitlane:anon:*{visitor}*") != []
    await handler.handle([erasure], datetime.now(UTC))

    for redelivered in (clicks, [*clicks, login, erasure]):
        result = await _handler(store, Sink()).handle(redelivered, datetime.now(UTC))

        assert await store.redis.keys(f"pitlane:anon:*{visitor}*") == []
        assert await store.redis.keys(f"pitlane:cust:*{customer}*") == []
        assert result.notes["dropped: visitor erased"] == len(clicks)
    salt = Settings().erasure_salt.get_secret_value()
    tombstone = redis_key(entities.erased_marker(visitor, salt, "anonymous"))
    assert await store.redis.exists(tombstone) == 1


async def test_committed_events_are_forgotten_on_the_next_write(store: RedisStore) -> None:
    customer = unique("C")
    handler = _handler(store, Sink())
    first = [option_click(customer, f"ACC-{i}") for i in range(3)]
    await handler.handle(records("configurator.events", *first, start=10), datetime.now(UTC))
    handler.committed({("configurator.events", 0): 13})

    last = option_click(customer, "LAST")
    await handler.handle(records("configurator.events", last, start=13), datetime.now(UTC))

    loaded = await store.load([entities.customer(customer)])
    profile = loaded[entities.customer(customer)].state
    assert profile is not None
    assert profile["pend"] == {"configurator.events:0": {entities.event_tag(last["event_id"]): 13}}


async def test_redis_outage_raises_and_dead_letters_nothing(tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen(
        [find_redis_server(), "--port", str(port), "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    outage_store = RedisStore(f"redis://127.0.0.1:{port}/0")
    for _ in range(50):
        try:
            await outage_store.start()
            break
        except (RedisError, OSError):
            await asyncio.sleep(0.1)
    server.kill()
    server.wait()
    sink = Sink()

    with pytest.raises((RedisError, OSError)):
        await _handler(outage_store, sink).handle(
            records("configurator.events", option_click(unique("C"), "A")), datetime.now(UTC)
        )

    assert sink.messages == []
    await outage_store.close()


async def test_two_workers_racing_on_one_customer_both_land(
    store: RedisStore, redis_url: str
) -> None:
    customer = unique("C")
    slow = pausing_first_write(RedisStore)(redis_url)
    await slow.start()
    racing = asyncio.create_task(
        _handler(slow, Sink()).handle(
            records("configurator.events", option_click(customer, "A")), datetime.now(UTC)
        )
    )
    await slow.reached.wait()
    await _handler(store, Sink()).handle(
        records("configurator.events", option_click(customer, "B")), datetime.now(UTC)
    )
    slow.release.set()
    result = await racing
    await slow.close()

    assert result.conflicts >= 1
    assert (await _session(store, customer))["n"] == 2


async def test_version_conflict_is_reported_and_nothing_is_written(store: RedisStore) -> None:
    key = entities.customer(unique("C"))
    await store.write([Write(key, 0, {"kind": "customer", "id": key.id})])

    with pytest.raises(VersionConflict):
        await store.write([Write(key, 0, {"kind": "customer", "id": "overwritten"})])

    loaded = await store.load([key])
    assert loaded[key].version == 1
    assert loaded[key].state == {"kind": "customer", "id": key.id}


async def test_write_stores_states_deadlines_positions_and_outbox_together(
    store: RedisStore,
) -> None:
    car, customer, other = (
        entities.vehicle(unique("V")),
        entities.customer(unique("C")),
        entities.customer(unique("C")),
    )
    partition = f"{unique('topic')}:0"
    entry = OutboxEntry(unique("entry"), b"messages", 1.0, "writer")
    await store.write(
        [Write(car, 0, {"kind": "vehicle"}), Write(customer, 0, {"kind": "customer"}, 60)],
        {car: 123.5, customer: None, other: 99.0},
        positions={partition: b'{"next": 5}'},
        outbox=entry,
    )

    assert await store.deadline(car) == 123.5
    assert await store.deadline(other) == 99.0
    assert await store.deadline(customer) is None
    assert 0 < await store.redis.ttl(redis_key(customer)) <= 60
    assert (await store.positions())[partition] == b'{"next": 5}'
    assert await store.claim_outbox(1.0, 2.0, 10, "taker") == [(entry.id, b"messages")]

    with pytest.raises(VersionConflict):  # all or nothing
        await store.write(
            [Write(car, 1, None), Write(customer, 0, {"kind": "customer"})],
            {car: None},
            positions={partition: b'{"next": 9}'},
        )

    assert (await store.load([car]))[car].state == {"kind": "vehicle"}
    assert await store.deadline(car) == 123.5
    assert (await store.positions())[partition] == b'{"next": 5}'
    # Leave nothing a sweep in another test of this database would find.
    await store.write([Write(car, 1, None), Write(customer, 1, None)], {car: None, other: None})
    await store.drop_outbox([entry.id])


async def test_a_due_deadline_fires_on_exactly_one_of_two_sweeping_workers(
    store: RedisStore, redis_url: str
) -> None:
    customer = unique("C")
    consent = event("identity.consent_updated", customer_id=customer, channel="email", granted=True)
    clicks = [option_click(customer, code, occurred_at="2026-11-02T08:00:00Z") for code in "ABC"]
    sink = Sink()
    await _handler(store, sink, abandonment_window_s=86_400 * 365 * 10).handle(
        records("identity.events", consent) + records("configurator.events", *clicks),
        datetime.now(UTC),
    )
    assert await store.deadline(entities.customer(customer)) is not None
    other = RedisStore(redis_url)
    await other.start()
    later = datetime(2040, 1, 1, tzinfo=UTC)  # past the armed deadline
    first, second = Sink(), Sink()

    await asyncio.gather(
        _handler(store, first).fire_due(later), _handler(other, second).fire_due(later)
    )
    await other.close()

    fired = [
        t
        for t in first.on("campaign.abandoned-configuration")
        + second.on("campaign.abandoned-configuration")
        if t["customer_id"] == customer
    ]
    assert len(fired) == 1
    assert await store.deadline(entities.customer(customer)) is None


async def test_consent_revoked_by_another_worker_holds_back_the_cars_trigger(
    store: RedisStore, redis_url: str
) -> None:
    customer, car = unique("C"), vin()
    linked = [
        event(
            "identity.consent_updated",
            customer_id=customer,
            channel="email",
            granted=True,
            occurred_at=at(-3600),
        ),
        event(
            "identity.vehicle_linked",
            customer_id=customer,
            vin=car,
            model_code="ID4-PRO",
            service_interval_km=15_000,
            service_interval_months=12,
            occurred_at=at(-3600),
        ),
    ]
    revoked = event(
        "identity.consent_updated", customer_id=customer, channel="email", granted=False
    )
    due = event("telematics.reading", vin=car, odometer_km=14_900)
    sink = Sink()
    mine = _handler(store, sink)
    await mine.handle(records("identity.events", *linked), datetime.now(UTC))
    other = RedisStore(redis_url)
    await other.start()
    await _handler(other, Sink()).handle(records("identity.events", revoked), datetime.now(UTC))
    await other.close()

    await mine.handle(records("telematics.events", due), datetime.now(UTC))

    assert [t for t in sink.on("campaign.service-due") if t["customer_id"] == customer] == []
    held = [s for s in sink.on("pitlane.suppressed") if s["trigger"]["customer_id"] == customer]
    assert len(held) == 1

"""What a write decides to publish goes out once: stored in an outbox entry with the
write, published after it, taken over when its writer died before publishing.

Against a real Redis, with in-memory sinks for what the handlers produce.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pitlane.adapters.redis_store import OUTBOX_KEY, RedisStore
from pitlane.ingest import (
    OUTBOX_LEASE_FACTOR,
    BatchHandler,
    OutMessage,
    PublishFailed,
    pack_messages,
    unpack_messages,
)
from pitlane.settings import Settings
from pitlane.stack.embedded import EmbeddedStack
from pitlane.topics import load_topics
from wire import Sink, event, pausing_first_write, records, unique, vin

pytestmark = pytest.mark.integration

SERVICE_DUE = "campaign.service-due"
_LEASE = timedelta(seconds=OUTBOX_LEASE_FACTOR * Settings().session_timeout_s)


@pytest.fixture
def redis_url(embedded_stack: EmbeddedStack) -> str:
    return embedded_stack.redis_url.rsplit("/", 1)[0] + "/7"


def _handler(store: RedisStore, sink: Any) -> BatchHandler:
    return BatchHandler(Settings(), store, sink, load_topics(Settings().topics_file))


async def _owned_car(store: RedisStore) -> tuple[str, str]:
    """A car linked to a customer who consented to email; returns (customer, vin)."""
    customer, car = unique("C"), vin()
    await _handler(store, Sink()).handle(
        records(
            "identity.events",
            event("identity.consent_updated", customer_id=customer, channel="email", granted=True),
            event("identity.vehicle_linked", customer_id=customer, vin=car, model_code="ID4"),
        ),
        datetime.now(UTC),
    )
    return customer, car


def _reading(car: str, km: float, offset: int) -> list[Any]:
    reading = event("telematics.reading", vin=car, odometer_km=km)
    return records("telematics.events", reading, start=offset)


class _Broker(Sink):
    """A sink that refuses everything while `away`."""

    def __init__(self, away: bool = True) -> None:
        super().__init__()
        self.away = away

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        if self.away:
            raise PublishFailed("broker away")
        await super().publish(messages)


def test_packed_messages_come_back_whole() -> None:
    messages = [
        OutMessage("campaign.service-due", b"C1", b'{"a": 1}'),
        OutMessage("pitlane.deadletter", None, b"{}"),
        OutMessage("pitlane.deadletter", b"", b"x:y\x00\xff"),
    ]

    assert unpack_messages(pack_messages(messages)) == messages
    assert unpack_messages(b"") == []


async def test_a_batch_that_loses_its_compare_and_set_publishes_its_trigger_once(
    store: RedisStore, redis_url: str
) -> None:
    _, car = await _owned_car(store)
    slow = pausing_first_write(RedisStore)(redis_url)
    await slow.start()
    sink = Sink()
    racing = asyncio.create_task(
        _handler(slow, sink).handle(_reading(car, 14_000, 0), datetime.now(UTC))
    )
    await slow.reached.wait()  # decided: service due at 14,000 km of 15,000
    await _handler(store, Sink()).handle(_reading(car, 100, 1), datetime.now(UTC))
    slow.release.set()
    result = await racing
    await slow.close()

    assert result.conflicts >= 1
    assert len(sink.on(SERVICE_DUE)) == 1
    assert result.triggers == {"service_due": 1}


async def test_a_publish_that_fails_is_published_once_by_the_batch_retry(
    store: RedisStore,
) -> None:
    _, car = await _owned_car(store)
    batch = _reading(car, 14_000, 0)
    broker = _Broker()
    handler = _handler(store, broker)

    with pytest.raises(PublishFailed):
        await handler.handle(batch, datetime.now(UTC))
    broker.away = False  # the broker is back: the consumer retries the batch
    result = await handler.handle(batch, datetime.now(UTC))

    assert len(broker.on(SERVICE_DUE)) == 1
    assert result.triggers == {"service_due": 1}  # counted when published
    assert await store.redis.hlen(OUTBOX_KEY) == 0


async def test_what_a_dead_worker_left_unpublished_goes_out_once_its_lease_runs_out(
    store: RedisStore,
) -> None:
    customer, car = await _owned_car(store)
    now = datetime.now(UTC)
    with pytest.raises(PublishFailed):  # written, then the worker "dies"
        await _handler(store, _Broker()).handle(_reading(car, 14_000, 0), now)
    other, sink = Sink(), Sink()

    await _handler(store, other).fire_due(now + _LEASE / 2)
    result = await _handler(store, sink).fire_due(now + _LEASE + timedelta(seconds=1))

    assert other.on(SERVICE_DUE) == []  # still the writer's to publish
    triggers = [t for t in sink.on(SERVICE_DUE) if t["context"]["vin"] == car]
    assert [t["customer_id"] for t in triggers] == [customer]
    assert result.republished >= 1
    assert await store.redis.hlen(OUTBOX_KEY) == 0


async def test_a_worker_whose_entry_was_taken_over_does_not_publish_it_too(
    store: RedisStore,
) -> None:
    """Kafka was away longer than the lease: another worker published the entry, so
    the writer's retry must not send it again."""
    _, car = await _owned_car(store)
    now = datetime.now(UTC)
    broker, other = _Broker(), Sink()
    writer = _handler(store, broker)
    batch = _reading(car, 14_000, 0)
    with pytest.raises(PublishFailed):
        await writer.handle(batch, now)

    await _handler(store, other).fire_due(now + _LEASE + timedelta(seconds=1))
    broker.away = False
    await writer.handle(batch, now + _LEASE + timedelta(seconds=2))

    assert len(other.on(SERVICE_DUE)) == 1
    assert broker.on(SERVICE_DUE) == []


async def test_a_workers_own_lapsed_entry_is_published_once_by_itself(
    store: RedisStore,
) -> None:
    """Redis or Kafka was away longer than the lease and nobody else took the entry:
    the writer's own sweep leaves it to the writer's retry, which sends it once."""
    _, car = await _owned_car(store)
    now = datetime.now(UTC)
    broker = _Broker()
    writer = _handler(store, broker)
    batch = _reading(car, 14_000, 0)
    with pytest.raises(PublishFailed):
        await writer.handle(batch, now)
    broker.away = False

    swept = await writer.fire_due(now + _LEASE + timedelta(seconds=1))
    await writer.handle(batch, now + _LEASE + timedelta(seconds=2))

    assert len(broker.on(SERVICE_DUE)) == 1
    assert swept.republished == 0


async def test_a_write_whose_reply_was_lost_has_its_messages_published_once(
    store: RedisStore, redis_url: str
) -> None:
    """Redis stored the write but the connection broke before its reply: the batch's
    retry finds nothing new to decide, and the entry goes out once its lease runs out."""
    _, car = await _owned_car(store)

    class ReplyLost(RedisStore):
        lost = False

        async def write(self, writes: Any, deadlines: Any = None, **more: Any) -> None:
            await super().write(writes, deadlines, **more)
            if more.get("outbox") is not None and not self.lost:
                self.lost = True
                raise ConnectionError("connection reset by peer")

    flaky = ReplyLost(redis_url)
    await flaky.start()
    sink = Sink()
    handler = _handler(flaky, sink)
    batch = _reading(car, 14_000, 0)
    now = datetime.now(UTC)
    with pytest.raises(ConnectionError):
        await handler.handle(batch, now)
    await handler.handle(batch, now)  # the consumer's retry

    before_lease = len(sink.on(SERVICE_DUE))
    swept = await handler.fire_due(now + _LEASE + timedelta(seconds=1))
    await flaky.close()

    assert before_lease == 0
    assert len(sink.on(SERVICE_DUE)) == 1
    assert swept.republished == 1

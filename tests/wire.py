"""Helpers for integration tests: contract events as producers send them, and waiting."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson
import redis
from kafka import KafkaConsumer, TopicPartition

from pitlane.adapters.redis_store import RedisStore, decode
from pitlane.bench_profile import Record
from pitlane.ingest import OutMessage

T = TypeVar("T")
StoreT = TypeVar("StoreT", bound=RedisStore)


def at(seconds_from_now: float = 0.0) -> str:
    """An RFC 3339 UTC timestamp relative to the wall clock."""
    moment = datetime.now(UTC) + timedelta(seconds=seconds_from_now)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event(kind: str, **fields: Any) -> dict[str, Any]:
    """A contract event of type `kind` with a fresh id; `occurred_at` defaults to now."""
    return {
        "event_id": str(uuid.uuid4()),
        "type": kind,
        "occurred_at": fields.pop("occurred_at", None) or at(),
        **fields,
    }


def option_click(customer: str, code: str, **fields: Any) -> dict[str, Any]:
    """An option click of `customer` in session S1 on an ID4-PRO accessory; `fields`
    override any of that (session, model, category, time)."""
    return event(
        "configurator.option_selected",
        **{
            "customer_id": customer,
            "session_id": "S1",
            "model_code": "ID4-PRO",
            "category": "accessory",
            "option_code": code,
            **fields,
        },
    )


def unique(prefix: str) -> str:
    """A fresh identifier, so tests sharing one stack never see each other's data."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def vin() -> str:
    """A fresh 17-character VIN."""
    return ("WVWZZZE1Z" + uuid.uuid4().hex[:8]).upper()


def stored(redis_client: redis.Redis, key: str) -> dict[str, Any] | None:
    """An entity's state as the worker stored it."""
    return decode(redis_client.get(key)).state


def session_clicks(profile: dict[str, Any] | None, session_id: str) -> int:
    """How many clicks a stored profile counts in a configurator session; 0 before any.

    A profile can exist before its first click (a consent event, say), so polls must
    not assume the session is there.
    """
    if not profile:
        return 0
    session = profile["sessions"].get(session_id)
    return int(session["n"]) if session else 0


def customer_key(customer_id: str) -> str:
    """The Redis key of a customer profile."""
    return f"pitlane:cust:{{{customer_id}}}:profile"


def wait_for(check: Callable[[], T | None], timeout_s: float = 30.0) -> T:
    """Poll `check` until it returns something truthy, which is returned."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout_s}s")


def read_matching(
    bootstrap_servers: list[str],
    topic: str,
    match: Callable[[dict[str, Any]], bool],
    timeout_s: float = 20.0,
) -> list[dict[str, Any]]:
    """Every message of `topic` that `match` accepts, waiting up to `timeout_s` for one.

    Assigns partitions directly: no consumer-group join, so it starts at once.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False, consumer_timeout_ms=500
    )
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        while not found and time.monotonic() < deadline:
            consumer.seek_to_beginning(*partitions)
            found = [v for r in consumer if match(v := orjson.loads(r.value))]
        return found
    finally:
        consumer.close()


def records(topic: str, *events: dict[str, Any], start: int = 0) -> list[Record]:
    """`events` as consecutive records of partition 0 of `topic`, from offset `start`."""
    return [Record(topic, 0, start + i, None, orjson.dumps(e)) for i, e in enumerate(events)]


class Sink:
    """Collects what a batch handler produces, in place of a broker."""

    def __init__(self) -> None:
        self.messages: list[OutMessage] = []

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        self.messages.extend(messages)

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [orjson.loads(m.value) for m in self.messages if m.topic == topic]


def pausing_first_write(base: type[StoreT]) -> type[StoreT]:
    """`base`, whose first write waits, once it has set `reached`, until `release` is
    set: the moment at which another worker can change what the write has read."""

    class PausingFirstWrite(base):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.reached = asyncio.Event()
            self.release = asyncio.Event()

        async def write(self, writes: Any, deadlines: Any = None, **more: Any) -> None:
            batch = list(writes)
            if not self.release.is_set():
                self.reached.set()
                await self.release.wait()
            await super().write(batch, deadlines, **more)

    return PausingFirstWrite  # type: ignore[return-value]

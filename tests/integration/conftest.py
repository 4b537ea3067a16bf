"""Integration fixtures: one real embedded stack (redis-server and tansu) per session.

Starting it takes a fraction of a second, but sharing one keeps the session's process
count and port use low on small CI machines. A missing binary or a service that will
not start fails the tests that use it; it is never a skip.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import orjson
import pytest
import redis
from kafka import KafkaProducer

from pitlane.adapters.redis_store import RedisStore
from pitlane.stack.embedded import EmbeddedStack, free_port
from pitlane.worker_process import WorkerProcess, embedded_worker_env
from wire import read_matching


@pytest.fixture(scope="session")
def embedded_stack() -> Iterator[EmbeddedStack]:
    """The session's running stack, with the topics of topics.yaml created."""
    with EmbeddedStack() as stack:
        yield stack


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    """A started store on the `redis_url` the test module names (its own database)."""
    redis_store = RedisStore(redis_url)
    await redis_store.start()
    yield redis_store
    await redis_store.close()


ABANDONMENT_WINDOW_S = 3.0
"""The session worker's abandonment window: short, so trigger tests run in seconds."""


@pytest.fixture(scope="session")
def redis_client(embedded_stack: EmbeddedStack) -> Iterator[redis.Redis]:
    """A plain client of the stack's Redis, for looking at stored state."""
    client = redis.Redis.from_url(embedded_stack.redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def worker(embedded_stack: EmbeddedStack) -> Iterator[WorkerProcess]:
    """One real `pitlane worker` process on the stack, shared by the session."""
    env = embedded_worker_env(
        embedded_stack, abandonment_window_s=ABANDONMENT_WINDOW_S, sweep_interval_s=0.2
    )
    process = WorkerProcess(env, free_port(), embedded_stack.workdir / "worker.log")
    process.start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def produce(embedded_stack: EmbeddedStack) -> Iterator[Callable[[str, str, object], None]]:
    """Publish one message (dict values as JSON, bytes as they are), acknowledged."""
    producer = KafkaProducer(bootstrap_servers=embedded_stack.bootstrap_servers, acks="all")

    def send(topic: str, key: str, value: object) -> None:
        raw = value if isinstance(value, bytes) else orjson.dumps(value)
        producer.send(topic, key=key.encode(), value=raw).get(timeout=10)

    yield send
    producer.close()


@pytest.fixture(scope="session")
def read_topic(
    embedded_stack: EmbeddedStack,
) -> Callable[..., list[dict[str, Any]]]:
    """Read a topic from the start (assigned, no group join) until `match` finds records."""

    def read(
        topic: str, match: Callable[[dict[str, Any]], bool], timeout_s: float = 20.0
    ) -> list[dict[str, Any]]:
        return read_matching(embedded_stack.bootstrap_servers, topic, match, timeout_s)

    return read

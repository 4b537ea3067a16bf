"""What a worker does when things break: killed mid-stream, killed with a deadline
pending, Redis gone. Each test runs its own worker on its own Redis and group against
one real broker, so the faults of one never leak into another."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis
from kafka import KafkaProducer

from pitlane.stack.embedded import EmbeddedStack, find_redis_server, free_port
from pitlane.worker_process import WorkerProcess, embedded_worker_env
from wire import (
    customer_key,
    event,
    option_click,
    read_matching,
    session_clicks,
    stored,
    unique,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack() -> Iterator[EmbeddedStack]:
    with EmbeddedStack() as running:
        yield running


@pytest.fixture
def producer(stack: EmbeddedStack) -> Iterator[KafkaProducer]:
    client = KafkaProducer(bootstrap_servers=stack.bootstrap_servers, acks="all")
    yield client
    client.close()


def _worker(
    stack: EmbeddedStack, redis_url: str, group: str, tmp_path: Path, name: str = "worker"
) -> WorkerProcess:
    """A worker of `group`; workers running side by side need names of their own."""
    env = embedded_worker_env(
        stack,
        redis_url=redis_url,
        consumer_group=group,
        abandonment_window_s=3,
        sweep_interval_s=0.2,
        batch_max_records=100,
        data_dir=tmp_path / name,
    )
    return WorkerProcess(env, free_port(), tmp_path / f"{group}-{name}.log")


def _send(producer: KafkaProducer, topic: str, key: str, value: dict[str, object]) -> None:
    producer.send(topic, key=key.encode(), value=orjson.dumps(value))


def _clicks(customer: str, session: str, count: int) -> list[dict[str, object]]:
    return [option_click(customer, f"ACC-{i}", session_id=session) for i in range(count)]


def test_worker_killed_mid_stream_loses_nothing_and_applies_nothing_twice(
    stack: EmbeddedStack, producer: KafkaProducer, tmp_path: Path
) -> None:
    redis_url = stack.redis_url.rsplit("/", 1)[0] + "/1"
    customers = [unique("C") for _ in range(60)]
    for customer in customers:
        for click in _clicks(customer, "S1", 40):
            _send(producer, "configurator.events", customer, click)
    producer.flush()
    client = redis.Redis.from_url(redis_url)
    group = unique("group")

    first = _worker(stack, redis_url, group, tmp_path)
    first.start()
    first.wait_ready()
    wait_for(lambda: first.stats()["batches"] >= 3)
    first.kill()
    applied_before_restart = sum(
        1 for customer in customers if stored(client, customer_key(customer))
    )

    with _worker(stack, redis_url, group, tmp_path) as second:
        second.wait_ready()
        wait_for(
            lambda: all(
                session_clicks(stored(client, customer_key(c)), "S1") >= 40 for c in customers
            ),
            timeout_s=60,
        )
        counts = {stored(client, customer_key(c))["sessions"]["S1"]["n"] for c in customers}
    client.close()

    assert applied_before_restart > 0
    assert counts == {40}


def test_a_worker_joining_mid_stream_takes_over_without_losing_or_repeating_events(
    stack: EmbeddedStack, producer: KafkaProducer, tmp_path: Path
) -> None:
    """The rebalance takes partitions from a worker whose last commit may still be in
    flight; the new owner must start exactly where that commit landed."""
    redis_url = stack.redis_url.rsplit("/", 1)[0] + "/3"
    customers = [unique("C") for _ in range(40)]
    rounds = 60
    client = redis.Redis.from_url(redis_url)
    group = unique("group")

    def send_a_click_per_customer_every_200_ms() -> None:
        for index in range(rounds):
            for customer in customers:
                click = option_click(customer, f"ACC-{index}", session_id="S1")
                _send(producer, "configurator.events", customer, click)
            producer.flush()
            time.sleep(0.2)

    sender = threading.Thread(target=send_a_click_per_customer_every_200_ms, daemon=True)
    with _worker(stack, redis_url, group, tmp_path) as first:
        first.wait_ready()
        sender.start()
        wait_for(lambda: first.stats()["batches"] >= 2)
        with _worker(stack, redis_url, group, tmp_path, name="second") as second:
            second.wait_ready()  # its partitions were taken from the first, mid-stream
            sender.join()
            wait_for(
                lambda: all(
                    session_clicks(stored(client, customer_key(c)), "S1") >= rounds
                    for c in customers
                ),
                timeout_s=60,
            )
            counts = {stored(client, customer_key(c))["sessions"]["S1"]["n"] for c in customers}
            taken_over = second.stats()["batches"]
    client.close()

    assert taken_over > 0
    assert counts == {rounds}


def test_deadline_pending_when_the_worker_dies_fires_once_after_restart(
    stack: EmbeddedStack, producer: KafkaProducer, tmp_path: Path
) -> None:
    redis_url = stack.redis_url.rsplit("/", 1)[0] + "/2"
    customer = unique("C")
    group = unique("group")
    client = redis.Redis.from_url(redis_url)
    first = _worker(stack, redis_url, group, tmp_path)
    first.start()
    first.wait_ready()
    _send(
        producer,
        "identity.events",
        customer,
        event("identity.consent_updated", customer_id=customer, channel="sms", granted=True),
    )
    for click in _clicks(customer, "S1", 4):
        _send(producer, "configurator.events", customer, click)
    producer.flush()
    wait_for(lambda: session_clicks(stored(client, customer_key(customer)), "S1") == 4)
    first.kill()  # the 3 s deadline is armed in Redis and has not fired yet
    time.sleep(4)

    with _worker(stack, redis_url, group, tmp_path) as second:
        second.wait_ready()
        wait_for(lambda: second.stats()["triggers"].get("abandoned_configuration"))
        time.sleep(4 * 0.2 + 3)  # more sweeps and a whole window: nothing fires again
        fired = second.stats()["triggers"]
    client.close()
    assert fired == {"abandoned_configuration": 1}
    delivered = read_matching(
        stack.bootstrap_servers,
        "campaign.abandoned-configuration",
        lambda t: t["customer_id"] == customer,
    )

    assert len(delivered) == 1
    assert fired == {"abandoned_configuration": 1}


def test_redis_outage_stalls_the_worker_without_losing_events(
    stack: EmbeddedStack, producer: KafkaProducer, tmp_path: Path
) -> None:
    port = free_port()
    argv = [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(tmp_path)]
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    redis_url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(redis_url)
    wait_for(lambda: _pings(client))
    customer = unique("C")
    worker = _worker(stack, redis_url, unique("group"), tmp_path)
    try:
        worker.start()
        worker.wait_ready()
        server.send_signal(signal.SIGKILL)
        server.wait()
        for click in _clicks(customer, "S1", 5):
            _send(producer, "configurator.events", customer, click)
        producer.flush()
        wait_for(lambda: worker.stats()["failures"] >= 2)
        server = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        wait_for(lambda: _pings(client))

        # The clicks may come in more than one batch: wait for the last, then count.
        wait_for(
            lambda: session_clicks(stored(client, customer_key(customer)), "S1") >= 5,
            timeout_s=60,
        )
        profile = stored(client, customer_key(customer))

        assert profile is not None
        assert profile["sessions"]["S1"]["n"] == 5
        assert worker.pid is not None
        os.kill(worker.pid, 0)  # still the same, living worker
    finally:
        worker.stop()
        server.kill()
        server.wait()
        client.close()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False

"""`pitlane tail`: a downstream consumer that prints triggers as they arrive.

Reads by assigning partitions directly (no consumer-group join, which takes seconds on
some brokers), so it starts at once and never moves anyone's committed offsets.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition


def follow(
    bootstrap_servers: list[str],
    topics: list[str],
    from_beginning: bool = False,
    stop_after: int | None = None,
    idle_timeout_s: float | None = None,
    ready: Callable[[], None] | None = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield `(topic, value)` for each message of `topics`, oldest first per partition.

    Stops after `stop_after` messages or when nothing arrived for `idle_timeout_s`;
    otherwise runs until the caller stops iterating. `ready` is called once the
    consumer is positioned, so a caller can start producing without losing messages.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False, consumer_timeout_ms=200
    )
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or [])
        ]
        consumer.assign(partitions)
        if from_beginning:
            consumer.seek_to_beginning(*partitions)
        else:
            consumer.seek_to_end(*partitions)
            for partition in partitions:
                consumer.position(partition)
        if ready is not None:
            ready()
        seen = 0
        last = time.monotonic()
        while stop_after is None or seen < stop_after:
            for record in consumer:
                seen += 1
                last = time.monotonic()
                yield record.topic, _decode(record.value)
                if stop_after is not None and seen >= stop_after:
                    return
            if idle_timeout_s is not None and time.monotonic() - last > idle_timeout_s:
                return
    finally:
        consumer.close()


def _decode(raw: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"undecodable": raw.decode(errors="replace")}
    return value if isinstance(value, dict) else {"value": value}


def describe(topic: str, value: dict[str, Any]) -> str:
    """One readable line per trigger (or held-back trigger)."""
    trigger = value.get("trigger", value)
    context = trigger.get("context", {})
    what = ", ".join(
        f"{name}={context[name]}"
        for name in ("model_code", "vin", "reason", "total_price", "due_date", "session_id")
        if context.get(name) is not None
    )
    held = f" HELD ({value['reason']})" if "reason" in value and "trigger" in value else ""
    return (
        f"{trigger.get('fired_at', '?')} {topic} {trigger.get('type', '?')}{held} "
        f"customer={trigger.get('customer_id', '?')} channels={trigger.get('channels', [])} "
        f"{what} id={trigger.get('trigger_id', '?')}"
    )

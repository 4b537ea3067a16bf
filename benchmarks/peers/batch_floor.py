"""Peer "batch_floor": pitlane's batch loop with none of pitlane's work in it.

Not a way to build pitlane but its lower bound on this machine: what a Python worker
spends before it does anything for a customer. It reads the four input topics in
batches with aiokafka's `getmany` (up to 500 records, the worker's consumer settings),
parses every record with orjson, and per batch makes the two Redis round trips a
pitlane batch makes: one MGET of a key per record (the record's Kafka key under a
hash tag, pitlane's key shape) and one MSET writing each record's raw value back;
then it commits the batch's offsets. No validation, routing, state transition,
trigger rule or encoding of state: whatever rate it reaches, a worker that also does
those cannot exceed it on the same machine.

Run: `python benchmarks/peers/batch_floor.py --broker kafka://HOST:PORT
--redis redis://HOST:PORT/DB --group GROUP --expect N` (see `peer_interface`).
"""

from __future__ import annotations

import asyncio
import logging
import sys

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from peer_interface import Meter, arm_timeout, bootstrap_servers, exit_status, fail, parse_args

from pitlane.adapters.redis_connection import HiredisPackingConnection
from pitlane.settings import Settings
from pitlane.topics import load_topics

PEER = "batch_floor"
SESSION_TIMEOUT_MS = 2_000
"""Short on purpose: tansu answers a group join only after about half of it."""


async def drain(broker: str, redis_url: str, group: str, inputs: list[str], meter: Meter) -> None:
    """Consume, touch Redis and commit, a batch at a time, until `meter` is finished."""
    settings = Settings()
    consumer = AIOKafkaConsumer(
        *inputs,
        bootstrap_servers=bootstrap_servers(broker),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=SESSION_TIMEOUT_MS // 4,
        max_poll_records=settings.batch_max_records,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        fetch_max_bytes=16 * 1024 * 1024,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    redis = aioredis.Redis.from_url(redis_url, connection_class=HiredisPackingConnection)
    await consumer.start()
    try:
        while not meter.finished:
            batches = await consumer.getmany(
                timeout_ms=settings.batch_timeout_ms, max_records=settings.batch_max_records
            )
            if not batches:
                continue
            meter.seen()
            keys: list[str] = []
            values: list[bytes] = []
            for records in batches.values():
                for record in records:
                    # Not contextlib.suppress: a context manager per record would be
                    # part of the floor. Malformed records count like every other.
                    try:  # noqa: SIM105
                        orjson.loads(record.value or b"")
                    except orjson.JSONDecodeError:
                        pass
                    keys.append(f"pitlane:floor:{{{(record.key or b'').decode()}}}")
                    values.append(record.value or b"")
            await redis.mget(keys)
            await redis.mset(dict(zip(keys, values, strict=True)))
            await consumer.commit(
                {
                    TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(
                        records[-1].offset + 1, ""
                    )
                    for tp, records in batches.items()
                }
            )
            for _ in keys:
                meter.done()
    finally:
        await consumer.stop()
        await redis.aclose()


def main(argv: list[str] | None = None) -> int:
    """Run the peer until `--expect` records are processed; returns the exit status."""
    args = parse_args(PEER, argv)
    arm_timeout(PEER, args.timeout_s)
    logging.basicConfig(level=args.log_level, stream=sys.stderr)
    topics = load_topics(Settings().topics_file)
    meter = Meter(PEER, args.expect)
    try:
        asyncio.run(drain(args.broker, args.redis, args.group, topics.inputs, meter))
    except Exception as error:
        return fail(PEER, f"{type(error).__name__}: {error}")
    return exit_status(meter, "the consumer")


if __name__ == "__main__":
    sys.exit(main())

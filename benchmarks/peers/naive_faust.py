"""Peer "naive_faust": pitlane's work as a plain faust-streaming app would do it.

This is the design the faust README suggests, and the one pitlane's batch consumer
replaces: one agent, `async for` over the stream of raw records of the four input
topics, and per event the full read-modify-write against Redis, awaiting each call:

1. decode and validate with `decode_event` (invalid or unroutable records are counted
   and dropped; no dead letter is produced);
2. route with `keys_for`, GET every entity it names, one awaited GET per key, in
   rounds until routing names nothing new (the customer's erasure marker, a stitched
   visitor's customer, a car's previous owner...);
3. `apply`; GET the owners a vehicle decision needs; `decide` abandonment and
   service due; send the triggers to their campaign topics (faust's buffered
   producer, like pitlane's);
4. SET (or DEL) every changed entity, one awaited call each, with pitlane's key names
   and `<version>|<json>` values; ZADD (or ZREM) each decided entity's deadline in
   pitlane's timer shards.

The stored state is therefore pitlane's, key for key, and can be compared with it
(up to what the order of consumption changes, which pitlane's core is sensitive to as
well: triggers are decided per event here, per batch there, so a consent that comes
later on another topic is seen by pitlane's batch and not by this event's decision).
What it does not do: compare-and-set (a single agent is the only writer, so the
read-modify-write cannot race; with one agent per topic it could, for customers seen
on several topics), the `pitlane:watermark` key, deadline sweeps, dead letters.

Run: `python benchmarks/peers/naive_faust.py --broker kafka://HOST:PORT
--redis redis://HOST:PORT/DB --group GROUP --expect N` (see `peer_interface`).
"""

from __future__ import annotations

import logging
import signal
import sys
import tempfile
from argparse import Namespace
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import faust
import redis.asyncio as aioredis
from peer_interface import Meter, arm_timeout, exit_status, fail, parse_args
from peer_work import EventWork, States

from pitlane.adapters.redis_store import decode, encode, redis_key, timer_member, timer_shard
from pitlane.domain.entities import EntityKey
from pitlane.domain.events import InputEvent
from pitlane.ingest import OutMessage
from pitlane.settings import Settings
from pitlane.topics import Topics, load_topics

PEER = "naive_faust"
SESSION_TIMEOUT_S = 2.0
"""Short on purpose: tansu answers a group join only after about half the session
timeout, so faust's default (60 s) would spend 30 s joining before the first record."""

log = logging.getLogger(PEER)


def build_app(
    args: Namespace, datadir: Path, topics: Topics, work: EventWork, meter: Meter, errors: list[str]
) -> faust.App:
    """The faust app: one agent over the four input topics, raw bytes in."""
    app = faust.App(
        args.group,  # a faust app's id is its consumer group
        broker=args.broker,
        datadir=str(datadir),
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=SESSION_TIMEOUT_S,
        broker_heartbeat_interval=SESSION_TIMEOUT_S / 4,
        broker_rebalance_timeout=10.0,
        # The benchmark's topics exist already; the leader topic is an extra topic
        # faust would otherwise create for its assignor.
        topic_allow_declare=False,
        topic_disable_leader=True,
        producer_acks=-1,
    )
    source = app.topic(*topics.inputs, key_serializer="raw", value_serializer="raw")
    outputs = {
        name: app.topic(name, key_serializer="raw", value_serializer="raw")
        for name in topics.outputs
    }

    async def send(message: OutMessage) -> None:
        await outputs[message.topic].send(key=message.key, value=message.value)

    @app.agent(source)
    async def update_profiles(stream: Any) -> None:
        redis = aioredis.Redis.from_url(args.redis)
        try:
            async for record in stream.events():
                if meter.finished:
                    continue  # records beyond --expect: the worker is already stopping
                meter.seen()
                event = work.decode(record.value, record.message.topic)
                if event is not None:
                    await update_profile(redis, work, event, send)
                if meter.done():
                    signal.raise_signal(signal.SIGTERM)  # the worker's own graceful stop
        except Exception as error:
            errors.append(f"{type(error).__name__}: {error}")
            log.exception("processing failed; stopping the worker")
            signal.raise_signal(signal.SIGTERM)
        finally:
            await redis.aclose()

    return app


async def update_profile(
    redis: aioredis.Redis,
    work: EventWork,
    event: InputEvent,
    send: Callable[[OutMessage], Awaitable[None]],
) -> None:
    """Read, apply, decide, send triggers and write back one event, awaiting each call.

    Triggers are sent before the state is written, as pitlane does, so a crash in
    between repeats a trigger (with the same id) rather than losing it.
    """
    states: States = {}
    versions: dict[EntityKey, int] = {}

    async def load(keys: list[EntityKey]) -> None:
        for key in keys:
            loaded = decode(await redis.get(redis_key(key)))
            versions[key] = loaded.version
            states[key] = loaded.state

    while missing := work.missing(event, states):
        await load(missing)
    changed, touched = work.apply(event, states)
    await load(work.owners_missing(states, touched))
    decisions = work.decide(event, states, touched)
    for message in work.outputs(decisions):
        await send(message)
    for key in sorted(changed | decisions.changed):
        state = states[key]
        if state is None:
            await redis.delete(redis_key(key))
        else:
            value = encode(versions.get(key, 0) + 1, state)
            await redis.set(redis_key(key), value, ex=work.ttl_s(key) or None)
    shards = work.settings.timer_shards
    for key, deadline in sorted(decisions.deadlines.items()):
        member = timer_member(key)
        if deadline is None:
            await redis.zrem(timer_shard(member, shards), member)
        else:
            await redis.zadd(timer_shard(member, shards), {member: deadline})


def main(argv: list[str] | None = None) -> int:
    """Run the peer until `--expect` records are processed; returns the exit status."""
    args = parse_args(PEER, argv)
    arm_timeout(PEER, args.timeout_s)
    settings = Settings()
    topics = load_topics(settings.topics_file)
    meter = Meter(PEER, args.expect)
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix=f"{PEER}-") as scratch:
        datadir = Path(args.state_dir) if args.state_dir else Path(scratch)
        app = build_app(args, datadir, topics, EventWork(settings, topics), meter, errors)
        # stdout carries the report line only; whatever faust says goes to stderr.
        worker = faust.Worker(
            app, loglevel=args.log_level, quiet=True, redirect_stdouts=False, stdout=sys.stderr
        )
        worker.spinner = None  # its terminal escapes would only litter the stderr log
        try:
            worker.execute_from_commandline()
        except SystemExit as exit_:
            if exit_.code not in (None, 0) and not errors:
                errors.append(f"the faust worker exited with status {exit_.code}")
    if errors:
        return fail(PEER, errors[0])
    return exit_status(meter, "the worker")


if __name__ == "__main__":
    sys.exit(main())

"""Peer "quix_pipeline": pitlane's work as a quixstreams application with local state.

The design quixstreams suggests for stateful streams: a StreamingDataFrame over the
four input topics (concatenated, so they share one state store), one stateful
`apply` per record, state kept by quixstreams itself in RocksDB (with its changelog
topic for recovery) instead of Redis, and the triggers produced with `to_topic`.
Per record it decodes and validates with `decode_event`, routes with `keys_for`,
runs `apply` and `decide` (abandonment, service due) and produces what pitlane would.

quixstreams state belongs to the message key: a record can read and write only the
state of its own key (the customer id on the booking and identity topics and on
configurator events of known customers, the visitor id on anonymous configurator
events, the VIN on telematics). So every entity an event touches is kept under
pitlane's Redis key name *in the state of the record's key*. For the primary entity
(the key's own customer, visitor or vehicle) that is exactly pitlane's state. For
the others it is a key-local copy, which makes these cross-entity parts of pitlane
simplified or absent:

- a vehicle linked to a customer (`identity.vehicle_linked`, keyed by customer) gets
  its owner only in that customer's copy of the car; telematics readings (keyed by
  VIN) update a car state with no owner, so no service-due trigger comes from them;
- service bookings and completions update the customer's copy of the car, not the
  state the car's own readings see;
- a login (`identity.customer_identified`, keyed by customer) does not see the
  anonymous visitor's profile (keyed by the visitor id), so the anonymous history is
  not merged into the customer and the visitor is not marked stitched;
- erasure deletes only what the customer's key holds (which includes the marker that
  blocks the customer's later events);
- deadlines from `decide` are not armed: quixstreams has no per-key timers, so an
  abandonment fires only when a later record of the same key is decided after the
  window, never by time alone; there is no `pitlane:watermark` and no Redis at all
  (`--redis` is accepted for the common command line and not used).

The per-record domain work (decode, route, apply, decide, encode triggers) is
pitlane's own, so the comparison is about the runtime and the state store.

Run: `python benchmarks/peers/quix_pipeline.py --broker kafka://HOST:PORT
--redis redis://HOST:PORT/DB --group GROUP --expect N [--state-dir DIR]`.
"""

from __future__ import annotations

import sys
import tempfile
from argparse import Namespace
from functools import reduce
from pathlib import Path
from typing import Any

from peer_interface import Meter, arm_timeout, bootstrap_servers, exit_status, fail, parse_args
from peer_work import EventWork, States
from quixstreams import Application, State, message_context
from quixstreams.models import Topic
from quixstreams.models.serializers import SerializationContext, Serializer

from pitlane.adapters.redis_store import redis_key
from pitlane.ingest import OutMessage
from pitlane.settings import Settings
from pitlane.topics import Topics, load_topics

PEER = "quix_pipeline"
CONSUMER_CONFIG = {
    # tansu answers a group join only after about half the session timeout; the
    # librdkafka default (45 s) would spend over 20 s joining before the first record.
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 1500,
}
POLL_TIMEOUT_S = 0.1
"""Concatenated topics are read in timestamp order across partitions: a partition whose
buffer runs dry holds everything back until a poll proves it idle. At the end of the
benchmark's input that costs one poll timeout per partition going idle; at the default
1 s it adds seconds to a short run that no steady stream would see."""


class OutMessageValue(Serializer):
    """The value of an `OutMessage`, already encoded the way pitlane encodes triggers."""

    def __call__(self, value: OutMessage, ctx: SerializationContext) -> bytes:
        return value.value


def build_app(
    args: Namespace, state_dir: Path, topics: Topics, work: EventWork, meter: Meter
) -> Application:
    """The quixstreams application: inputs concatenated, one stateful step, triggers out."""

    def count(topic: str, partition: int, offset: int) -> None:
        if meter.done():
            app.stop()

    app = Application(
        broker_address=",".join(bootstrap_servers(args.broker)),
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        consumer_extra_config=CONSUMER_CONFIG,
        consumer_poll_timeout=POLL_TIMEOUT_S,
        loglevel=args.log_level.upper(),
        on_message_processed=count,
    )
    inputs = [
        app.dataframe(app.topic(name, key_deserializer="bytes", value_deserializer="bytes"))
        for name in topics.inputs
    ]
    outputs = {
        name: app.topic(name, key_serializer="bytes", value_serializer=OutMessageValue())
        for name in topics.outputs
    }

    def update_profile(raw: bytes, state: State) -> list[OutMessage]:
        if meter.finished:
            return []
        meter.seen()
        event = work.decode(raw, message_context().topic)
        if event is None:
            return []
        states: States = {}
        while missing := work.missing(event, states):
            for key in missing:
                states[key] = state.get(redis_key(key))
        changed, touched = work.apply(event, states)
        for key in work.owners_missing(states, touched):
            states[key] = state.get(redis_key(key))
        decisions = work.decide(event, states, touched)
        for key in changed | decisions.changed:
            value = states[key]
            if value is None:
                state.delete(redis_key(key))
            else:
                state.set(redis_key(key), value)
        return work.outputs(decisions)

    def output_topic(value: OutMessage, key: Any, timestamp: int, headers: Any) -> Topic:
        return outputs[value.topic]

    sdf = reduce(lambda merged, other: merged.concat(other), inputs)
    sdf = sdf.apply(update_profile, stateful=True, expand=True)
    sdf.to_topic(output_topic, key=lambda message: message.key)
    return app


def main(argv: list[str] | None = None) -> int:
    """Run the peer until `--expect` records are processed; returns the exit status."""
    args = parse_args(PEER, argv)
    arm_timeout(PEER, args.timeout_s)
    settings = Settings()
    topics = load_topics(settings.topics_file)
    meter = Meter(PEER, args.expect)
    with tempfile.TemporaryDirectory(prefix=f"{PEER}-") as scratch:
        state_dir = Path(args.state_dir) if args.state_dir else Path(scratch)
        app = build_app(args, state_dir, topics, EventWork(settings, topics), meter)
        try:
            app.run()
        except Exception as error:
            return fail(PEER, f"{type(error).__name__}: {error}")
    return exit_status(meter, "the application")


if __name__ == "__main__":
    sys.exit(main())

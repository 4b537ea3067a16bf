"""The faust application: lifecycle, producer, web API and the batch consumer.

faust runs the worker (signals, logging, the producer, the web server, timers); the
hot path is the batch consumer started as an app task. faust's own consumer follows a
small control topic only: a faust worker with no subscribed topic refuses to start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import faust
from faust.web import Request, Response, View

from pitlane.adapters.redis_store import make_store
from pitlane.compiled import build
from pitlane.domain.dedupe import partition_name
from pitlane.ingest import BatchHandler, OutMessage, PublishFailed
from pitlane.profiles import lookup_customer
from pitlane.runtime.consumer import BatchConsumer, WorkerStats
from pitlane.runtime.event_clock_consumer import EventClockConsumer
from pitlane.settings import Settings
from pitlane.topics import Topics

log = logging.getLogger(__name__)


class FaustPublisher:
    """Produces through the faust app's producer and waits for every acknowledgement."""

    def __init__(self, app: faust.App) -> None:
        self._app = app

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        """Send all, then wait for all: one flush per batch, not per message."""
        producer = self._app.producer
        try:
            pending = [
                await producer.send(m.topic, m.key, m.value, None, None, None) for m in messages
            ]
            await asyncio.gather(*pending)
        except Exception as error:
            raise PublishFailed(f"{type(error).__name__}: {error}") from error


def build_app(settings: Settings, topics: Topics) -> faust.App:
    """A ready-to-run worker app; nothing connects until the worker starts."""
    session = settings.session_timeout_s
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # faust does not create it
    app = faust.App(
        f"{settings.consumer_group}-control",
        broker=settings.broker,
        web_enabled=True,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        broker_session_timeout=session,
        broker_heartbeat_interval=max(0.1, session / 4),
        broker_rebalance_timeout=max(session, 10),
        topic_allow_declare=False,
        topic_disable_leader=True,
        producer_acks=-1,
        datadir=str(settings.data_dir / "{conf.name}"),
    )
    store = make_store(settings)
    running = build()  # which build this process imported, for the log and /health
    store_ready = asyncio.Event()
    stats = WorkerStats()
    handler = BatchHandler(settings, store, FaustPublisher(app), topics)
    consumer: BatchConsumer | EventClockConsumer
    if settings.clock == "event":
        consumer = EventClockConsumer(settings, topics.inputs, handler, store, stats)
    else:
        consumer = BatchConsumer(settings, topics.inputs, handler, stats)
    control = app.topic(topics.topic("control"), value_serializer="json")

    async def ingest() -> None:
        log.info("pitlane worker starting, %s build", running)
        await store.start()
        store_ready.set()
        try:
            await consumer.run()
        finally:
            await store.close()

    app.task(ingest)

    async def fire_due_deadlines() -> None:
        if not store_ready.is_set():
            return
        try:
            stats.add(await handler.fire_due(datetime.now(UTC)))
        except Exception as error:  # Redis or Kafka away: the next sweep tries again
            stats.failures += 1
            stats.last_error = f"{type(error).__name__}: {error}"
            log.warning("deadline sweep failed: %s", stats.last_error)

    app.timer(settings.sweep_interval_s)(fire_due_deadlines)

    @app.agent(control)
    async def operator_commands(stream: Any) -> None:
        """Operator commands on the control topic: `{"command": "sweep"}` fires due
        deadlines now instead of at the next timer tick (after a clock change, say)."""
        async for command in stream:
            if isinstance(command, dict) and command.get("command") == "sweep":
                log.info("control: sweeping due deadlines now")
                await fire_due_deadlines()
            else:
                log.warning("control: ignoring unknown command %r", command)

    @app.page("/customers/{customer_id}")
    async def customer(web: View, request: Request, customer_id: str) -> Response:
        view = await lookup_customer(store, customer_id, datetime.now(UTC), settings)
        if view is None:
            return web.json({"error": f"no customer {customer_id!r}"}, status=404)
        return web.json(view)

    @app.page("/stats")
    async def worker_stats(web: View, request: Request) -> Response:
        held = handler.event_clock.held_count if settings.clock == "event" else 0
        return web.json(
            {**stats.as_dict(), "held": held, "committed_lag": consumer.committed_lag()}
        )

    @app.page("/health")
    async def health(web: View, request: Request) -> Response:
        # An event-clock standby is healthy: it takes over when the leader stops.
        role = consumer.role if isinstance(consumer, EventClockConsumer) else "member"
        ready = bool(consumer.assigned) or role == "standby"
        return web.json(
            {
                "ready": ready,
                "role": role,
                "build": running,
                "partitions": sorted(
                    partition_name(tp.topic, tp.partition) for tp in consumer.assigned
                ),
            },
            status=200 if ready else 503,
        )

    return app

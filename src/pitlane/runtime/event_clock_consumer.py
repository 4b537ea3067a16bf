"""The event clock's consumer: one worker reads every input partition, the rest stand by.

An event-clock run must give the same triggers and state as any other run of the same
input (`pitlane.event_clock`), and that takes one total order of events and deadlines,
which partitions split between workers cannot give: a car's deadline on one worker
and its owner's consent change on another would meet in whichever order the two
happened to run. So the workers of a group elect one leader through a lease in Redis;
it reads all input partitions itself (assigned, not through a group rebalance),
applies in event time, and writes each step under the lease (a fenced write: a
leader that lost its lease writes nothing). The others retry the lease every sweep
interval and take over, from the positions stored with the state, when the leader
stops (it gives the lease up) or dies (its lease runs out after the group session
timeout). Throughput is one worker's; more workers add availability.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, TopicPartition

from pitlane.adapters.redis_store import LEASE_KEY, LeaseLost, RedisStore
from pitlane.domain.dedupe import partition_name
from pitlane.event_clock import Position
from pitlane.ingest import BatchHandler
from pitlane.runtime.consumer import (
    CommittedLag,
    WorkerStats,
    commit,
    input_consumer,
    until_done,
)
from pitlane.settings import Settings

log = logging.getLogger(__name__)


class EventClockConsumer:
    """Leads the event clock while it holds the lease, stands by otherwise."""

    def __init__(
        self,
        settings: Settings,
        topics: list[str],
        handler: BatchHandler,
        store: RedisStore,
        stats: WorkerStats,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self._topics = topics
        self._handler = handler
        self._store = store
        self._stats = stats
        self._clock = clock
        self._token = uuid.uuid4().hex
        self._lease_s = settings.session_timeout_s
        self._lag = CommittedLag()
        self.role = "standby"
        self.assigned: set[TopicPartition] = set()

    def committed_lag(self) -> dict[str, int]:
        """Per input partition (on the leader), records above the committed offset."""
        return self._lag.as_dict()

    async def run(self) -> None:
        """Stand by until the lease is had, lead until it is lost; until cancelled."""
        try:
            while True:
                held = await until_done(
                    lambda: self._store.hold_lease(
                        LEASE_KEY, self._token, self._lease_s, take=True
                    ),
                    self._stats,
                )
                if held:
                    log.info("event clock: this worker leads")
                    self.role = "leader"
                    try:
                        await self._lead()
                    except LeaseLost:
                        log.warning("event clock: lease lost to another worker; standing by")
                    finally:
                        self.role, self.assigned = "standby", set()
                await asyncio.sleep(self._settings.sweep_interval_s)
        finally:
            if self.role == "leader":  # a graceful stop hands over at once
                await self._store.drop_lease(LEASE_KEY, self._token)

    async def _lead(self) -> None:
        consumer = input_consumer(self._settings)
        await consumer.start()
        try:
            self._stats.republished += await until_done(
                lambda: self._handler.take_over_outbox(self._clock(), everything=True),
                self._stats,
            )
            self._handler.lead(self._token)
            partitions = await self._restore(consumer)
            self.assigned = set(partitions)
            renewed = tick = float("-inf")
            while True:
                batches = await consumer.getmany(
                    timeout_ms=self._settings.batch_timeout_ms,
                    max_records=self._settings.batch_max_records,
                )
                records = [r for part in batches.values() for r in part]
                if records:
                    self._stats.add(await self._handler.read(records, self._clock()))
                now = time.monotonic()
                if now - renewed >= self._lease_s / 3:
                    if not await until_done(self._renew, self._stats, fatal=(LeaseLost,)):
                        raise LeaseLost("the event-clock lease ran out")
                    renewed = now
                if now - tick >= self._settings.sweep_interval_s:
                    ends = await consumer.end_offsets(partitions)
                    for tp, end in ends.items():
                        self._handler.event_clock.saw_end(
                            partition_name(tp.topic, tp.partition), end, now
                        )
                    tick = now
                elif not records:
                    continue
                result = await until_done(
                    lambda now=now: self._handler.advance(self._clock(), now),  # type: ignore[misc]
                    self._stats,
                    fatal=(LeaseLost,),
                )
                self._stats.batches += 1
                self._stats.add(result)
                await self._commit(consumer)
                self._lag.watch(consumer)
        except asyncio.CancelledError:  # stopping: commit where it stands (a leader
            if self.assigned:  # that lost its lease leaves that to the new one)
                try:
                    await self._commit(consumer)
                except Exception as error:  # the positions in Redis are what counts
                    log.warning("the last commit failed: %s", error)
            raise
        finally:
            await consumer.stop()

    async def _renew(self) -> bool:
        return await self._store.hold_lease(LEASE_KEY, self._token, self._lease_s, take=False)

    async def _restore(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        """Assign every input partition and seek each to its stored position (else
        the group's committed offset, else the beginning)."""
        await consumer.topics()  # fills the metadata partitions_for_topic reads
        partitions = [
            TopicPartition(topic, p)
            for topic in self._topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(partitions)
        stored = await self._store.positions()
        firsts = await consumer.beginning_offsets(partitions)
        for tp in partitions:
            name = partition_name(tp.topic, tp.partition)
            position = Position.decode(stored[name]) if name in stored else None
            committed = await consumer.committed(tp)
            first = committed if committed is not None else firsts[tp]
            consumer.seek(tp, self._handler.event_clock.restore(name, position, first))
        return partitions

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        """Commit where every partition stands (its first offset not applied)."""
        offsets = {}
        for name, position in self._handler.event_clock.positions().items():
            topic, _, partition = name.rpartition(":")
            offsets[(topic, int(partition))] = position.next
        if offsets:
            await commit(consumer, offsets)
            self._lag.committed(offsets)

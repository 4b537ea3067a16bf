"""The batch handler: raw Kafka records in, state in Redis and messages out.

This is the whole hot path, kept free of any framework so it can be driven by the
worker's consumer, by tests and by benchmarks alike. Per batch it decodes and
validates every record, reads every entity the batch needs in one or two round trips,
applies the events in order in memory, and writes every changed entity back in one
atomic compare-and-set. Bad records become dead letters; they never stop the batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import orjson
from redis.exceptions import RedisClusterException, RedisError

from pitlane.adapters.redis_store import Loaded, RedisStore, VersionConflict, Write
from pitlane.domain.apply import apply
from pitlane.domain.decide import Decisions, decide, decision_keys
from pitlane.domain.dedupe import Position, partition_name, settle
from pitlane.domain.entities import EntityKey
from pitlane.domain.events import InputEvent, InvalidEvent, decode_event
from pitlane.domain.outputs import dead_letter
from pitlane.domain.profile import State
from pitlane.domain.routing import (
    ROUTES_LOST_BY_APPLYING,
    Route,
    RoutesInACycle,
    Unroutable,
    customer_keys,
    keys_for,
    routes_through_state,
    write_phases,
)
from pitlane.settings import Settings
from pitlane.topics import Topics

log = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES = 8
SWEEP_LEASE_S = 30.0
"""How long a claimed deadline is hidden from other workers while one decides it."""
DECIDABLE = frozenset({"customer", "vehicle"})
"""Kinds of entity with triggers to decide; visitors and tombstones have none."""


class PublishFailed(Exception):
    """Kafka did not acknowledge produced messages."""


class ConflictsPersist(Exception):
    """Other workers kept changing the same entities; the batch is retried later."""


INFRASTRUCTURE_ERRORS = (
    RedisError,
    RedisClusterException,
    OSError,
    PublishFailed,
    ConflictsPersist,
)
"""Failures of the world around a batch: retry the batch. Anything else is a defect
that one event triggers, and that event alone goes to the dead-letter topic.
(redis-py's cluster client raises `RedisClusterException`, not a `RedisError`, for
slots no primary serves.)"""


class RawRecord(Protocol):
    """What the handler needs of a consumed Kafka record (aiokafka's fits)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class OutMessage:
    """A message to produce."""

    topic: str
    key: bytes | None
    value: bytes


class Publisher(Protocol):
    """Produces messages and returns once the broker acknowledged all of them."""

    async def publish(self, messages: Sequence[OutMessage]) -> None: ...


@dataclass
class BatchResult:
    """What one batch (or one deadline sweep) did, for the worker's counters."""

    events: Counter[str] = field(default_factory=Counter)
    dead_letters: int = 0
    duplicates: int = 0
    notes: Counter[str] = field(default_factory=Counter)
    conflicts: int = 0
    triggers: Counter[str] = field(default_factory=Counter)
    suppressed: Counter[str] = field(default_factory=Counter)


class BatchHandler:
    """Applies batches of raw records and fires due deadlines; both safe to repeat.

    A batch and a sweep go through the same transaction: load what is needed, apply
    events, decide triggers, publish them, then write states, deadlines and the
    watermark in one compare-and-set. Publishing comes before the write so a crash
    in between re-sends a trigger with the same id instead of losing it.
    """

    def __init__(
        self, settings: Settings, store: RedisStore, publisher: Publisher, topics: Topics
    ) -> None:
        self._settings = settings
        self._salt = settings.erasure_salt.get_secret_value()
        self._event_clock = settings.clock == "event"
        self._store = store
        self._publisher = publisher
        self._topics = topics
        self._deadletter_topic = topics.topic("deadletter")
        self._anonymous_ttl = settings.anonymous_ttl_s
        self._marks: dict[str, float] = {}
        self._committed: dict[str, int] = {}
        # Per input partition, the offset below which nothing can be redelivered.
        self._expected: set[str] = set()
        self._pending: dict[tuple[str, int, int], tuple[float, str, InputEvent, RawRecord]] = {}
        self._routes: dict[str, list[EntityKey]] = {}
        # First-round keys of the events in hand, so routing runs once per event.

    async def handle(self, records: Sequence[RawRecord], now: datetime) -> BatchResult:
        """Apply `records` (in order per partition) and publish what they produce.

        Raises only on infrastructure failure (Redis or Kafka unreachable); the caller
        retries the same batch, which is safe because every entity skips the events it
        has already applied.
        """
        result = BatchResult()
        events: list[InputEvent] = []
        sources: list[RawRecord] = []
        positions: list[Position] = []
        letters: list[OutMessage] = []
        marks: dict[str, float] = {}
        for record in records:
            partition = partition_name(record.topic, record.partition)
            # The first offset read from a partition is where the group had committed.
            self._committed.setdefault(partition, record.offset)
            try:
                event = decode_event(record.value or b"", record.topic)
                self._routes[event.event_id] = keys_for(event, {}, self._salt)
            except (InvalidEvent, Unroutable) as error:
                reason = error.reason if isinstance(error, InvalidEvent) else str(error)
                letters.append(self._dead_letter(record, reason, now))
                continue
            events.append(event)
            sources.append(record)
            positions.append((partition, record.offset))
            result.events[event.type] += 1
            if self._event_clock:  # only event-clock mode needs the marks
                occurred = event.occurred_at.timestamp()
                if occurred > marks.get(partition, float("-inf")):
                    marks[partition] = occurred
        self._remember(marks)
        at = self._decision_time(now)
        if self._event_clock:
            events, sources = self._release(events, sources, at)
            positions = [(partition_name(r.topic, r.partition), r.offset) for r in sources]
        try:
            await self._transact(events, positions, [], at, result, marks)
        except INFRASTRUCTURE_ERRORS:
            raise
        except Exception as error:
            if isinstance(error, RoutesInACycle):  # one event's routes always have an order
                log.info("%s; applying the batch one event at a time", error)
            else:
                log.exception(
                    "a batch of %d events failed; applying them one at a time", len(events)
                )
            for event, record, position in zip(events, sources, positions, strict=True):
                try:
                    await self._transact([event], [position], [], at, result, marks)
                except INFRASTRUCTURE_ERRORS:
                    raise
                except Exception as error:
                    log.exception("event %s could not be applied", event.event_id)
                    reason = f"could not be applied: {type(error).__name__}: {error}"
                    letters.append(self._dead_letter(record, reason, now))
        if self._event_clock:  # the only mode that holds events back
            for record in sources:
                self._pending.pop((record.topic, record.partition, record.offset), None)
        self._routes.clear()  # events held for the watermark route again when released
        result.dead_letters = len(letters)
        if letters:
            await self._publisher.publish(letters)
        return result

    def _release(
        self, events: list[InputEvent], sources: list[RawRecord], at: float
    ) -> tuple[list[InputEvent], list[RawRecord]]:
        """Event-clock mode: hold events until the watermark passes them, then release
        them in event-time order, so every replay applies them in the same order
        whatever the interleaving of partitions and topics it was read in."""
        for event, record in zip(events, sources, strict=True):
            position = (record.topic, record.partition, record.offset)
            self._pending[position] = (event.occurred_at.timestamp(), event.event_id, event, record)
        ready = sorted(
            (entry for entry in self._pending.values() if entry[0] <= at),
            key=lambda entry: (entry[0], entry[1]),
        )
        return [entry[2] for entry in ready], [entry[3] for entry in ready]

    def committable(self, consumed: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        """Offsets safe to commit: past what was consumed, but never past an event that
        is still held for the watermark (a restart must read it again)."""
        held: dict[tuple[str, int], int] = {}
        for topic, partition, offset in self._pending:
            key = (topic, partition)
            held[key] = min(held.get(key, offset), offset)
        return {key: min(offset, held.get(key, offset)) for key, offset in consumed.items()}

    def committed(self, offsets: dict[tuple[str, int], int]) -> None:
        """The consumer committed `offsets`: events below them are never redelivered,
        so entities written from now on can forget them."""
        for (topic, partition), offset in offsets.items():
            name = partition_name(topic, partition)
            self._committed[name] = max(offset, self._committed.get(name, offset))

    def forget_partitions(self, partitions: set[tuple[str, int]]) -> None:
        """Drop held events and commit bookkeeping of partitions this worker no
        longer owns (whoever owns them next commits them)."""
        for position in [p for p in self._pending if (p[0], p[1]) in partitions]:
            del self._pending[position]
        for topic, partition in partitions:
            self._committed.pop(partition_name(topic, partition), None)

    async def fire_due(self, now: datetime, limit: int = 500) -> BatchResult:
        """Decide every entity whose deadline has passed; they are leased to this worker."""
        result = BatchResult()
        if self._event_clock:
            self._remember(await self._store.partition_marks())
            if not self._marks:
                return result
        at = self._decision_time(now)
        if at == float("-inf"):
            return result
        due = await self._store.claim_due(at, SWEEP_LEASE_S, limit)
        if due:
            await self._transact([], [], due, at, result, {})
        return result

    def expect_partitions(self, partitions: set[str]) -> None:
        """The input partitions that hold data, as `topic:partition`.

        In event-clock mode the watermark waits until each of them has been read from,
        so a partition not yet reached cannot be overtaken by the others.
        """
        self._expected = partitions

    def _remember(self, marks: dict[str, float]) -> None:
        for partition, mark in marks.items():
            if mark > self._marks.get(partition, float("-inf")):
                self._marks[partition] = mark

    def _decision_time(self, now: datetime) -> float:
        """Wall clock, or the event-time watermark less the allowed lateness.

        The watermark is the smallest of the input partitions' largest event times, and
        is not defined before every partition holding data has been read from, so a
        partition that is behind (a replay read faster on one partition than on
        another) never lets deadlines fire before its own older events are applied.
        """
        if not self._event_clock:
            return now.timestamp()
        if not self._marks or not self._expected.issubset(self._marks):
            return float("-inf")
        return min(self._marks.values()) - self._settings.allowed_lateness_s

    async def _transact(
        self,
        events: list[InputEvent],
        positions: list[Position],
        due: list[EntityKey],
        at: float,
        result: BatchResult,
        marks: dict[str, float],
    ) -> None:
        for attempt in range(MAX_CONFLICT_RETRIES):
            try:
                await self._apply_and_decide(events, positions, due, at, result, marks)
                return
            except VersionConflict as conflict:
                result.conflicts += 1
                log.info("retrying batch: %s (attempt %d)", conflict, attempt + 1)
                await asyncio.sleep(0.005 * (attempt + 1))
        raise ConflictsPersist("batch kept conflicting with other workers; retrying later")

    async def _apply_and_decide(
        self,
        events: list[InputEvent],
        positions: list[Position],
        due: list[EntityKey],
        at: float,
        result: BatchResult,
        marks: dict[str, float],
    ) -> None:
        tx = _Transaction(self._store)
        firsts = [self._first_keys(e) for e in events]
        await tx.load([*due, *(k for keys in firsts for k in keys)])
        # Some events name more entities once their first ones are loaded (a visitor's
        # customer, a car's previous owner), and deciding about a car needs its owner:
        # one more round trip covers the batch.
        await tx.load(
            [
                *(
                    k
                    for e, first in zip(events, firsts, strict=True)
                    if routes_through_state(e, first)
                    for k in keys_for(e, tx.working, self._salt)
                ),
                *self._owners(tx.working, [k for k in tx.versions if k.kind == "vehicle"]),
            ]
        )
        decisions = Decisions()
        notes: Counter[str] = Counter()
        duplicates = 0
        routes: list[Route] = []
        for event, position, first in zip(events, positions, firsts, strict=True):
            keys = first
            if routes_through_state(event, first):
                keys = keys_for(event, tx.working, self._salt)
                while missing := [k for k in keys if k not in tx.versions]:
                    await tx.load(missing)
                    keys = keys_for(event, tx.working, self._salt)
                if event.type in ROUTES_LOST_BY_APPLYING:
                    routes.append((first, [k for k in keys if k not in first]))
            if self._event_clock:
                # What was due before this event in event time fires first, as it did live.
                occurred = event.occurred_at.timestamp()
                before = [k for k in keys if k.kind in DECIDABLE]
                _merge(decisions, await self._decide(tx, before, occurred))
            applied = apply(event, tx.working, self._settings, position)
            if not applied.changed:
                duplicates += 1
            tx.changed |= applied.changed
            if applied.notes:  # rarely any: Counter.update is Python, even when empty
                notes.update(applied.notes)
                for note in applied.notes:
                    if note.startswith("identity conflict"):
                        log.warning("%s (event %s)", note, event.event_id)
            if self._event_clock:
                # What the event itself makes true fires at the event's own time.
                after = [k for k in applied.changed if k.kind in DECIDABLE]
                _merge(decisions, await self._decide(tx, after, occurred))
        touched = [k for k in (*tx.changed, *due) if k.kind in DECIDABLE]
        if at != float("-inf"):
            _merge(decisions, await self._decide(tx, touched, at))
        phases = write_phases(routes) if self._store.splits_writes else {}
        outputs = trigger_messages(decisions, self._topics)
        if outputs:
            await self._publisher.publish(outputs)
        for key in tx.changed:
            if (state := tx.working[key]) is not None:
                settle(state, self._committed)
        ttl = self._anonymous_ttl
        await self._store.write(
            (
                Write(
                    key,
                    tx.versions[key],
                    tx.working[key],
                    ttl if key.kind == "anonymous" else 0,
                    phases.get(key, 0),
                )
                for key in sorted(tx.changed)
            ),
            decisions.deadlines,
            marks,
        )
        result.duplicates += duplicates
        result.notes.update(notes)
        result.triggers.update(t.type for t in decisions.triggers)
        result.suppressed.update(s.reason for s in decisions.suppressed)

    def _first_keys(self, event: InputEvent) -> list[EntityKey]:
        keys = self._routes.get(event.event_id)
        if keys is None:
            keys = self._routes[event.event_id] = keys_for(event, {}, self._salt)
        return keys

    def _owners(
        self, working: dict[EntityKey, State | None], keys: list[EntityKey]
    ) -> list[EntityKey]:
        """The profiles, with their erasure tombstones, that deciding about `keys` reads."""
        return [
            k for owner in decision_keys(working, keys) for k in customer_keys(owner.id, self._salt)
        ]

    async def _decide(self, tx: _Transaction, keys: list[EntityKey], at: float) -> Decisions:
        await tx.load(self._owners(tx.working, keys))
        decisions = decide(tx.working, keys, at, self._settings, self._event_clock)
        tx.changed |= decisions.changed
        return decisions

    def _dead_letter(self, record: RawRecord, reason: str, now: datetime) -> OutMessage:
        letter = dead_letter(
            raw=record.value or b"",
            key=record.key,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            reason=reason,
            received_at=now,
        )
        return OutMessage(
            self._deadletter_topic, record.key, orjson.dumps(letter.model_dump(mode="json"))
        )


class _Transaction:
    """The batch-local copy of every entity a batch reads, with the versions read."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self.versions: dict[EntityKey, int] = {}
        self.working: dict[EntityKey, State | None] = {}
        self.changed: set[EntityKey] = set()

    async def load(self, keys: Iterable[EntityKey]) -> None:
        """Read the keys not read yet, in one round trip."""
        missing = list(dict.fromkeys(k for k in keys if k not in self.versions))
        loaded: dict[EntityKey, Loaded] = await self._store.load(missing)
        for key, entity in loaded.items():
            self.versions[key] = entity.version
            self.working[key] = entity.state


def _merge(into: Decisions, more: Decisions) -> None:
    """Accumulate decisions; a later deadline for the same entity replaces an earlier."""
    into.triggers.extend(more.triggers)
    into.suppressed.extend(more.suppressed)
    into.deadlines.update(more.deadlines)
    into.changed |= more.changed


def trigger_messages(decisions: Decisions, topics: Topics) -> list[OutMessage]:
    """The campaign and held-back messages of `decisions`, keyed by customer."""
    messages = [
        OutMessage(
            topics.topic(trigger.type),
            trigger.customer_id.encode(),
            orjson.dumps(trigger.model_dump(mode="json")),
        )
        for trigger in decisions.triggers
    ]
    messages.extend(
        OutMessage(
            topics.topic("suppressed"),
            held.trigger.customer_id.encode(),
            orjson.dumps(held.model_dump(mode="json")),
        )
        for held in decisions.suppressed
    )
    return messages

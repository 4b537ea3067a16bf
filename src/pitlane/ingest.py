"""The batch handler: raw Kafka records in, state in Redis and messages out.

This is the whole hot path, kept free of any framework so it can be driven by the
worker's consumer, by tests and by benchmarks alike. Per batch it decodes and
validates every record, reads every entity the batch needs in one or two round trips,
applies the events in order in memory, and writes every changed entity back in one
atomic compare-and-set. Bad records become dead letters; they never stop the batch.

What a write decides to publish (triggers, held-back triggers, dead letters) is stored
in the same compare-and-set, in an outbox entry, and published after it: a write that
loses a compare-and-set publishes nothing, and one whose worker dies before publishing
is published by another worker once its lease runs out (`OUTBOX_LEASE_FACTOR`).

With the event clock (`PITLANE_CLOCK=event`) one worker applies everything, in event
time (`pitlane.event_clock`): records are read and held (`read`), and each step
(`advance`) applies the held events the watermark lets go together with the deadlines
due between them, in one order whatever the batches, crashes or restarts.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import orjson
from redis.exceptions import RedisClusterException, RedisError

from pitlane.adapters.redis_store import (
    LEASE_KEY,
    Fence,
    LeaseLost,
    Loaded,
    OutboxEntry,
    RedisStore,
    VersionConflict,
    Write,
)
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
from pitlane.event_clock import EventClock, Release
from pitlane.settings import Settings
from pitlane.topics import Topics

log = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES = 8
SWEEP_LEASE_S = 30.0
"""How long a claimed deadline is hidden from other workers while one decides it."""
OUTBOX_LEASE_FACTOR = 3
"""An outbox entry its writer has not published within this many group session
timeouts (the time Kafka itself takes to declare a worker dead) is taken over."""
STEP_LIMIT = 500
"""Most events, and most deadlines, one event-clock step applies."""
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
    LeaseLost,
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


def pack_messages(messages: Sequence[OutMessage]) -> bytes:
    """Messages as one byte string for the outbox: length-prefixed fields, so any key
    and value bytes survive (a key of -1 bytes is no key)."""
    parts = []
    for m in messages:
        topic = m.topic.encode()
        key = b"" if m.key is None else m.key
        parts.append(
            b"%d:%b%d:%b%d:%b"
            % (len(topic), topic, -1 if m.key is None else len(key), key, len(m.value), m.value)
        )
    return b"".join(parts)


def unpack_messages(packed: bytes) -> list[OutMessage]:
    """The messages `pack_messages` packed."""
    at = 0

    def field() -> bytes | None:
        nonlocal at
        colon = packed.index(b":", at)
        length = int(packed[at:colon])
        at = colon + 1 + max(length, 0)
        return None if length < 0 else packed[colon + 1 : at]

    messages = []
    while at < len(packed):
        topic, key, value = field() or b"", field(), field() or b""
        messages.append(OutMessage(topic.decode(), key, value))
    return messages


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
    republished: int = 0


class BatchHandler:
    """Applies batches of raw records and fires due deadlines; both safe to repeat.

    A batch and a sweep go through the same transaction: load what is needed, apply
    events, decide triggers, then write states, deadlines and the outbox entry of what
    to publish in one compare-and-set, and publish after it.
    """

    def __init__(
        self, settings: Settings, store: RedisStore, publisher: Publisher, topics: Topics
    ) -> None:
        self._settings = settings
        self._salt = settings.erasure_salt.get_secret_value()
        self._store = store
        self._publisher = publisher
        self._topics = topics
        self._deadletter_topic = topics.topic("deadletter")
        self._anonymous_ttl = settings.anonymous_ttl_s
        self._outbox_lease_s = OUTBOX_LEASE_FACTOR * settings.session_timeout_s
        self._committed: dict[str, int] = {}
        # Per input partition, the offset below which nothing can be redelivered.
        self._routes: dict[str, list[EntityKey]] = {}
        # First-round keys of the events in hand, so routing runs once per event.
        self._unpublished: list[_Unpublished] = []
        # Outbox entries this worker wrote and has not published yet.
        self._token = uuid.uuid4().hex
        # Who this worker is, as the owner of outbox entries.
        self._mine: set[str] = set()
        # Ids of the outbox entries this worker wrote and has not dropped yet.
        self._event_clock: EventClock[tuple[InputEvent, RawRecord]] | None = None
        self._fence: Fence | None = None
        self._letters: list[OutMessage] = []
        # Event clock: dead letters read and not yet stored with the next step.
        if settings.clock == "event":
            self._event_clock = EventClock(settings.allowed_lateness_s, settings.idle_partition_s)

    # --- wall clock -------------------------------------------------------------------

    async def handle(self, records: Sequence[RawRecord], now: datetime) -> BatchResult:
        """Apply `records` (in order per partition) and publish what they produce.

        Raises only on infrastructure failure (Redis or Kafka unreachable); the caller
        retries the same batch, which is safe because every entity skips the events it
        has already applied and the outbox keeps what is still to publish.
        """
        if self._event_clock is not None:
            raise RuntimeError("the event clock reads with `read` and applies with `advance`")
        result = BatchResult()
        await self._publish_unpublished(now, result)
        events: list[InputEvent] = []
        sources: list[RawRecord] = []
        positions: list[Position] = []
        letters: list[OutMessage] = []
        for record in records:
            partition = partition_name(record.topic, record.partition)
            # The first offset read from a partition is where the group had committed.
            self._committed.setdefault(partition, record.offset)
            decoded = self._decode(record, now)
            if isinstance(decoded, OutMessage):
                letters.append(decoded)
                continue
            events.append(decoded)
            sources.append(record)
            positions.append((partition, record.offset))
            result.events[decoded.type] += 1
        at = now.timestamp()
        try:
            await self._transact(events, positions, [], at, result, now, letters)
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
                    await self._transact([event], [position], [], at, result, now, [])
                except INFRASTRUCTURE_ERRORS:
                    raise
                except Exception as error:
                    log.exception("event %s could not be applied", event.event_id)
                    reason = f"could not be applied: {type(error).__name__}: {error}"
                    letters.append(self._dead_letter(record, reason, now))
            if letters:
                await self._publisher.publish(letters)
            result.dead_letters += len(letters)
        self._routes.clear()
        await self._publish_unpublished(now, result)
        return result

    def committed(self, offsets: dict[tuple[str, int], int]) -> None:
        """The consumer committed `offsets`: events below them are never redelivered,
        so entities written from now on can forget them."""
        for (topic, partition), offset in offsets.items():
            name = partition_name(topic, partition)
            self._committed[name] = max(offset, self._committed.get(name, offset))

    def forget_partitions(self, partitions: set[tuple[str, int]]) -> None:
        """Drop the commit bookkeeping of partitions this worker no longer owns
        (whoever owns them next commits them)."""
        for topic, partition in partitions:
            self._committed.pop(partition_name(topic, partition), None)

    async def fire_due(self, now: datetime, limit: int = 500) -> BatchResult:
        """Decide every entity whose deadline has passed; they are leased to this
        worker. Also publishes what dead workers left in the outbox."""
        result = BatchResult()
        await self._publish_unpublished(now, result)
        result.republished = await self.take_over_outbox(now)
        if self._event_clock is not None:  # the event clock fires deadlines in `advance`
            return result
        at = now.timestamp()
        due = await self._store.claim_due(at, SWEEP_LEASE_S, limit)
        if due:
            await self._transact([], [], due, at, result, now, [])
            await self._publish_unpublished(now, result)
        return result

    async def take_over_outbox(self, now: datetime, everything: bool = False) -> int:
        """Publish outbox entries whose writer died before publishing them (all of
        them with `everything`: the event clock's new leader fenced the old one out);
        returns how many messages went out again."""
        expired_by = float("inf") if everything else now.timestamp()
        lease_until = now.timestamp() + self._outbox_lease_s
        sent = 0
        while taken := await self._store.claim_outbox(expired_by, lease_until, 100, self._token):
            # This worker's own entries (their lease ran out while Redis or Kafka was
            # away) are published where they were written, once.
            theirs = [(entry, packed) for entry, packed in taken if entry not in self._mine]
            if not theirs:
                break
            messages = [m for _, packed in theirs for m in unpack_messages(packed)]
            log.warning("publishing %d messages a stopped worker left in the outbox", len(messages))
            await self._publisher.publish(messages)
            await self._store.drop_outbox([entry for entry, _ in theirs])
            sent += len(messages)
        return sent

    # --- event clock ------------------------------------------------------------------

    @property
    def event_clock(self) -> EventClock[tuple[InputEvent, RawRecord]]:
        """The event clock's bookkeeping (event-clock mode only)."""
        if self._event_clock is None:
            raise RuntimeError("the wall clock keeps no event-clock bookkeeping")
        return self._event_clock

    def lead(self, token: str) -> None:
        """This worker now holds the event-clock lease under `token`: its writes are
        valid only while it does."""
        assert self._event_clock is not None
        self._fence = Fence(LEASE_KEY, token)
        self._event_clock = EventClock(
            self._settings.allowed_lateness_s, self._settings.idle_partition_s
        )
        self._letters.clear()

    async def read(self, records: Sequence[RawRecord], now: datetime) -> BatchResult:
        """Event clock: account for `records` (from partitions `clock.restore`d) and
        hold their events; `advance` applies them."""
        clock = self.event_clock
        result = BatchResult()
        for record in records:
            partition = partition_name(record.topic, record.partition)
            fresh = clock.to_read(partition, record.offset)
            decoded = self._decode(record, now)
            if isinstance(decoded, OutMessage):
                if fresh:
                    self._letters.append(decoded)
                clock.finish(partition, record.offset)
                continue
            occurred = decoded.occurred_at.timestamp()
            clock.read(partition, record.offset, occurred, decoded.event_id, (decoded, record))
            if fresh:
                result.events[decoded.type] += 1
        return result

    async def advance(self, now: datetime, monotonic: float) -> BatchResult:
        """Event clock: apply, step by step, everything the watermark lets go and every
        deadline due before it, in event time; publishes what the steps decide."""
        clock = self.event_clock
        assert self._fence is not None, "advance() before lead(): writes would be unfenced"
        result = BatchResult()
        await self._publish_unpublished(now, result)
        watermark = clock.watermark(monotonic)
        while True:
            due = (
                await self._store.due(watermark, STEP_LIMIT + 1)
                if watermark > float("-inf")
                else []
            )
            frontier = watermark
            if len(due) > STEP_LIMIT:
                due = due[:STEP_LIMIT]
                frontier = due[-1][1]
            release = clock.ready(frontier, STEP_LIMIT)
            frontier = min(frontier, release.frontier)
            due = [(key, at) for key, at in due if at <= frontier]
            letters, self._letters = self._letters, []
            if not release.held and not due and not letters and not release.positions:
                break
            try:
                await self._step(release, due, frontier, result, now, letters)
            except BaseException:
                self._letters = letters + self._letters
                raise
            clock.released(release)
        self._routes.clear()
        await self._publish_unpublished(now, result)
        return result

    async def _step(
        self,
        release: Release[tuple[InputEvent, RawRecord]],
        due: list[tuple[EntityKey, float]],
        frontier: float,
        result: BatchResult,
        now: datetime,
        letters: list[OutMessage],
    ) -> None:
        """Apply one release of held events with the deadlines due among them, in
        event time: a deadline fires before any event at or after its moment."""
        events = [held.item[0] for held in release.held]
        tx = _Transaction(self._store)
        await self._load(tx, events, [key for key, _ in due])
        order = _InEventTime(self, tx, due, frontier)
        duplicates = 0
        notes: Counter[str] = Counter()
        for held, event in zip(release.held, events, strict=True):
            at = held.release_at
            await order.fire_until(at)
            keys = await self._keys(tx, event, self._first_keys(event), [])
            await order.decide([k for k in keys if k.kind in DECIDABLE], at)
            applied = apply(event, tx.working, self._settings)
            duplicates += not applied.changed
            tx.changed |= applied.changed
            if applied.notes:
                _note(notes, applied.notes, event)
            await order.decide([k for k in applied.changed if k.kind in DECIDABLE], at)
        await order.fire_until(frontier)
        positions = {p: position.encode() for p, position in release.positions.items()}
        await self._write(tx, order.decisions, {}, letters, now, positions, _Attempts())
        result.duplicates += duplicates
        result.notes.update(notes)

    # --- shared -----------------------------------------------------------------------

    def _decode(self, record: RawRecord, now: datetime) -> InputEvent | OutMessage:
        """The record's event, routed once, or its dead letter."""
        try:
            event = decode_event(record.value or b"", record.topic)
            self._routes[event.event_id] = keys_for(event, {}, self._salt)
        except (InvalidEvent, Unroutable) as error:
            reason = error.reason if isinstance(error, InvalidEvent) else str(error)
            return self._dead_letter(record, reason, now)
        return event

    async def _transact(
        self,
        events: list[InputEvent],
        positions: list[Position],
        due: list[EntityKey],
        at: float,
        result: BatchResult,
        now: datetime,
        letters: list[OutMessage],
    ) -> None:
        attempts = _Attempts()
        for attempt in range(MAX_CONFLICT_RETRIES):
            try:
                await self._apply_and_decide(
                    events, positions, due, at, result, now, letters, attempts
                )
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
        now: datetime,
        letters: list[OutMessage],
        attempts: _Attempts,
    ) -> None:
        tx = _Transaction(self._store)
        firsts = await self._load(tx, events, due)
        notes: Counter[str] = Counter()
        duplicates = 0
        routes: list[Route] = []
        for event, position, first in zip(events, positions, firsts, strict=True):
            if routes_through_state(event, first):  # most do not: no coroutine for them
                await self._keys(tx, event, first, routes)
            applied = apply(event, tx.working, self._settings, position)
            duplicates += not applied.changed
            tx.changed |= applied.changed
            if applied.notes:  # rarely any: Counter.update is Python, even when empty
                _note(notes, applied.notes, event)
        touched = [k for k in (*tx.changed, *due) if k.kind in DECIDABLE]
        decisions = await self._decide(tx, touched, at)
        phases = write_phases(routes) if self._store.splits_writes else {}
        for key in tx.changed:
            if (state := tx.working[key]) is not None:
                settle(state, self._committed)
        await self._write(tx, decisions, phases, letters, now, None, attempts)
        result.duplicates += duplicates
        result.notes.update(notes)

    async def _load(
        self, tx: _Transaction, events: list[InputEvent], due: list[EntityKey]
    ) -> list[list[EntityKey]]:
        """Read what `events` and the `due` entities need: the keys each event names by
        itself, then in one more round trip for the batch the entities some of them
        name once those are loaded (a visitor's customer, a car's previous owner) and
        the owners deciding about a car needs. Returns each event's first keys."""
        firsts = [self._first_keys(e) for e in events]
        await tx.load([*due, *(k for keys in firsts for k in keys)])
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
        return firsts

    async def _keys(
        self, tx: _Transaction, event: InputEvent, first: list[EntityKey], routes: list[Route]
    ) -> list[EntityKey]:
        """Every entity `event` needs as the batch stands now, loaded; notes in `routes`
        those it reaches through state it then changes (for the write order)."""
        if not routes_through_state(event, first):
            return first
        keys = keys_for(event, tx.working, self._salt)
        while missing := [k for k in keys if k not in tx.versions]:
            await tx.load(missing)
            keys = keys_for(event, tx.working, self._salt)
        if event.type in ROUTES_LOST_BY_APPLYING:
            routes.append((first, [k for k in keys if k not in first]))
        return keys

    async def _write(
        self,
        tx: _Transaction,
        decisions: Decisions,
        phases: dict[EntityKey, int],
        letters: list[OutMessage],
        now: datetime,
        positions: dict[str, bytes] | None,
        attempts: _Attempts,
    ) -> None:
        """Store the transaction with an outbox entry of what it publishes; on success
        the entry is this worker's to publish (and count)."""
        if attempts.kept:  # an earlier attempt's entry goes out with what it decided
            decisions = Decisions(
                [t for t in decisions.triggers if t.trigger_id not in attempts.kept],
                [s for s in decisions.suppressed if s.trigger.trigger_id not in attempts.kept],
                decisions.deadlines,
            )
            letters = []
        outputs = [*trigger_messages(decisions, self._topics), *letters]
        pending = _Unpublished(
            uuid.uuid4().hex,
            outputs,
            Counter(t.type for t in decisions.triggers),
            Counter(s.reason for s in decisions.suppressed),
            len(letters),
        )
        entry = None
        if outputs:
            lease_until = now.timestamp() + self._outbox_lease_s
            entry = OutboxEntry(pending.id, pack_messages(outputs), lease_until, self._token)
            self._mine.add(entry.id)
        ttl = self._anonymous_ttl
        try:
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
                positions=positions,
                fence=self._fence,
                outbox=entry,
            )
        except VersionConflict as conflict:
            if entry is not None:
                if not self._store.splits_writes:  # nothing was stored
                    self._mine.discard(entry.id)
                elif conflict.partial:  # some of what it decided is stored: publish it
                    self._unpublished.append(pending)
                    attempts.keep(decisions)
                else:  # the entry was stored ahead of the states
                    await self._store.drop_outbox([entry.id])
                    self._mine.discard(entry.id)
            raise
        except BaseException:
            if entry is not None:  # stored or not, nobody knows: if it was, the
                self._mine.discard(entry.id)  # sweep takes it over once its lease runs out
            raise
        if entry is not None:
            self._unpublished.append(pending)

    async def _publish_unpublished(self, now: datetime, result: BatchResult) -> None:
        """Publish this worker's outbox entries, forget them, and count them in
        `result`; on failure they stay (their lease renewed) for the batch's retry.
        Taken from the list before the first await, so a sweep and a batch running
        side by side never both send one."""
        pending, self._unpublished = self._unpublished, []
        if not pending:
            return
        ids = [entry.id for entry in pending]
        try:
            lease_until = now.timestamp() + self._outbox_lease_s
            owned = await self._store.renew_outbox(ids, lease_until, self._token)
            if len(owned) < len(pending):
                log.warning("%d outbox entries were taken over", len(pending) - len(owned))
                pending = [entry for entry in pending if entry.id in owned]
            await self._publisher.publish([m for entry in pending for m in entry.messages])
        except BaseException:
            self._unpublished[:0] = pending
            raise
        await self._store.drop_outbox([entry.id for entry in pending])
        self._mine.difference_update(ids)
        for entry in pending:
            result.triggers.update(entry.triggers)
            result.suppressed.update(entry.suppressed)
            result.dead_letters += entry.dead_letters

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
        if not keys:
            return Decisions()
        await tx.load(self._owners(tx.working, keys))
        decisions = decide(tx.working, keys, at, self._settings, self._event_clock is not None)
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


class _InEventTime:
    """Deadlines of one event-clock step, fired in time order between its events:
    those due at the start, and those its decisions arm before its frontier."""

    def __init__(
        self,
        handler: BatchHandler,
        tx: _Transaction,
        due: list[tuple[EntityKey, float]],
        frontier: float,
    ) -> None:
        self._handler = handler
        self._tx = tx
        self._frontier = frontier
        self._armed: dict[EntityKey, float | None] = dict(due)
        self._queue = [(at, key) for key, at in due]
        heapq.heapify(self._queue)
        self.decisions = Decisions()

    async def decide(self, keys: list[EntityKey], at: float) -> None:
        """Decide `keys` at `at`, queueing what they arm before the frontier."""
        more = await self._handler._decide(self._tx, keys, at)
        _merge(self.decisions, more)
        for key, deadline in more.deadlines.items():
            self._armed[key] = deadline
            if deadline is not None and deadline <= self._frontier:
                heapq.heappush(self._queue, (deadline, key))

    async def fire_until(self, moment: float) -> None:
        """Fire every queued deadline at or before `moment`, earliest first."""
        while self._queue and self._queue[0][0] <= moment:
            at, key = heapq.heappop(self._queue)
            if self._armed.get(key) == at:  # else re-armed since: a stale entry
                await self.decide([key], at)


def _note(notes: Counter[str], applied: list[str], event: InputEvent) -> None:
    """Count what applying an event noted; identity conflicts are logged too."""
    notes.update(applied)
    for note in applied:
        if note.startswith("identity conflict"):
            log.warning("%s (event %s)", note, event.event_id)


@dataclass(slots=True)
class _Unpublished:
    """An outbox entry this worker stored and has not published yet, with its counts."""

    id: str
    messages: list[OutMessage]
    triggers: Counter[str]
    suppressed: Counter[str]
    dead_letters: int


@dataclass(slots=True)
class _Attempts:
    """What earlier attempts of one transaction left to publish: on a Redis Cluster an
    attempt that lost its compare-and-set on one node may have stored the rest, and
    then its messages go out, and its retry does not send them again."""

    kept: set[str] = field(default_factory=set)

    def keep(self, decisions: Decisions) -> None:
        """An attempt's `decisions` are published: their trigger ids are not again."""
        self.kept.update(t.trigger_id for t in decisions.triggers)
        self.kept.update(s.trigger.trigger_id for s in decisions.suppressed)


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

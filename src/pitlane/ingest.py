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
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import orjson

from pitlane.adapters.redis_store import Loaded, RedisStore, VersionConflict, Write
from pitlane.domain.apply import apply
from pitlane.domain.entities import EntityKey
from pitlane.domain.events import InputEvent, InvalidEvent, decode_event
from pitlane.domain.outputs import dead_letter
from pitlane.domain.profile import State
from pitlane.domain.routing import Unroutable, keys_for
from pitlane.settings import Settings
from pitlane.topics import Topics

log = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES = 8


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
    """What one batch did, for the worker's counters."""

    events: Counter[str] = field(default_factory=Counter)
    dead_letters: int = 0
    duplicates: int = 0
    notes: Counter[str] = field(default_factory=Counter)
    conflicts: int = 0


class BatchHandler:
    """Applies batches of raw records; safe to call again with the same records."""

    def __init__(
        self, settings: Settings, store: RedisStore, publisher: Publisher, topics: Topics
    ) -> None:
        self._settings = settings
        self._salt = settings.erasure_salt.get_secret_value()
        self._store = store
        self._publisher = publisher
        self._deadletter_topic = topics.topic("deadletter")
        self._anonymous_ttl = settings.anonymous_ttl_s

    async def handle(self, records: Sequence[RawRecord], now: datetime) -> BatchResult:
        """Apply `records` (in order per partition) and publish what they produce.

        Raises only on infrastructure failure (Redis or Kafka unreachable); the caller
        retries the same batch, which is safe because every entity skips the events it
        has already applied.
        """
        result = BatchResult()
        events: list[InputEvent] = []
        out: list[OutMessage] = []
        for record in records:
            try:
                event = decode_event(record.value or b"", record.topic)
                keys_for(event, {}, self._salt)
            except (InvalidEvent, Unroutable) as error:
                reason = error.reason if isinstance(error, InvalidEvent) else str(error)
                out.append(self._dead_letter(record, reason, now))
                continue
            events.append(event)
            result.events[event.type] += 1
        for attempt in range(MAX_CONFLICT_RETRIES):
            try:
                await self._apply_all(events, result)
                break
            except VersionConflict as conflict:
                result.conflicts += 1
                log.info("retrying batch: %s (attempt %d)", conflict, attempt + 1)
                await asyncio.sleep(0.005 * (attempt + 1))
        else:
            raise RuntimeError("batch kept conflicting with other workers; giving up for now")
        result.dead_letters = len(out)
        if out:
            await self._publisher.publish(out)
        return result

    async def _apply_all(self, events: list[InputEvent], result: BatchResult) -> None:
        versions: dict[EntityKey, int] = {}
        working: dict[EntityKey, State | None] = {}

        async def load(keys: list[EntityKey]) -> None:
            missing = list(dict.fromkeys(k for k in keys if k not in versions))
            loaded: dict[EntityKey, Loaded] = await self._store.load(missing)
            for key, entity in loaded.items():
                versions[key] = entity.version
                working[key] = entity.state

        await load([k for e in events for k in keys_for(e, working, self._salt)])
        await load([k for e in events for k in keys_for(e, working, self._salt)])
        changed: set[EntityKey] = set()
        notes: Counter[str] = Counter()
        duplicates = 0
        for event in events:
            while True:
                needed = [k for k in keys_for(event, working, self._salt) if k not in versions]
                if not needed:
                    break
                await load(needed)
            applied = apply(event, working, self._settings)
            if not applied.changed:
                duplicates += 1
            changed |= applied.changed
            notes.update(applied.notes)
        await self._store.write(
            Write(key, versions[key], working[key], self._ttl(key)) for key in sorted(changed)
        )
        result.duplicates = duplicates
        result.notes = notes

    def _ttl(self, key: EntityKey) -> int:
        return self._anonymous_ttl if key.kind == "anonymous" else 0

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

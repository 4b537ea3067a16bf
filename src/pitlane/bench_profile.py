"""Where a worker's time per event goes: the batch handler alone, in this process.

The handler is driven directly with the preloaded records, against a real Redis and a
publisher that drops what it is given, so Kafka and faust are out of the picture:
the rate it reaches is the ceiling the hot path sets before any transport cost. A
first pass measures that rate; a second, on an emptied Redis, runs under cProfile
(which slows Python code down, so its timings are for ranking, not for rates).
"""

from __future__ import annotations

import asyncio
import cProfile
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from pydantic import SecretStr

from pitlane.adapters.redis_store import RedisStore, make_store
from pitlane.bench_harness import Reporter
from pitlane.ingest import BatchHandler, OutMessage
from pitlane.runtime.collector import BatchCollector
from pitlane.settings import Settings
from pitlane.simulate import SimulatedMessage
from pitlane.stack.embedded import EmbeddedStack
from pitlane.topics import Topics

TOP = 20
"""Entries kept of each ranking."""
STAGES = (
    ("decode and validate", "pitlane/domain/events.py", "decode_event"),
    ("route (keys_for)", "pitlane/domain/routing.py", "keys_for"),
    ("apply", "pitlane/domain/apply.py", "apply"),
    ("decide", "pitlane/domain/decide.py", "decide"),
    ("Redis load (MGET, decode)", "pitlane/adapters/redis_store.py", "load"),
    ("Redis write (encode, CAS)", "pitlane/adapters/redis_store.py", "write"),
    ("waiting for Redis (epoll)", "~", "<method 'poll' of 'select.epoll' objects>"),
)
"""The hot path's steps: (label, file the function is in, function), as cProfile names them.

Their shares overlap where one calls another (`load` routes nothing, but `apply`
and `decide` both call helpers) and need not add up to the whole.
"""
HANDLER = ("pitlane/ingest.py", "handle")


@dataclass(frozen=True, slots=True)
class Record:
    """A consumed Kafka record, as the handler sees one."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class _Discard:
    """A Publisher that acknowledges at once and keeps nothing."""

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        """Drop the messages."""


@dataclass(frozen=True)
class ProfileEntry:
    """One function in a ranking: seconds of its own code and including callees."""

    function: str
    calls: str
    self_s: float
    cumulative_s: float


@dataclass(frozen=True)
class Stage:
    """One step of the hot path: its time including callees, and its share of `handle`'s."""

    stage: str
    cumulative_s: float
    share: float


@dataclass(frozen=True)
class HandlerProfile:
    """The handler's own rate, and where its time goes.

    `handler_s` is `BatchHandler.handle`'s cumulative time under the profiler;
    `by_cumulative` ranks what runs inside it (callers above it are left out).
    """

    events: int
    batch_size: int
    events_per_s: float
    cpu_s_per_100k: float
    handler_s: float
    stages: list[Stage]
    by_cumulative: list[ProfileEntry]
    by_self: list[ProfileEntry]


def profile_handler(
    messages: Sequence[SimulatedMessage],
    topics: Topics,
    settings: Settings,
    batch_size: int,
    reporter: Reporter,
) -> HandlerProfile:
    """Apply `messages` twice through a BatchHandler: once timed, once under cProfile."""
    records = [Record(m.topic, 0, offset, m.key, m.value) for offset, m in enumerate(messages)]
    # A worker writes the handler's log lines to its log; here they would flood the
    # terminal. A handler that drops them keeps the cost of making them.
    quiet = logging.NullHandler()
    logging.getLogger("pitlane").addHandler(quiet)
    try:
        return _profile(records, topics, settings, batch_size, reporter)
    finally:
        logging.getLogger("pitlane").removeHandler(quiet)


def _profile(
    records: Sequence[Record],
    topics: Topics,
    settings: Settings,
    batch_size: int,
    reporter: Reporter,
) -> HandlerProfile:
    with EmbeddedStack(topics) as stack:
        local = settings.model_copy(update={"redis_url": SecretStr(stack.redis_url)})
        reporter.phase("handler alone, in process (timed)", len(records))
        wall_s, cpu_s = asyncio.run(
            time_handler(records, make_store(local), local, topics, batch_size, reporter)
        )
        with redis.Redis.from_url(stack.redis_url) as client:
            client.flushdb()
        reporter.phase("handler alone, in process (under cProfile)", len(records))
        profiler = cProfile.Profile()
        profiler.enable()
        asyncio.run(time_handler(records, make_store(local), local, topics, batch_size, reporter))
        profiler.disable()
    functions = _functions(profiler)

    def cumulative(file_suffix: str, name: str) -> float:
        return sum(f.cumulative_s for f in functions if f.is_(file_suffix, name))

    handler_s = cumulative(*HANDLER)
    entries = [
        ProfileEntry(f.label(), str(f.calls), round(f.self_s, 3), round(f.cumulative_s, 3))
        for f in functions
    ]
    inside = [entry for entry in entries if entry.cumulative_s <= handler_s]
    return HandlerProfile(
        events=len(records),
        batch_size=batch_size,
        events_per_s=round(len(records) / wall_s, 1),
        cpu_s_per_100k=round(cpu_s / len(records) * 100_000, 2),
        handler_s=round(handler_s, 3),
        stages=[
            Stage(label, round(seconds, 3), round(seconds / handler_s, 3) if handler_s else 0.0)
            for label, file_suffix, name in STAGES
            for seconds in [cumulative(file_suffix, name)]
        ],
        by_cumulative=sorted(inside, key=lambda e: -e.cumulative_s)[:TOP],
        by_self=sorted(entries, key=lambda e: -e.self_s)[:TOP],
    )


async def time_handler(
    records: Sequence[Record],
    store: RedisStore,
    settings: Settings,
    topics: Topics,
    batch_size: int,
    reporter: Reporter,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> tuple[float, float]:
    """Wall and CPU seconds of handling every record, `batch_size` at a time, on
    `store` (started here); each batch is then committed, as a worker's would be.

    `clock` gives each batch its time; a fixed one makes two runs do the same work."""
    await store.start()
    # The worker's collector policy, so the rate here compares with a worker's; starting
    # it also freezes the preloaded messages, which a worker would not hold.
    collector = BatchCollector()
    collector.start()
    try:
        handler = BatchHandler(settings, store, _Discard(), topics)
        wall, cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(records), batch_size):
            batch = records[start : start + batch_size]
            await handler.handle(batch, clock())
            handler.committed({(r.topic, r.partition): r.offset + 1 for r in batch})
            collector.after_batch()
            reporter.advance(len(batch))
        return time.perf_counter() - wall, time.process_time() - cpu
    finally:
        collector.stop()
        await store.close()


_SITE = re.compile(r".*/(site-packages|src|lib/python3\.\d+)/")


@dataclass(frozen=True, slots=True)
class _Function:
    file: str  # "~" for built-ins, as pstats has it
    line: int
    name: str
    calls: int
    self_s: float
    cumulative_s: float

    def is_(self, file_suffix: str, name: str) -> bool:
        return self.name == name and self.file.endswith(file_suffix)

    def label(self) -> str:
        """`module/path.py:line(function)` without the install prefix; built-ins as named."""
        if self.file == "~":
            return self.name
        return f"{_SITE.sub('', self.file)}:{self.line}({self.name})"


def _functions(profiler: cProfile.Profile) -> list[_Function]:
    """Every profiled function, told apart by file and line (pstats' summary keys by name)."""
    found = []
    for entry in profiler.getstats():
        code = entry.code
        if isinstance(code, str):
            file, line, name = "~", 0, code
        else:
            file, line, name = code.co_filename, code.co_firstlineno, code.co_name
        found.append(
            _Function(file, line, name, entry.callcount, entry.inlinetime, entry.totaltime)
        )
    return found

"""Crash equivalence: a recording replayed with disruptions must end as it does without.

A `Replay` runs one seeded recording on a stack of its own: a fresh embedded broker
(tansu slows as it fills, so none is shared between runs) and a redis-server of its
own with AOF persistence, so that it can be stopped and restarted like a production
Redis without losing what it acknowledged. The whole recording is in the input
topics before the first worker starts; workers run in event-clock mode, so every
replay applies the same events in the same order whatever the disruption.

A test starts workers, disrupts them (kill, stop, a second worker, Redis down) at
some point of progress, and calls `finish`, which waits until every input record
is committed and every worker's output has settled, then collects the outcome: the
triggers on the output topics, grouped by `trigger_id`, the dead letters, and the
stored state of every entity. `compare` says, readably enough for a CI log, how two
outcomes differ.
"""

from __future__ import annotations

import base64
import contextlib
import random
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, cast, get_args

import orjson
import redis
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from pitlane.adapters.redis_store import decode
from pitlane.domain.events import EVENT_TYPES, event_fields
from pitlane.simulate import Scenario, SimulatedMessage, generate, publish
from pitlane.stack.embedded import EmbeddedStack, find_redis_server, free_port
from pitlane.topics import Topics, load_topics
from pitlane.worker_process import WorkerProcess, embedded_worker_env

RECORDING_START = datetime(2026, 11, 2, tzinfo=UTC)
RECORDING_SPAN = timedelta(days=2)
ABANDONMENT_WINDOW_S = 6 * 3600
"""Shorter than the contract's day, so a two-day recording fires plenty of triggers."""

BOOKKEEPING_PREFIXES = ("pitlane:clock:", "pitlane:outbox")
"""Redis keys that record how far processing got, not what it produced."""
ENTITY_BOOKKEEPING_FIELDS = ("pend",)
"""Entity fields that record uncommitted input offsets, which a restart moves."""

SETTLED_FOR_S = 2.0
"""How long the output topics must stay unchanged before a run counts as settled:
ten deadline sweeps at the workers' 0.2 s interval."""
_POLL_S = 0.05
_SHOWN = 5
"""Differences of each kind a report shows in full."""
_SHORT = 100
"""Widest value a report line shows whole."""
_LOG_LINE = 300
"""Longest worker log line a failure message quotes (some list every partition)."""


def recording(customers: int, seed: int) -> list[SimulatedMessage]:
    """Two days of simulated traffic of `customers` customers, free of malformed input
    (garbage is interleaved separately, where a test asks for it)."""
    scenario = Scenario(
        customers=customers,
        seed=seed,
        start=RECORDING_START,
        span=RECORDING_SPAN,
        malformed_ratio=0.0,
    )
    return list(generate(scenario))


# Garbage -----------------------------------------------------------------------------

GarbageKind = Literal["invalid_json", "unknown_type", "missing_field", "number_as_string"]
GARBAGE_KINDS: tuple[GarbageKind, ...] = get_args(GarbageKind)


@dataclass(frozen=True)
class Garbage:
    """A message no worker may apply, and what is wrong with it."""

    kind: GarbageKind
    message: SimulatedMessage


def interleave_garbage(
    messages: Sequence[SimulatedMessage], every: int = 10, seed: int = 0
) -> tuple[list[SimulatedMessage], list[Garbage]]:
    """`messages` with a broken copy of an event after every `every`-th one.

    The kinds take turns. Each copy has a fresh event id, so that one applied by
    mistake shows in the state, and goes to its original's topic and key, so to a
    partition that holds data (an event-clock worker waits for every such partition).
    """
    rng = random.Random(seed)
    mixed: list[SimulatedMessage] = []
    garbage: list[Garbage] = []
    for position, message in enumerate(messages):
        mixed.append(message)
        if position % every != every - 1:
            continue
        kind = GARBAGE_KINDS[len(garbage) % len(GARBAGE_KINDS)]
        source = message if kind != "number_as_string" else _with_a_number(messages, position)
        body = orjson.loads(source.value)
        body["event_id"] = f"garbage-{len(garbage)}"
        broken = SimulatedMessage(source.topic, source.key, _break(kind, body, rng), True)
        mixed.append(broken)
        garbage.append(Garbage(kind, broken))
    return mixed, garbage


def _break(kind: GarbageKind, body: dict[str, Any], rng: random.Random) -> bytes:
    if kind == "invalid_json":
        whole = orjson.dumps(body)
        return whole[: len(whole) // 2]
    if kind == "unknown_type":
        body["type"] = body["type"].replace(".", ".legacy_", 1)
    elif kind == "missing_field":
        fields = event_fields(EVENT_TYPES[body["type"]])
        del body[rng.choice(sorted(name for name, info in fields.items() if info.is_required()))]
    else:
        name = min(name for name, value in body.items() if _is_number(value))
        body[name] = str(body[name])
    return orjson.dumps(body)


def _with_a_number(messages: Sequence[SimulatedMessage], position: int) -> SimulatedMessage:
    """The first message from `position` on (wrapping around) with a numeric field."""
    for offset in range(len(messages)):
        candidate = messages[(position + offset) % len(messages)]
        if any(_is_number(value) for value in orjson.loads(candidate.value).values()):
            return candidate
    raise ValueError("no event of the recording has a numeric field")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# One run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Copy:
    """One message of a trigger as a downstream consumer reads it."""

    topic: str
    message: dict[str, Any]

    def content(self) -> dict[str, Any]:
        """What must not change: the topic, the trigger, and why it was held back (None
        on a campaign topic), so a trigger moved to `pitlane.suppressed` differs too."""
        if "trigger" not in self.message:
            return {"topic": self.topic, "trigger": self.message, "held_back": None}
        held_back = {k: v for k, v in self.message.items() if k != "trigger"}
        return {"topic": self.topic, "trigger": self.message["trigger"], "held_back": held_back}

    @property
    def trigger(self) -> dict[str, Any]:
        """The trigger itself, whether delivered or held back."""
        trigger: dict[str, Any] = self.content()["trigger"]
        return trigger


@dataclass(repr=False)
class RunResult:
    """What a replay ended with."""

    name: str
    triggers: dict[str, list[Copy]]
    """Every copy of every trigger on the output topics, by trigger id."""
    dead_letters: list[dict[str, Any]]
    state: dict[str, Any]
    """Every `pitlane:*` key but bookkeeping, as comparable data (see `_comparable`)."""
    seconds: float
    notes: list[str] = field(default_factory=list)
    """What happened during the run (disruptions, with the progress they came at)."""

    def __repr__(self) -> str:
        return f"<RunResult {self.summary()}>"

    def summary(self) -> str:
        """One line: sizes and run time, for the test log."""
        copies = sum(len(c) for c in self.triggers.values())
        return (
            f"{self.name}: {len(self.triggers)} trigger ids ({copies} copies), "
            f"{len(self.dead_letters)} dead letters, {len(self.state)} keys, "
            f"{self.seconds:.1f} s" + "".join(f"; {n}" for n in self.notes)
        )


class RedisServer:
    """A redis-server of one run, persisting every write (AOF, fsync always), so that
    a stop and a start on the same port and directory lose nothing acknowledged."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server as PITLANE_REDIS_URL names it."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 20.0) -> Self:
        """Start (or restart) on this server's port and directory; returns once it answers."""
        argv = [find_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        argv += ["--dir", str(self.directory), "--protected-mode", "no"]
        with (self.directory / "redis.log").open("ab") as log:
            self._process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        client = self.client()
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if self._process.poll() is not None:
                    raise RuntimeError(f"redis-server exited: {self._log_tail()}")
                with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                    if client.ping():
                        return self
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis-server not up in {timeout_s} s: {self._log_tail()}")
                time.sleep(_POLL_S)
        finally:
            client.close()

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, as an orchestrator stops it (the AOF is complete), SIGKILL if stuck."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def client(self) -> redis.Redis:
        """A new client of this server; the caller closes it."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10)

    def _log_tail(self) -> str:
        lines = (self.directory / "redis.log").read_text(errors="replace").splitlines()
        return "\n".join(lines[-10:])


@dataclass
class _Worker:
    name: str
    process: WorkerProcess
    read: int = 0
    """Input records this worker read (events and dead letters), at the last look."""
    held: int = 0
    """Of those, events held back for the event-time watermark, not applied yet."""

    @property
    def applied(self) -> int:
        return self.read - self.held


class Replay:
    """One replay of `messages` on its own broker and Redis, with workers a test drives.

    Enter it (the recording is published then), start and disrupt workers, then call
    `finish` for the outcome. Leaving the block stops every worker, the redis-server
    and the broker, also when the test fails.
    """

    def __init__(
        self,
        name: str,
        messages: Sequence[SimulatedMessage],
        workdir: Path,
        *,
        timeout_s: float = 180.0,
        stall_s: float = 30.0,
    ) -> None:
        """`timeout_s` bounds every wait of the run; `stall_s` is how long `finish`
        waits while nothing moves (no commit, no record read, no output) before it
        gives up."""
        self.name = name
        self._messages = messages
        self._workdir = workdir
        self._timeout_s = timeout_s
        self._stall_s = stall_s
        self._group = f"crash-{uuid.uuid4().hex[:10]}"
        self._topics: Topics = load_topics(Path("topics.yaml"))
        self._exit = contextlib.ExitStack()
        self._workers: list[_Worker] = []
        self._retired: list[_Worker] = []
        self._notes: list[str] = []
        self._started = 0.0
        self._ends: dict[TopicPartition, int] = {}
        self._stack: EmbeddedStack | None = None
        self.redis = RedisServer(workdir / "redis")

    # Lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> Self:
        self._started = time.monotonic()
        try:
            self._stack = self._exit.enter_context(EmbeddedStack())
            self._exit.callback(self.redis.stop)
            self.redis.start()
            publish(self._stack.bootstrap_servers, self._messages)
            self._ends = self._input_ends()
            self._admin = KafkaAdminClient(bootstrap_servers=self._stack.bootstrap_servers)
            self._exit.callback(self._admin.close)
            self._consumer = KafkaConsumer(
                bootstrap_servers=self._stack.bootstrap_servers, enable_auto_commit=False
            )
            self._exit.callback(self._consumer.close)
            self._exit.callback(self._stop_workers)
        except BaseException:
            self._exit.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit.close()

    @property
    def stack(self) -> EmbeddedStack:
        """The run's broker (and the stack's own, unused, redis-server)."""
        if self._stack is None:
            raise RuntimeError("the replay has not started")
        return self._stack

    # Workers ------------------------------------------------------------------------

    def start_worker(self, wait_ready: bool = True) -> WorkerProcess:
        """Start one more worker of the run's group, with its own web port and data dir."""
        name = f"w{len(self._workers) + len(self._retired) + 1}"
        env = embedded_worker_env(
            self.stack,
            redis_url=self.redis.url,
            clock="event",
            consumer_group=self._group,
            sweep_interval_s=0.2,
            batch_max_records=100,
            abandonment_window_s=ABANDONMENT_WINDOW_S,
            idle_partition_s=1,
            data_dir=self._workdir / name,
        )
        process = WorkerProcess(env, free_port(), self._workdir / f"{name}.log")
        process.start()
        self._workers.append(_Worker(name, process))
        if wait_ready:
            process.wait_ready(self._timeout_s)
        return process

    def kill(self, process: WorkerProcess) -> None:
        """SIGKILL a worker, as a crashed machine dies."""
        self._retire(process, "killed", process.kill)

    def stop(self, process: WorkerProcess) -> None:
        """SIGTERM a worker and wait until it has shut down, as an orchestrator does."""
        self._retire(process, "stopped", process.stop)

    def busiest(self) -> WorkerProcess:
        """The running worker that has read the most (the leader, where there is one)."""
        self._look()
        return max(self._workers, key=lambda w: w.read).process

    def _retire(self, process: WorkerProcess, how: str, end: Callable[[], object]) -> None:
        worker = next(w for w in self._workers if w.process is process)
        moment = self.moment()
        end()
        self._workers.remove(worker)
        self._retired.append(worker)
        self.note(f"{worker.name} {how} at {moment}")

    def _stop_workers(self) -> None:
        for worker in self._workers:
            worker.process.stop()

    # Redis --------------------------------------------------------------------------

    def stop_redis(self) -> None:
        """Stop the run's redis-server (SIGTERM: it completes its AOF); workers stay."""
        self.note(f"redis stopped at {self.moment()}")
        self.redis.stop()

    def start_redis(self) -> None:
        """Start the redis-server again, on the same port and directory."""
        self.redis.start()
        self.note("redis restarted")

    # Progress -----------------------------------------------------------------------

    @property
    def total(self) -> int:
        """Records published to the input topics."""
        return len(self._messages)

    def progress(self) -> float:
        """Records applied by the workers of the run so far, against those published.

        A worker reports what it read (`events_total` and `dead_letters` of /stats)
        and what of that it holds back for the event-time watermark (`held`): an
        event-clock worker reads far ahead of what it applies. A worker that takes
        over after a crash may apply again what its predecessor had applied but not
        yet recorded as done, so the figure can run a little ahead of the truth.
        """
        return sum(w.applied for w in (*self._retired, *self._workers)) / self.total

    def _read_share(self) -> float:
        return sum(w.read for w in (*self._retired, *self._workers)) / self.total

    def wait_progress(self, fraction: float) -> None:
        """Block until `progress()` reaches `fraction`."""
        deadline = time.monotonic() + self._timeout_s
        while True:
            self._look()
            if self.progress() >= fraction:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: progress stuck at {self.progress():.0%}, short of "
                    f"{fraction:.0%}, after {self._timeout_s:.0f} s\n{self._log_tails()}"
                )
            time.sleep(_POLL_S / 5)  # a replay applies thousands of events a second

    def moment(self) -> str:
        """How far the run is: records applied (`progress`), read and committed."""
        self._look()
        committed = self._committed_records(self._committed()) / self.total
        return (
            f"{self.progress():.0%} applied ({self._read_share():.0%} read, "
            f"{committed:.0%} committed)"
        )

    def note(self, text: str) -> None:
        """Record what happened, for the result and the test log."""
        self._notes.append(text)

    def _look(self) -> None:
        """Refresh every running worker's counters from its /stats."""
        for worker in self._workers:
            with contextlib.suppress(OSError, ValueError):
                stats = worker.process.stats()
                worker.read = int(stats["events_total"]) + int(stats["dead_letters"])
                worker.held = int(stats.get("held", 0))  # missing until workers report it

    # Finishing ----------------------------------------------------------------------

    def finish(self) -> RunResult:
        """Wait until the run is done, stop the workers, and collect the outcome.

        Done means: every input partition committed up to its end, no running worker
        holding events back, and then the output topics unchanged for `SETTLED_FOR_S`.
        """
        self._wait_until_committed()
        self._wait_until_outputs_settle()
        self._stop_workers()
        self._workers.clear()
        triggers: dict[str, list[Copy]] = {}
        for topic, value in self._read(self._topics.outputs):
            copy = Copy(topic, orjson.loads(value))
            triggers.setdefault(copy.trigger["trigger_id"], []).append(copy)
        dead_letters = [orjson.loads(value) for _, value in self._read([self._deadletter])]
        return RunResult(
            name=self.name,
            triggers=triggers,
            dead_letters=dead_letters,
            state=self._state(),
            seconds=time.monotonic() - self._started,
            notes=list(self._notes),
        )

    def _wait_until_committed(self) -> None:
        deadline = time.monotonic() + self._timeout_s
        moved_at = time.monotonic()
        last: tuple[int, ...] = ()
        while True:
            self._look()
            committed = self._committed()
            behind = {
                tp: committed.get(tp, 0)
                for tp, end in self._ends.items()
                if committed.get(tp, 0) < end
            }
            if not behind and all(w.held == 0 for w in self._workers):
                return
            now = time.monotonic()
            seen = (sum(committed.values()), *(w.read for w in self._workers), self._outputs_end())
            if seen != last:
                last, moved_at = seen, now
            if now - moved_at > self._stall_s or now > deadline:
                why = (
                    f"nothing moved for {self._stall_s:.0f} s"
                    if now <= deadline
                    else f"still busy after {self._timeout_s:.0f} s"
                )
                raise AssertionError(
                    f"{self.name} did not finish ({why}): {self._where(committed)}"
                )
            time.sleep(_POLL_S * 4)

    def _where(self, committed: dict[TopicPartition, int]) -> str:
        behind = sorted(
            (f"{tp.topic}:{tp.partition} {committed.get(tp, 0)}/{end}")
            for tp, end in self._ends.items()
            if committed.get(tp, 0) < end
        )
        workers = ", ".join(f"{w.name} read {w.read} held {w.held}" for w in self._workers)
        return (
            f"committed {self._committed_records(committed)} "
            f"of {self.total} input records; {len(behind)} of {len(self._ends)} partitions "
            f"behind (committed/end), e.g. {', '.join(behind[:_SHOWN])}; "
            f"workers: {workers or 'none running'}; "
            + "".join(f"{e}; " for e in self._notes)
            + f"\n{self._log_tails()}"
        )

    def _wait_until_outputs_settle(self) -> None:
        deadline = time.monotonic() + self._timeout_s
        last, since = self._outputs_end(), time.monotonic()
        while time.monotonic() - since < SETTLED_FOR_S:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: outputs still growing after {self._timeout_s:.0f} s\n"
                    f"{self._log_tails()}"
                )
            time.sleep(_POLL_S * 4)
            now = self._outputs_end()
            if now != last:
                last, since = now, time.monotonic()

    def _committed(self) -> dict[TopicPartition, int]:
        try:
            groups = self._admin.list_group_offsets(self._group)
        except KafkaError:
            return {}
        return {tp: meta.offset for tp, meta in groups.get(self._group, {}).items()}

    def _committed_records(self, committed: dict[TopicPartition, int]) -> int:
        return sum(min(committed.get(tp, 0), end) for tp, end in self._ends.items())

    def _outputs_end(self) -> int:
        """A figure that moves whenever a record is appended to an output topic.

        Not a count: tansu reports the base offset of a partition's last record batch
        plus one as its end offset, not the offset after its last record.
        """
        return sum(self._reported_ends([*self._topics.outputs, self._deadletter]).values())

    @property
    def _deadletter(self) -> str:
        return self._topics.topic("deadletter")

    def _reported_ends(self, topics: Sequence[str]) -> dict[TopicPartition, int]:
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(self._consumer.partitions_for_topic(topic) or ())
        ]
        ends: dict[TopicPartition, int] = self._consumer.end_offsets(partitions)
        return ends

    def _input_ends(self) -> dict[TopicPartition, int]:
        """The offset after the last record of each input partition holding data.

        Read back rather than asked for: tansu's end offsets are those of the last
        record batch, not of the last record (see `_outputs_end`).
        """
        ends: dict[TopicPartition, int] = {}
        records = self._records(self._topics.inputs, lambda _, count: count >= self.total)
        for topic, partition, offset, _ in records:
            tp = TopicPartition(topic, partition)
            ends[tp] = max(ends.get(tp, 0), offset + 1)
        return ends

    def _read(self, topics: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        """Every record of `topics`: at least up to their reported ends (the last record
        batch of each partition, whose records come all together), and on until a
        second passes without a new one."""
        reported = self._reported_ends(topics)
        records = self._records(
            topics, lambda read, _: all(read.get(tp, 0) >= end for tp, end in reported.items())
        )
        for topic, _, _, value in records:
            yield topic, value

    def _records(
        self, topics: Sequence[str], complete: Callable[[dict[TopicPartition, int], int], bool]
    ) -> Iterator[tuple[str, int, int, bytes]]:
        """Records of `topics` from the beginning, drained until a second passes without
        one, again and again until `complete(next offset read per partition, records
        read)` says that is all."""
        consumer = KafkaConsumer(
            bootstrap_servers=self.stack.bootstrap_servers,
            enable_auto_commit=False,
            consumer_timeout_ms=1_000,
        )
        try:
            partitions = [
                TopicPartition(topic, p)
                for topic in topics
                for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            deadline = time.monotonic() + self._timeout_s
            read: dict[TopicPartition, int] = {}
            count = 0
            while not complete(read, count):
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{self.name}: {', '.join(topics)} not read to the end in "
                        f"{self._timeout_s:.0f} s ({count} records read)"
                    )
                for record in consumer:  # until a quiet second
                    read[TopicPartition(record.topic, record.partition)] = record.offset + 1
                    count += 1
                    yield record.topic, record.partition, record.offset, record.value
        finally:
            consumer.close()

    def _state(self) -> dict[str, Any]:
        client = self.redis.client()
        try:
            return {
                key.decode(): _comparable(client, key)
                for key in sorted(client.scan_iter(match="pitlane:*", count=1_000))
                if not key.decode().startswith(BOOKKEEPING_PREFIXES)
            }
        finally:
            client.close()

    def _log_tails(self) -> str:
        return "\n".join(
            f"--- last lines of {w.name}'s log ({w.process.log_path}):\n"
            + "\n".join(line[:_LOG_LINE] for line in w.process.log_tail(20).splitlines())
            for w in (*self._retired, *self._workers)
        )


def _comparable(client: redis.Redis, key: bytes) -> Any:
    """A key's value as plain data: an entity's state without its version and offset
    bookkeeping, a sorted set's members with scores, anything else whole."""
    kind = _text(client.type(key))
    if kind == "string":
        raw = client.get(key)
        try:
            state = decode(raw).state
        except (ValueError, orjson.JSONDecodeError):
            return None if raw is None else _text(raw)
        if isinstance(state, dict):
            return {k: v for k, v in state.items() if k not in ENTITY_BOOKKEEPING_FIELDS}
        return state
    if kind == "zset":
        pairs = cast(list[tuple[bytes, float]], client.zrange(key, 0, -1, withscores=True))
        return {_text(member): score for member, score in pairs}
    if kind == "hash":
        return {_text(k): _text(v) for k, v in sorted(client.hgetall(key).items())}
    if kind == "set":
        return sorted(_text(m) for m in client.smembers(key))
    if kind == "list":
        return [_text(v) for v in client.lrange(key, 0, -1)]
    return f"<{kind}>"


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


# Comparing two runs --------------------------------------------------------------------


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def field_diff(left: Any, right: Any, path: str = "", limit: int = _SHOWN) -> list[str]:
    """Where two JSON-like values differ, as `path: left != right` lines (at most `limit`)."""
    lines: list[str] = []
    _diff(left, right, path, lines, limit)
    return lines


def _diff(left: Any, right: Any, path: str, lines: list[str], limit: int) -> None:
    if len(lines) >= limit or left == right:
        return
    if isinstance(left, dict) and isinstance(right, dict):
        for key in [*left, *(k for k in right if k not in left)]:
            where = f"{path}.{key}" if path else str(key)
            if key not in right:
                lines.append(f"{where}: {_short(left[key])} != <absent>")
            elif key not in left:
                lines.append(f"{where}: <absent> != {_short(right[key])}")
            else:
                _diff(left[key], right[key], where, lines, limit)
            if len(lines) >= limit:
                return
        return
    if isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        differ = [i for i, (a, b) in enumerate(zip(left, right, strict=True)) if a != b]
        first, a, b = differ[0], left[differ[0]], right[differ[0]]
        if len(_canonical(a)) + len(_canonical(b)) <= _SHORT:  # one line says it all
            more = f" ({len(differ) - 1} more of {len(left)} items differ)" if differ[1:] else ""
            lines.append(f"{path}[{first}]: {_short(a)} != {_short(b)}{more}")
            return
        if differ[1:]:
            lines.append(f"{path}: {len(differ)} of {len(left)} items differ, the first:")
        _diff(a, b, f"{path}[{first}]", lines, limit)
        return
    if isinstance(left, list) and isinstance(right, list):
        only_left = Counter(map(_canonical, left)) - Counter(map(_canonical, right))
        only_right = Counter(map(_canonical, right)) - Counter(map(_canonical, left))
        lines.append(
            f"{path}: {len(left)} items != {len(right)}; only left: "
            f"{_short([orjson.loads(i) for i in only_left.elements()])}; only right: "
            f"{_short([orjson.loads(i) for i in only_right.elements()])}"
        )
        return
    lines.append(f"{path or '<value>'}: {_short(left)} != {_short(right)}")


def _short(value: Any, width: int = _SHORT) -> str:
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    text = _canonical(value).decode() if not isinstance(value, str) else repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


@dataclass(repr=False)
class Comparison:
    """How a run's outcome differs from the reference's; empty when they are equal.

    `str()` is the full report; `repr()` one line (what pytest shows of it)."""

    reference: RunResult
    run: RunResult
    missing_ids: list[str] = field(default_factory=list)
    new_ids: list[str] = field(default_factory=list)
    different_ids: list[str] = field(default_factory=list)
    inconsistent: dict[str, list[str]] = field(default_factory=dict)
    """Per side (reference, run): ids published with more than one content."""
    repeated: dict[str, list[str]] = field(default_factory=dict)
    """Per side: ids published more than once, all copies alike (after a crash, fine)."""
    repeats_allowed: bool = False
    missing_keys: list[str] = field(default_factory=list)
    new_keys: list[str] = field(default_factory=list)
    different_keys: list[str] = field(default_factory=list)
    missing_dead_letters: list[str] = field(default_factory=list)
    unexpected_dead_letters: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        """Same triggers, contents and state, and each side's copies consistent."""
        return not (
            self.missing_ids
            or self.new_ids
            or self.different_ids
            or any(self.inconsistent.values())
            or (not self.repeats_allowed and any(self.repeated.values()))
            or self.missing_keys
            or self.new_keys
            or self.different_keys
            or self.missing_dead_letters
            or self.unexpected_dead_letters
        )

    def __repr__(self) -> str:
        verdict = "equal" if self.equal else "DIFFERENT"
        return f"<Comparison of {self.run.name} with {self.reference.name}: {verdict}>"

    def __str__(self) -> str:
        ref, run = self.reference, self.run
        verdict = "equal" if self.equal else "DIFFERENT"
        out = [
            f"{run.name} against {ref.name}: {verdict}",
            f"  {ref.summary()}",
            f"  {run.summary()}",
            "triggers:",
            f"  missing in {run.name}: {len(self.missing_ids)}" + self._ids(self.missing_ids, ref),
            f"  only in {run.name}: {len(self.new_ids)}" + self._ids(self.new_ids, run),
            f"  contents differ: {len(self.different_ids)} (left: {ref.name}, right: {run.name})",
        ]
        for trigger_id in self.different_ids[:_SHOWN]:
            out.append(f"    {trigger_id} ({_who(ref.triggers[trigger_id][0])}):")
            first = run.triggers[trigger_id][0].content()
            out += [
                f"      {line}"
                for line in field_diff(ref.triggers[trigger_id][0].content(), first, limit=8)
            ]
        for side, result in ((ref.name, ref), (run.name, run)):
            inconsistent = self.inconsistent.get(side, [])
            out.append(
                f"  published more than once with different contents in {side}: {len(inconsistent)}"
            )
            for trigger_id in inconsistent[:_SHOWN]:
                copies = result.triggers[trigger_id]
                out.append(f"    {trigger_id} ({len(copies)} copies), first against second:")
                out += [
                    f"      {line}"
                    for line in field_diff(copies[0].content(), copies[1].content(), limit=8)
                ]
            repeated = self.repeated.get(side, [])
            allowed = " (allowed after a crash)" if self.repeats_allowed else ""
            out.append(
                f"  published more than once, copies alike, in {side}: {len(repeated)}{allowed}"
                + ("" if not repeated else f", e.g. {', '.join(repeated[:_SHOWN])}")
            )
        out += [
            f"state ({len(ref.state)} keys in {ref.name}, {len(run.state)} in {run.name}):",
            f"  missing in {run.name}: {len(self.missing_keys)}" + _first(self.missing_keys),
            f"  only in {run.name}: {len(self.new_keys)}" + _first(self.new_keys),
            f"  values differ: {len(self.different_keys)} (left: {ref.name}, right: {run.name})",
        ]
        for key in self.different_keys[:_SHOWN]:
            out.append(f"    {key}:")
            out += [f"      {line}" for line in field_diff(ref.state[key], run.state[key], limit=8)]
        out += [
            "dead letters:",
            f"  expected but missing: {len(self.missing_dead_letters)}"
            + _first(self.missing_dead_letters, "\n    "),
            f"  unexpected: {len(self.unexpected_dead_letters)}"
            + _first(self.unexpected_dead_letters, "\n    "),
        ]
        return "\n".join(out)

    def _ids(self, ids: list[str], result: RunResult) -> str:
        shown = [f"{i} ({_who(result.triggers[i][0])})" for i in ids[:_SHOWN]]
        return _first(shown, "\n    ")


def _who(copy: Copy) -> str:
    trigger = copy.trigger
    return f"{trigger.get('type')} of {trigger.get('customer_id')} on {copy.topic}"


def _first(items: Sequence[str], separator: str = ", ") -> str:
    if not items:
        return ""
    more = f"{separator}... {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    lead = separator if separator.startswith("\n") else ", e.g. "
    return lead + separator.join(items[:_SHOWN]) + more


def compare(
    reference: RunResult,
    run: RunResult,
    *,
    crashed: bool,
    garbage: Sequence[Garbage] = (),
) -> Comparison:
    """How `run` differs from `reference`.

    `crashed`: a worker of `run` died or was stopped mid-stream, so a trigger may have
    been published again (same id and content); without it, no id may appear twice.
    `garbage`: messages interleaved into `run`'s input, each of which must become a
    dead letter (besides the reference's own dead letters).
    """
    result = Comparison(reference, run, repeats_allowed=crashed)
    ref_ids, run_ids = set(reference.triggers), set(run.triggers)
    result.missing_ids = sorted(ref_ids - run_ids)
    result.new_ids = sorted(run_ids - ref_ids)
    for side in (reference, run):
        result.inconsistent[side.name] = sorted(
            i for i, copies in side.triggers.items() if len(_contents(copies)) > 1
        )
        result.repeated[side.name] = sorted(
            i
            for i, copies in side.triggers.items()
            if len(copies) > 1 and len(_contents(copies)) == 1
        )
    result.different_ids = sorted(
        i
        for i in ref_ids & run_ids
        if _contents(reference.triggers[i]) != _contents(run.triggers[i])
        and i not in result.inconsistent[run.name]
        and i not in result.inconsistent[reference.name]
    )
    result.missing_keys = sorted(reference.state.keys() - run.state.keys())
    result.new_keys = sorted(run.state.keys() - reference.state.keys())
    result.different_keys = sorted(
        k for k in reference.state.keys() & run.state.keys() if reference.state[k] != run.state[k]
    )
    expected = Counter(_letter_of(letter) for letter in reference.dead_letters)
    expected.update((g.message.topic, g.message.value) for g in garbage)
    got = Counter(_letter_of(letter) for letter in run.dead_letters)
    if crashed:  # a record read again after a crash is rejected again
        expected, got = Counter(set(expected)), Counter(set(got))
    kinds = {(g.message.topic, g.message.value): g.kind for g in garbage}
    result.missing_dead_letters = [
        f"{kinds.get(letter, 'as in the reference')} on {topic}: {_short(value)}"
        for letter in sorted((expected - got).elements())
        for topic, value in [letter]
    ]
    reasons = {_letter_of(letter): letter.get("reason") for letter in run.dead_letters}
    result.unexpected_dead_letters = [
        f"on {topic} ({reasons.get(letter)}): {_short(value)}"
        for letter in sorted((got - expected).elements())
        for topic, value in [letter]
    ]
    return result


def _contents(copies: Sequence[Copy]) -> set[bytes]:
    return {_canonical(copy.content()) for copy in copies}


def _letter_of(letter: dict[str, Any]) -> tuple[str, bytes]:
    return str(letter["topic"]), base64.b64decode(letter["original_b64"])

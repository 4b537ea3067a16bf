"""What every `pitlane bench` measurement stands on: a preloaded stack, workers, counters.

Each measured pipeline gets a stack of its own (tansu keeps topics in memory and
slows down as they fill, so a second run on the same broker would be measured on a
slower broker), the same preloaded events, and a consumer group nobody used before.
Workers are real `pitlane worker` processes, watched only through their HTTP API and
`/proc`, the way an operator would watch them.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pitlane.domain.dedupe import partition_name
from pitlane.simulate import SimulatedMessage, publish
from pitlane.stack.embedded import EmbeddedStack, free_port
from pitlane.topics import Topics
from pitlane.worker_process import WorkerProcess, embedded_worker_env

POLL_INTERVAL_S = 0.05
"""How often the driver reads the workers' counters: about 1 % of a worker's CPU."""


class Reporter(Protocol):
    """Where a long measurement tells a person how far it is (or nobody)."""

    def phase(self, description: str, total: int | None = None) -> None:
        """A new step begins; `total` units of work if known, else an open-ended step."""

    def advance(self, done: int) -> None:
        """`done` more units of the current step are finished."""


class Silent:
    """A Reporter for machine output: it says nothing."""

    def phase(self, description: str, total: int | None = None) -> None:
        """Ignore the step."""

    def advance(self, done: int) -> None:
        """Ignore the progress."""


def new_group(prefix: str) -> str:
    """A consumer group no earlier run has committed offsets in."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def preload(stack: EmbeddedStack, messages: Sequence[SimulatedMessage], reporter: Reporter) -> None:
    """Publish `messages` to the stack's broker and wait until all are acknowledged."""
    reporter.phase("preloading events", len(messages))
    publish(stack.bootstrap_servers, messages, on_sent=reporter.advance)


def input_partitions(topics: Topics) -> frozenset[str]:
    """Every input partition as the worker's `/health` names it (`topic:partition`)."""
    return frozenset(
        partition_name(spec.topic, partition)
        for spec in topics.topics
        if spec.role == "input"
        for partition in range(spec.partitions)
    )


def start_workers(
    stack: EmbeddedStack, count: int, group: str, batch_size: int, redis_cluster: bool = False
) -> list[WorkerProcess]:
    """Launch `count` workers in one consumer group, on the stack's Redis Cluster if
    `redis_cluster`; returns at once, all running."""
    on_cluster = (
        {"redis_url": stack.redis_cluster_url, "redis_cluster": True} if redis_cluster else {}
    )
    common = embedded_worker_env(
        stack, consumer_group=group, batch_max_records=batch_size, **on_cluster
    )
    workers: list[WorkerProcess] = []
    try:
        for index in range(count):
            # Its own runtime directory: nothing another run cleans up can pull it away.
            env = {**common, "PITLANE_DATA_DIR": str(stack.workdir / f"worker-{index}")}
            worker = WorkerProcess(env, free_port(), stack.workdir / f"worker-{index}.log")
            worker.start()
            workers.append(worker)
    except BaseException:
        stop_workers(workers)
        raise
    return workers


def stop_workers(workers: Iterable[WorkerProcess]) -> None:
    """Stop every worker gracefully (each is killed if it does not stop in time)."""
    for worker in workers:
        worker.stop()


def consumed(stats: dict[str, Any]) -> int:
    """Records a worker has taken off Kafka: applied events plus dead letters."""
    return int(stats["events_total"]) + int(stats["dead_letters"])


def owned_partitions(worker: WorkerProcess) -> set[str] | None:
    """The input partitions a worker owns now; None while its API does not answer yet."""
    try:
        _, body = worker.get("/health")
    except (OSError, ValueError):
        return None
    return set(body.get("partitions", [])) if isinstance(body, dict) else None


def group_complete(owned: Sequence[set[str] | None], expected: frozenset[str]) -> bool:
    """Every worker owns partitions, none twice, and together they own all of them."""
    if any(not parts for parts in owned):
        return False
    sets = [parts for parts in owned if parts]
    union = set().union(*sets)
    return union == expected and sum(len(parts) for parts in sets) == len(expected)


def check_alive(workers: Sequence[WorkerProcess]) -> None:
    """Raise, with the log's tail, if a worker has died."""
    for worker in workers:
        if worker.pid is None or not _running(worker.pid):
            raise RuntimeError(f"worker died; see {worker.log_path}\n{worker.log_tail()}")


def _running(process_id: int) -> bool:
    """Whether a child runs: it has not exited, even if nobody has reaped it yet."""
    try:
        text = Path(f"/proc/{process_id}/stat").read_text()
    except OSError:
        return False
    return text.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def wait_until(
    condition: Callable[[], bool],
    timeout_s: float,
    what: str,
    workers: Sequence[WorkerProcess] = (),
) -> None:
    """Poll `condition` until it holds; raise TimeoutError (with worker logs) after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        check_alive(workers)
        if time.monotonic() > deadline:
            tails = "\n".join(f"{w.log_path}:\n{w.log_tail()}" for w in workers)
            raise TimeoutError(f"{what} not reached within {timeout_s:.0f} s\n{tails}")
        time.sleep(POLL_INTERVAL_S)


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def redis_stack(topics: Topics, redis_cluster: bool) -> EmbeddedStack:
    """A stack for one measurement, with a three-primary Redis Cluster if asked."""
    return EmbeddedStack(topics, redis_cluster_nodes=3 if redis_cluster else 0)


def redis_pids(stack: EmbeddedStack, redis_cluster: bool) -> list[int]:
    """The redis-server processes the workers use: the cluster's primaries, or one."""
    if not redis_cluster:
        return [stack.pids["redis"]]
    return [pid for name, pid in stack.pids.items() if name.startswith("redis-cluster-")]


def cpu_seconds(process_id: int) -> float:
    """User plus system CPU time of a process and its waited-for children, from /proc."""
    text = Path(f"/proc/{process_id}/stat").read_text()
    # Fields after the parenthesised command name: state is first, utime the 12th.
    fields = text.rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return (utime + stime + cutime + cstime) / _CLOCK_TICKS


def workers_consumed(workers: Sequence[WorkerProcess]) -> int:
    """Records the running `workers` have consumed so far, together (from `/stats`)."""
    return sum(consumed(w.stats()) for w in workers)


def workers_cpu_seconds(workers: Sequence[WorkerProcess]) -> float:
    """CPU seconds the running `workers` have spent so far, together."""
    return sum(cpu_seconds(w.pid) for w in workers if w.pid is not None)


def peak_rss_mib(process_id: int) -> float:
    """The most resident memory a process has had (VmHWM), in MiB, from /proc."""
    for line in Path(f"/proc/{process_id}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{process_id}/status has no VmHWM line")


@dataclass(frozen=True)
class Percentiles:
    """Nearest-rank percentiles of a sample, in the sample's unit."""

    p50: float
    p95: float
    p99: float
    max: float


def percentiles(values: Sequence[float]) -> Percentiles | None:
    """p50, p95, p99 and max by nearest rank; None for an empty sample."""
    if not values:
        return None
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered), max(1, math.ceil(q * len(ordered)))) - 1]

    return Percentiles(rank(0.50), rank(0.95), rank(0.99), ordered[-1])

"""Peak throughput: pitlane workers or a peer pipeline draining the same preloaded events.

The clock starts when the whole consumer group owns its partitions (for one worker:
its first consumed batch) and stops when the last preloaded record is consumed.
Records consumed before the group was complete are left out of the rate, so a
worker that joins late does not count as a slow one. CPU is read from /proc at the
same two moments, so it covers exactly the measured events.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.cluster import RedisCluster

from pitlane.adapters.redis_store import redis_key
from pitlane.bench_harness import (
    POLL_INTERVAL_S,
    Reporter,
    check_alive,
    consumed,
    cpu_seconds,
    group_complete,
    input_partitions,
    new_group,
    owned_partitions,
    peak_rss_mib,
    percentiles,
    preload,
    redis_pids,
    redis_stack,
    start_workers,
    stop_workers,
    workers_cpu_seconds,
)
from pitlane.domain.entities import EntityKey, EntityKind
from pitlane.simulate import SimulatedMessage
from pitlane.stack.embedded import EmbeddedStack
from pitlane.topics import Topics
from pitlane.worker_process import WorkerProcess

PEERS = ("naive_faust", "quix_pipeline", "batch_floor")
"""Peer pipelines of benchmarks/peers/, run by `pitlane bench --peers`."""
MEMORY_SAMPLE = 1_000
"""Keys of each kind whose MEMORY USAGE is read."""


@dataclass(frozen=True)
class Throughput:
    """One pipeline draining the preloaded events.

    `consumed` counts every record the pipeline took off Kafka, `events` those
    inside the measured window, `cpu_s` the CPU its process(es) spent in that window.
    `ratio_to_pitlane` is this pipeline's rate over pitlane's (peers only);
    `redis_cpu_s_per_100k` what redis-server spent on them, `worker_peak_rss_mib` the
    largest peak resident memory of a worker (pitlane only).
    """

    pipeline: str
    workers: int
    batch_size: int | None
    consumed: int
    events: int
    seconds: float
    events_per_s: float
    cpu_s: float
    cpu_s_per_100k: float
    batches: int | None = None
    conflicts: int | None = None
    triggers: dict[str, int] = field(default_factory=dict)
    ratio_to_pitlane: float | None = None
    worker_peak_rss_mib: float | None = None
    redis_cpu_s_per_100k: float | None = None


@dataclass(frozen=True)
class KeySizes:
    """MEMORY USAGE of the keys of one entity kind (bytes, a sample of them)."""

    keys: int
    sampled: int
    mean_bytes: float
    p95_bytes: float


@dataclass(frozen=True)
class RedisFootprint:
    """What the state of the preloaded events costs in Redis.

    `bytes_per_entity` is INFO's used_memory after the run less before it, over all
    entity keys; it includes the deadline index and Redis's per-key overhead.
    """

    redis_version: str
    used_memory_delta: int
    entities: int
    bytes_per_entity: float
    kinds: dict[str, KeySizes]


@dataclass
class _Window:
    started_at: float = 0.0
    consumed_before: int = 0
    cpu_before: float = 0.0
    redis_cpu_before: float = 0.0
    open: bool = False


def measure_pitlane(
    messages: Sequence[SimulatedMessage],
    topics: Topics,
    workers: int,
    batch_size: int,
    reporter: Reporter,
    timeout_s: float,
    redis_cluster: bool = False,
) -> tuple[Throughput, RedisFootprint]:
    """Preload a fresh stack, let `workers` workers drain it, measure rate, CPU and memory.

    With `redis_cluster` the workers use a three-primary Redis Cluster; Redis CPU and
    memory are then the sums over its primaries.
    """
    with redis_stack(topics, redis_cluster) as stack:
        preload(stack, messages, reporter)
        client: redis.Redis | RedisCluster = (
            RedisCluster.from_url(stack.redis_cluster_url)
            if redis_cluster
            else redis.Redis.from_url(stack.redis_url)
        )
        try:
            client.flushall()
            used_before = _server(client)[1]
            processes = start_workers(stack, workers, new_group("bench"), batch_size, redis_cluster)
            try:
                result = _drain(
                    processes,
                    redis_pids(stack, redis_cluster),
                    topics,
                    len(messages),
                    batch_size,
                    reporter,
                    timeout_s,
                )
            finally:
                stop_workers(processes)
            footprint = redis_footprint(client, used_before)
        finally:
            client.close()
    return result, footprint


def _drain(
    workers: Sequence[WorkerProcess],
    redis_pids: Sequence[int],
    topics: Topics,
    total: int,
    batch_size: int,
    reporter: Reporter,
    timeout_s: float,
) -> Throughput:
    """Poll the workers until they consumed `total` records; the measured window's figures."""
    expected = input_partitions(topics)
    window = _Window()
    reporter.phase(f"{len(workers)} worker(s) joining their group")
    deadline = time.monotonic() + timeout_s
    reported = 0
    while True:
        check_alive(workers)
        now = time.monotonic()
        if not window.open:
            if group_complete([owned_partitions(w) for w in workers], expected):
                stats = [w.stats() for w in workers]
                window = _Window(
                    now,
                    sum(map(consumed, stats)),
                    workers_cpu_seconds(workers),
                    sum(map(cpu_seconds, redis_pids)),
                    open=True,
                )
                reporter.phase(f"draining {total:,} events (batch {batch_size})", total)
        else:
            stats = [w.stats() for w in workers]
            done = sum(map(consumed, stats))
            reporter.advance(done - reported)
            reported = done
            if done >= total:
                ended_at, cpu = now, workers_cpu_seconds(workers) - window.cpu_before
                redis_cpu = sum(map(cpu_seconds, redis_pids)) - window.redis_cpu_before
                peak_rss = max(peak_rss_mib(w.pid) for w in workers if w.pid is not None)
                break
        if now > deadline:
            tails = "\n".join(f"{w.log_path}:\n{w.log_tail()}" for w in workers)
            raise TimeoutError(
                f"workers did not consume {total} records in {timeout_s:.0f} s\n{tails}"
            )
        time.sleep(POLL_INTERVAL_S)
    events = total - window.consumed_before
    if events <= 0:
        raise RuntimeError(
            "the workers consumed everything before the group was complete; "
            "preload more events to measure a rate"
        )
    seconds = max(ended_at - window.started_at, POLL_INTERVAL_S)
    triggers: Counter[str] = Counter()
    for worker_stats in stats:
        triggers.update(worker_stats["triggers"])
    return Throughput(
        pipeline="pitlane",
        workers=len(workers),
        batch_size=batch_size,
        consumed=done,
        events=events,
        seconds=round(seconds, 3),
        events_per_s=round(events / seconds, 1),
        cpu_s=round(cpu, 2),
        cpu_s_per_100k=round(cpu / events * 100_000, 2),
        redis_cpu_s_per_100k=round(redis_cpu / events * 100_000, 2),
        batches=sum(s["batches"] for s in stats),
        conflicts=sum(s["conflicts"] for s in stats),
        triggers=dict(triggers),
        worker_peak_rss_mib=round(peak_rss, 1),
    )


def redis_footprint(client: redis.Redis | RedisCluster, used_before: int) -> RedisFootprint:
    """Key counts, sampled MEMORY USAGE per entity kind, and used_memory growth."""
    kinds: dict[str, KeySizes] = {}
    for kind in ("customer", "anonymous", "vehicle"):
        kinds[kind] = _key_sizes(client, kind)
    entities = sum(sizes.keys for sizes in kinds.values())
    version, used = _server(client)
    delta = used - used_before
    return RedisFootprint(
        redis_version=version,
        used_memory_delta=delta,
        entities=entities,
        bytes_per_entity=round(delta / entities, 1) if entities else 0.0,
        kinds=kinds,
    )


def _server(client: redis.Redis | RedisCluster) -> tuple[str, int]:
    """The server's version and `used_memory`, summed over a cluster's primaries."""
    if isinstance(client, RedisCluster):
        infos = list(client.info(target_nodes=RedisCluster.PRIMARIES).values())
    else:
        infos = [client.info()]
    return str(infos[0]["redis_version"]), sum(int(info["used_memory"]) for info in infos)


def _key_sizes(client: redis.Redis | RedisCluster, kind: EntityKind) -> KeySizes:
    # The store's own key function with a glob for the id: the pattern cannot drift.
    pattern = redis_key(EntityKey(kind, "*"))
    keys: list[bytes] = []
    count = 0
    for key in client.scan_iter(match=pattern, count=1_000):
        count += 1
        if len(keys) < MEMORY_SAMPLE:  # SCAN's order is the hash table's: unbiased enough
            keys.append(key)
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    sizes = [int(size) for size in pipe.execute() if size is not None]
    spread = percentiles(sizes)
    if spread is None:
        return KeySizes(count, 0, 0.0, 0.0)
    return KeySizes(count, len(sizes), round(sum(sizes) / len(sizes), 1), spread.p95)


def locate_peers(start: Path | None = None) -> Path:
    """benchmarks/peers/ of the checkout: from the working directory up, else the source tree."""
    here = (start or Path.cwd()).resolve()
    candidates = [here, *here.parents, *Path(__file__).resolve().parents]
    for directory in candidates:
        peers = directory / "benchmarks" / "peers"
        if peers.is_dir():
            return peers
    raise FileNotFoundError(
        "benchmarks/peers/ not found in the working directory, its parents or the source "
        "tree; run `pitlane bench --peers` from a pitlane checkout"
    )


def measure_peer(
    name: str,
    script: Path,
    messages: Sequence[SimulatedMessage],
    topics: Topics,
    reporter: Reporter,
    timeout_s: float,
) -> Throughput:
    """Preload a fresh stack, run one peer pipeline over it, and read the line it prints."""
    if not script.is_file():
        raise FileNotFoundError(f"peer pipeline {script} does not exist")
    with EmbeddedStack(topics) as stack:
        preload(stack, messages, reporter)
        state_dir = stack.workdir / f"{name}-state"
        state_dir.mkdir()
        command = [
            sys.executable, str(script),
            "--broker", stack.broker_url,
            "--redis", stack.redis_url,
            "--group", new_group(name),
            "--expect", str(len(messages)),
            "--state-dir", str(state_dir),
            "--timeout-s", str(timeout_s),
        ]  # fmt: skip
        reporter.phase(f"peer {name} draining {len(messages):,} events")
        stdout = _run_peer(command, stack.workdir / f"{name}.log", timeout_s + 30)
    line = next((ln for ln in reversed(stdout.splitlines()) if ln.startswith("{")), None)
    if line is None:
        raise RuntimeError(f"peer {name} printed no JSON result:\n{stdout[-2000:]}")
    found = json.loads(line)
    events, seconds, cpu = int(found["events"]), float(found["seconds"]), float(found["cpu_s"])
    return Throughput(
        pipeline=str(found.get("peer", name)),
        workers=1,
        batch_size=None,
        consumed=events,
        events=events,
        seconds=round(seconds, 3),
        events_per_s=round(float(found["events_per_s"]), 1),
        cpu_s=round(cpu, 2),
        cpu_s_per_100k=round(cpu / events * 100_000, 2) if events else 0.0,
    )


def _run_peer(command: list[str], log_path: Path, timeout_s: float) -> str:
    """Run a peer in its own process group; its stderr goes to `log_path`."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=log, start_new_session=True
        )
        try:
            stdout, _ = process.communicate(timeout=timeout_s)
        except BaseException:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
    if process.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"peer {command[1]} exited with {process.returncode}:\n{tail}")
    return stdout.decode(errors="replace")

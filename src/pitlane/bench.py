"""`pitlane bench`: a real worker's throughput, CPU, Redis memory and trigger latency.

One run builds a deterministic workload from the simulator once, then measures every
pipeline on a stack of its own preloaded with exactly those events: pitlane's
workers (and, with `peers`, the peer pipelines of benchmarks/peers/), pitlane again
for each batch size of a sweep, and the end-to-end latency of triggers at fractions
of the peak pitlane just reached. docs/benchmarks.md describes the method and every
field of the report.

The workload keeps the whole population: the scenario is generated for all
`customers` and `vehicles` (about 10 messages each), and `events` of its messages,
evenly spaced in time order, are kept. Every customer and car thus has state, and the
mix of event types is the scenario's, rather than the first hour's registrations.
"""

from __future__ import annotations

import os
import platform
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from pitlane.bench_harness import Reporter
from pitlane.bench_latency import Latency, measure_latency
from pitlane.bench_profile import HandlerProfile, profile_handler
from pitlane.bench_throughput import (
    PEERS,
    RedisFootprint,
    Throughput,
    locate_peers,
    measure_peer,
    measure_pitlane,
)
from pitlane.compiled import build
from pitlane.settings import Settings
from pitlane.simulate import Scenario, SimulatedMessage, generate
from pitlane.stack.embedded import find_broker
from pitlane.topics import Topics

SPAN = timedelta(hours=1)
"""Event-time span of the scenario, ending when the run starts."""


@dataclass(frozen=True)
class BenchConfig:
    """What `pitlane bench` measures; the defaults are the documented full run."""

    events: int = 200_000
    customers: int = 50_000
    vehicles: int = 20_000
    seed: int = 1
    batch_size: int = 500
    workers: int = 1
    repeat: int = 1
    peers: bool = False
    sweep_batch_sizes: tuple[int, ...] = ()
    latency_loads: tuple[float, ...] = (0.5,)
    latency_rates: tuple[float, ...] = ()
    """Latency loads in events/s, measured after those of `latency_loads`: the same
    offered rate in every run, where a fraction of each run's own peak drifts with it."""
    latency_seconds: float = 10.0
    profile: bool = False
    timeout_s: float = 900.0
    redis_cluster: bool = False

    def __post_init__(self) -> None:
        if min(self.events, self.customers, self.batch_size, self.workers, self.repeat) < 1:
            raise ValueError("events, customers, batch size, workers and repeat must be positive")
        if any(size < 1 for size in self.sweep_batch_sizes):
            raise ValueError("batch sizes must be positive")
        if any(load <= 0 for load in self.latency_loads):
            raise ValueError("latency loads are positive fractions of the peak")
        if any(rate <= 0 for rate in self.latency_rates):
            raise ValueError("latency rates are positive events per second")
        if self.profile and (built := build()) != "source":
            raise ValueError(
                f"--profile needs the source build: cProfile sees nothing inside compiled "
                f"modules, and pitlane here is {built} (take the compiled build off PYTHONPATH)"
            )


@dataclass(frozen=True)
class Workload:
    """The events every pipeline of a run drains, and what they are."""

    messages: list[SimulatedMessage]
    scenario_messages: int
    by_type: dict[str, int]


@dataclass(frozen=True)
class BenchReport:
    """Everything one run measured; `as_dict` is the `--json` output."""

    started_at: str
    machine: dict[str, Any]
    config: BenchConfig
    workload: dict[str, Any]
    pitlane: Throughput
    redis: RedisFootprint
    repeats: list[Throughput] = field(default_factory=list)
    peers: list[Throughput] = field(default_factory=list)
    sweep: list[Throughput] = field(default_factory=list)
    latency: list[Latency] = field(default_factory=list)
    profile: HandlerProfile | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, every figure under the name docs/benchmarks.md gives it."""
        return asdict(self)


def build_workload(config: BenchConfig, now: datetime) -> Workload:
    """The scenario's messages for the whole population, `config.events` of them kept."""
    scenario = Scenario(
        customers=config.customers,
        vehicles=config.vehicles,
        seed=config.seed,
        start=now.replace(second=0, microsecond=0) - SPAN,
        span=SPAN,
    )
    everything = list(generate(scenario))
    total = len(everything)
    if config.events > total:
        raise ValueError(
            f"{config.customers:,} customers and {config.vehicles:,} vehicles make only "
            f"{total:,} events; ask for fewer events or more customers"
        )
    # Evenly spaced picks keep time order, every story's shape and the scenario's mix.
    kept = [everything[index * total // config.events] for index in range(config.events)]
    by_type: Counter[str] = Counter()
    for message in kept:
        by_type["malformed" if message.malformed else orjson.loads(message.value)["type"]] += 1
    return Workload(kept, total, dict(by_type.most_common()))


def run_bench(
    config: BenchConfig, topics: Topics, settings: Settings, reporter: Reporter
) -> BenchReport:
    """Run every measurement `config` asks for; each stack and worker is stopped after use."""
    started = datetime.now(UTC)
    peer_scripts = {name: locate_peers() / f"{name}.py" for name in PEERS} if config.peers else {}
    reporter.phase(f"generating {config.customers:,} customers and {config.vehicles:,} vehicles")
    workload = build_workload(config, started)
    messages = workload.messages

    runs = [
        measure_pitlane(
            messages,
            topics,
            config.workers,
            config.batch_size,
            reporter,
            config.timeout_s,
            config.redis_cluster,
        )
        for _ in range(config.repeat)
    ]
    # The median run by rate stands for pitlane: a whole run, so its figures agree.
    main, footprint = sorted(runs, key=lambda run: run[0].events_per_s)[(len(runs) - 1) // 2]
    # Right after the peak it is a fraction of: this VM's speed drifts within minutes.
    latency = [
        measure_latency(
            messages,
            topics,
            settings,
            config.workers,
            config.batch_size,
            load,
            main.events_per_s,
            config.latency_seconds,
            reporter,
            config.timeout_s,
            config.redis_cluster,
        )
        for load in (
            *config.latency_loads,
            *(rate / main.events_per_s for rate in config.latency_rates),
        )
    ]
    peers = [
        measure_peer(name, script, messages, topics, reporter, config.timeout_s)
        for name, script in peer_scripts.items()
    ]
    sweep = [
        measure_pitlane(
            messages, topics, config.workers, size, reporter, config.timeout_s, config.redis_cluster
        )[0]
        for size in config.sweep_batch_sizes
    ]
    profile = (
        profile_handler(messages, topics, settings, config.batch_size, reporter)
        if config.profile
        else None
    )
    return BenchReport(
        started_at=started.isoformat(timespec="seconds"),
        machine=machine(),
        config=config,
        workload={
            "events": len(messages),
            "customers": config.customers,
            "vehicles": config.vehicles,
            "scenario_messages": workload.scenario_messages,
            "span_s": SPAN.total_seconds(),
            "by_type": workload.by_type,
        },
        pitlane=main,
        repeats=[run for run, _ in runs],
        redis=footprint,
        peers=[_with_ratio(peer, main.events_per_s) for peer in peers],
        sweep=sweep,
        latency=latency,
        profile=profile,
    )


def _with_ratio(peer: Throughput, pitlane_per_s: float) -> Throughput:
    ratio = round(peer.events_per_s / pitlane_per_s, 3) if pitlane_per_s else None
    return replace(peer, ratio_to_pitlane=ratio)


def machine() -> dict[str, Any]:
    """What the figures were measured on, and which build of pitlane measured them (the
    workers inherit the driver's environment, so they import what it imports)."""
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_gib, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "pitlane_build": build(),
        "broker": Path(find_broker()).name,
        "load_average_at_start": [round(load, 2) for load in os.getloadavg()],
    }

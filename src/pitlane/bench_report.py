"""How `pitlane bench` shows itself to a person: a progress bar while it runs, tables after."""

from __future__ import annotations

from rich.console import Group
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from pitlane.bench import BenchReport
from pitlane.bench_profile import ProfileEntry
from pitlane.bench_throughput import Throughput

PROFILE_ROWS = 12


class ProgressReporter:
    """A Reporter drawing one progress line per step on a rich Progress."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: TaskID | None = None

    @staticmethod
    def columns() -> tuple[ProgressColumn, ...]:
        """The columns the Progress should have."""
        return (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )

    def phase(self, description: str, total: int | None = None) -> None:
        """Close the current line as done and start a new one."""
        self._finish()
        self._task = self._progress.add_task(description, total=total)

    def advance(self, done: int) -> None:
        """Move the current line on."""
        if self._task is not None:
            self._progress.advance(self._task, done)

    def close(self) -> None:
        """Mark the last step done."""
        self._finish()

    def _finish(self) -> None:
        if self._task is None:
            return
        task = next(t for t in self._progress.tasks if t.id == self._task)
        done = task.total if task.total is not None else 1
        self._progress.update(self._task, total=done, completed=done)
        self._progress.stop_task(self._task)


def report_tables(report: BenchReport) -> Group:
    """The run's figures as tables, in the order docs/benchmarks.md presents them."""
    parts: list[Table] = [_throughput_table(report)]
    parts.append(_redis_table(report))
    if report.latency:
        latency = Table(
            "load",
            "offered/s",
            "achieved/s",
            "probes timed",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "worker CPU s/100k",
            "worker vCPU",
            "driver vCPU",
            title="event to trigger latency (campaign.service-due), mixed load with probes",
        )
        for point in report.latency:
            latency.add_row(
                f"{point.load_fraction:.0%}",
                f"{point.offered_per_s:,.0f}",
                f"{point.achieved_per_s:,.0f}",
                f"{point.arrived:,}/{point.expected:,}",
                *(_ms(v) for v in (point.p50_ms, point.p95_ms, point.p99_ms, point.max_ms)),
                "-" if point.worker_cpu_s_per_100k is None else f"{point.worker_cpu_s_per_100k}",
                f"{point.worker_vcpu:.2f}",
                f"{point.driver_vcpu:.2f}",
            )
        parts.append(latency)
    if report.profile is not None:
        profile = report.profile
        stages = Table(
            "stage",
            "cumulative s",
            "share of handle",
            title=(
                f"handler alone: {profile.events_per_s:,.0f} events/s, "
                f"{profile.cpu_s_per_100k:.1f} CPU s/100k; under cProfile "
                f"handle took {profile.handler_s:.1f} s"
            ),
        )
        for stage in profile.stages:
            stages.add_row(stage.stage, f"{stage.cumulative_s:.2f}", f"{stage.share:.0%}")
        parts.append(stages)
        parts.append(_profile_table("hottest functions by own time", profile.by_self))
    return Group(*parts)


def _throughput_table(report: BenchReport) -> Table:
    table = Table(
        "pipeline",
        "workers",
        "batch",
        "events",
        "seconds",
        "events/s",
        "CPU s/100k",
        "Redis CPU s/100k",
        "worker peak RSS MiB",
        "vs pitlane",
        title=(
            f"throughput: {report.workload['events']:,} events, "
            f"{report.workload['customers']:,} customers, "
            f"{report.workload['vehicles']:,} vehicles; pitlane build: "
            f"{report.machine['pitlane_build']}"
        ),
    )
    rows: list[tuple[str, Throughput]] = [("", report.pitlane)]
    if len(report.repeats) > 1:
        rows += [
            (f"run {n} of {len(report.repeats)}", run) for n, run in enumerate(report.repeats, 1)
        ]
    rows += [("peer", peer) for peer in report.peers]
    rows += [("batch sweep", point) for point in report.sweep]
    for section, run in rows:
        name = f"{run.pipeline} ({section})" if section else run.pipeline
        table.add_row(
            name,
            str(run.workers),
            "-" if run.batch_size is None else str(run.batch_size),
            f"{run.events:,}",
            f"{run.seconds:.1f}",
            f"{run.events_per_s:,.0f}",
            f"{run.cpu_s_per_100k:.1f}",
            "-" if run.redis_cpu_s_per_100k is None else f"{run.redis_cpu_s_per_100k:.1f}",
            "-" if run.worker_peak_rss_mib is None else f"{run.worker_peak_rss_mib:,.0f}",
            "-" if run.ratio_to_pitlane is None else f"{run.ratio_to_pitlane:.2f}x",
        )
    return table


def _redis_table(report: BenchReport) -> Table:
    footprint = report.redis
    table = Table(
        "entity",
        "keys",
        "sampled",
        "mean bytes",
        "p95 bytes",
        title=(
            f"Redis {footprint.redis_version}: used_memory grew "
            f"{footprint.used_memory_delta / 2**20:,.1f} MiB, "
            f"{footprint.bytes_per_entity:,.0f} bytes per entity"
        ),
    )
    for kind, sizes in footprint.kinds.items():
        table.add_row(
            kind,
            f"{sizes.keys:,}",
            f"{sizes.sampled:,}",
            f"{sizes.mean_bytes:,.0f}",
            f"{sizes.p95_bytes:,.0f}",
        )
    return table


def _profile_table(title: str, entries: list[ProfileEntry]) -> Table:
    table = Table("function", "calls", "own s", "cumulative s", title=title)
    for entry in entries[:PROFILE_ROWS]:
        table.add_row(
            entry.function, entry.calls, f"{entry.self_s:.2f}", f"{entry.cumulative_s:.2f}"
        )
    return table


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"

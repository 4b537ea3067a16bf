"""PNG charts of a bench run: throughput against batch size, latency against offered load.

matplotlib is in the `bench` extra only, so it is imported when a chart is drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pitlane.bench import BenchReport

if TYPE_CHECKING:
    from matplotlib.figure import Figure

THROUGHPUT_PNG = "bench-throughput-vs-batch-size.png"
LATENCY_PNG = "bench-latency-vs-load.png"


def write_plots(report: BenchReport, directory: Path) -> list[Path]:
    """Draw the charts the run has data for into `directory`; the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if report.sweep:
        written.append(_save(_throughput_vs_batch_size(report), directory / THROUGHPUT_PNG))
    if any(point.arrived for point in report.latency):
        written.append(_save(_latency_vs_load(report), directory / LATENCY_PNG))
    return written


def _figure() -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(7, 4.2), dpi=110, layout="constrained")


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path)
    return path


def _throughput_vs_batch_size(report: BenchReport) -> Figure:
    figure = _figure()
    axes = figure.add_subplot()
    points = sorted(report.sweep, key=lambda run: run.batch_size or 0)
    sizes = [run.batch_size or 0 for run in points]
    axes.plot(sizes, [run.events_per_s for run in points], marker="o", label="pitlane")
    for index, peer in enumerate(report.peers, start=1):
        axes.axhline(
            peer.events_per_s,
            color=f"C{index}",
            linestyle="--",
            linewidth=1,
            label=f"{peer.pipeline} (peer)",
        )
    axes.set_xscale("log")
    axes.set_xticks(sizes, [str(size) for size in sizes])
    axes.set_xlabel("PITLANE_BATCH_MAX_RECORDS")
    axes.set_ylabel("events/s")
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    axes.legend()
    workers = points[0].workers
    axes.set_title(
        f"Throughput vs batch size ({report.workload['events']:,} events, "
        f"{workers} worker{'s' if workers > 1 else ''})"
    )
    return figure


def _latency_vs_load(report: BenchReport) -> Figure:
    figure = _figure()
    axes = figure.add_subplot()
    points = sorted(
        (point for point in report.latency if point.arrived), key=lambda p: p.offered_per_s
    )
    loads = [point.offered_per_s for point in points]
    for label in ("p50", "p95", "p99"):
        values = [getattr(point, f"{label}_ms") for point in points]
        axes.plot(loads, values, marker="o", label=label)
    for point in points:
        if point.achieved_per_s < 0.95 * point.offered_per_s:  # the driver fell behind
            axes.annotate(
                f"only {point.achieved_per_s:,.0f}/s sent",
                (point.offered_per_s, point.p50_ms or 0),
                textcoords="offset points",
                xytext=(-10, -16),
                ha="right",
                fontsize=8,
            )
    axes.set_xlabel(
        f"offered events/s, 5 % of them probes (peak {report.pitlane.events_per_s:,.0f} events/s)"
    )
    axes.set_ylabel("occurred_at to trigger received, ms")
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    axes.legend()
    axes.set_title("Event-to-trigger latency vs offered load")
    return figure

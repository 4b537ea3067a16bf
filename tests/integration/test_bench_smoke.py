"""`pitlane bench` end to end on a tiny workload: it runs, consumes all, reports in full.

Correctness only: the figures of a tiny run on a shared machine mean nothing, so no
assertion here is about speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pitlane.bench_latency import PROBE_EVERY
from pitlane.compiled import build

pytestmark = pytest.mark.integration

EVENTS = 3_000


def _bench(*options: str) -> dict[str, Any]:
    """The JSON report of `pitlane bench` on the tiny workload, with `options`."""
    command = [
        sys.executable, "-m", "pitlane", "bench",
        "--events", str(EVENTS),
        "--customers", "400",
        "--vehicles", "160",
        "--batch-size", "50",
        "--latency-seconds", "1",
        "--timeout", "120",
        "--json",
        *options,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=170, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_bench_reports_every_documented_figure(tmp_path: Path) -> None:
    # cProfile sees only interpreted code, so the bench profiles the source build alone
    # (the suite runs once against each build).
    profiled = build() == "source"
    report = _bench(
        "--repeat", "2", "--latency-loads", "0.1", "--latency-rates", "150",
        *(["--profile"] if profiled else []), "--plots", str(tmp_path),
    )  # fmt: skip

    assert set(report) == {
        "started_at", "machine", "config", "workload", "pitlane", "repeats", "redis",
        "peers", "sweep", "latency", "profile",
    }  # fmt: skip
    assert report["machine"]["pitlane_build"] == build()  # the workers import what we do
    assert report["workload"]["events"] == EVENTS
    assert sum(report["workload"]["by_type"].values()) == EVENTS

    pitlane = report["pitlane"]
    assert pitlane["consumed"] == EVENTS
    assert 0 < pitlane["events"] <= EVENTS
    assert pitlane["events_per_s"] > 0
    assert pitlane["cpu_s_per_100k"] >= 0
    assert pitlane["worker_peak_rss_mib"] > 0
    assert pitlane["batches"] > 0
    assert pitlane["batch_size"] == 50
    assert len(report["repeats"]) == 2
    assert all(run["consumed"] == EVENTS for run in report["repeats"])
    assert pitlane == min(report["repeats"], key=lambda run: run["events_per_s"])  # the median

    redis = report["redis"]
    assert redis["kinds"]["customer"]["keys"] > 0
    assert redis["kinds"]["vehicle"]["keys"] > 0
    assert redis["kinds"]["customer"]["mean_bytes"] > 0
    assert redis["bytes_per_entity"] > 0

    latency, at_rate = report["latency"]
    assert latency["load_fraction"] == 0.1
    assert at_rate["offered_per_s"] == 150  # the same rate whatever this run's peak
    assert at_rate["arrived"] == at_rate["expected"] > 0
    assert latency["expected"] > 0
    assert latency["sent"] == latency["expected"]
    assert latency["offered"] == latency["expected"] * PROBE_EVERY  # probes ride on the mix
    assert latency["arrived"] == latency["expected"]
    assert 0 < latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert latency["worker_cpu_s_per_100k"] > 0  # the workers consumed the load meanwhile
    assert 0 < latency["worker_vcpu"] <= (os.cpu_count() or 1)
    assert 0 < latency["driver_vcpu"] <= (os.cpu_count() or 1)

    profile = report["profile"]
    if profiled:
        assert profile["events"] == EVENTS
        assert profile["handler_s"] > 0
        assert [stage["share"] > 0 for stage in profile["stages"]].count(True) >= 5
    else:
        assert profile is None
    assert (tmp_path / "bench-latency-vs-load.png").stat().st_size > 0


def test_bench_runs_every_peer_on_the_same_events() -> None:
    report = _bench("--peers", "--latency-loads", "")

    assert [peer["pipeline"] for peer in report["peers"]] == [
        "naive_faust", "quix_pipeline", "batch_floor",
    ]  # fmt: skip
    for peer in report["peers"]:
        assert peer["consumed"] == peer["events"] == EVENTS, peer["pipeline"]
        assert peer["events_per_s"] > 0
        ratio = peer["events_per_s"] / report["pitlane"]["events_per_s"]
        assert peer["ratio_to_pitlane"] == pytest.approx(ratio, abs=0.001)
    assert report["latency"] == []


def test_bench_on_a_redis_cluster_drains_everything_and_measures_every_primary() -> None:
    report = _bench("--latency-loads", "0.1", "--redis-cluster")

    assert report["config"]["redis_cluster"] is True
    assert report["pitlane"]["consumed"] == EVENTS
    assert report["pitlane"]["redis_cpu_s_per_100k"] > 0  # summed over the primaries
    kinds = report["redis"]["kinds"]
    assert kinds["vehicle"]["keys"] == 160  # every car: SCAN reached every primary
    assert kinds["customer"]["sampled"] == kinds["customer"]["keys"] > 0
    assert report["redis"]["bytes_per_entity"] > 0
    [latency] = report["latency"]
    assert latency["arrived"] == latency["expected"] > 0

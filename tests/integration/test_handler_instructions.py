"""`benchmarks/handler_instructions.py --bytecodes` runs and names where the work goes.

Its callgrind mode needs valgrind and takes minutes, so it is not run here; the
bytecode mode drives the same workload through the same handler loop, which keeps the
script from breaking unseen when the handler or the bench helpers change.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pitlane.compiled import build

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "handler_instructions.py"


def _run(*options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *options],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.skipif(build() != "source", reason="bytecodes are counted on the source build")
def test_bytecode_count_attributes_the_handlers_work() -> None:
    done = _run("--bytecodes", "--start", "300", "--events", "600", "--warmup", "100")

    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout)
    assert (report["start"], report["events"], report["warmup"]) == (300, 600, 100)
    functions = report["by_function"]
    assert "pitlane/ingest.py:BatchHandler.handle" in functions
    assert any(name.startswith("pitlane/domain/apply.py:") for name in functions)
    own = sum(count for name, count in functions.items() if name.startswith("pitlane/"))
    assert 100 < own <= report["bytecodes_per_event"]


def test_needs_more_events_than_warmup() -> None:
    done = _run("--bytecodes", "--events", "100", "--warmup", "100")

    assert done.returncode == 2
    assert "--events must be more than --warmup" in done.stderr


def test_rejects_a_negative_start() -> None:
    done = _run("--bytecodes", "--start", "-1")

    assert done.returncode == 2
    assert "--start must not be negative" in done.stderr


def test_rejects_a_window_past_the_workloads_end() -> None:
    done = _run("--bytecodes", "--start", "199000", "--events", "2000", "--warmup", "100")

    assert done.returncode == 1
    assert "the workload has 200,000 records, not 201,000" in done.stderr


@pytest.mark.skipif(
    build() == "source", reason="this build is not compiled, so there is nothing to refuse"
)
def test_bytecodes_of_the_compiled_build_are_refused() -> None:
    done = _run("--bytecodes", "--start", "300", "--events", "600", "--warmup", "100")

    assert done.returncode == 1
    assert "--bytecodes counts interpreted code, and pitlane here is compiled" in done.stderr

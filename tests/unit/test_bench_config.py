"""`pitlane bench` refuses options it cannot measure before it starts anything."""

from __future__ import annotations

import pytest

import pitlane.bench
from pitlane.bench import BenchConfig


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"latency_loads": (0.5, 0.0)}, "positive fractions of the peak"),
        ({"latency_rates": (3000.0, -1.0)}, "positive events per second"),
        ({"sweep_batch_sizes": (0,)}, "batch sizes must be positive"),
        ({"workers": 0}, "must be positive"),
    ],
)
def test_impossible_options_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BenchConfig(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize("built", ["compiled", "partly compiled"])
def test_profiling_a_compiled_build_is_refused(monkeypatch: pytest.MonkeyPatch, built: str) -> None:
    monkeypatch.setattr(pitlane.bench, "build", lambda: built)

    with pytest.raises(
        ValueError, match=f"--profile needs the source build.*pitlane here is {built}"
    ):
        BenchConfig(profile=True)


def test_the_source_build_can_be_profiled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pitlane.bench, "build", lambda: "source")

    assert BenchConfig(profile=True).profile

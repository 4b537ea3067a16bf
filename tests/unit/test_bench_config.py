"""`pitlane bench` refuses options it cannot measure before it starts anything."""

from __future__ import annotations

import pytest

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

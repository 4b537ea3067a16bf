"""Operator settings that cannot work together are refused at start-up, saying why."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pitlane.settings import Settings


def test_the_event_clock_is_refused_on_a_redis_cluster() -> None:
    with pytest.raises(ValidationError, match="PITLANE_CLOCK=event needs one Redis primary"):
        Settings(clock="event", redis_cluster=True)


@pytest.mark.parametrize(("clock", "cluster"), [("event", False), ("wall", True)])
def test_either_alone_is_fine(clock: str, cluster: bool) -> None:
    settings = Settings(clock=clock, redis_cluster=cluster)

    assert (settings.clock, settings.redis_cluster) == (clock, cluster)

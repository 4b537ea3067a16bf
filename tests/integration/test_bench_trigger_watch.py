"""The bench's trigger watcher: a process of its own that reports when triggers arrived,
and is gone when its block ends, whether the block finished or failed."""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections.abc import Callable
from multiprocessing.process import BaseProcess

import pytest

from pitlane.bench_latency import TriggerWatch
from pitlane.stack.embedded import EmbeddedStack

pytestmark = pytest.mark.integration

TOPIC = "campaign.service-due"

Produce = Callable[[str, str, object], None]


def _watcher() -> BaseProcess:
    [process] = [p for p in multiprocessing.active_children() if p.name == "trigger-watch"]
    return process


def test_it_reports_when_each_trigger_arrived(
    embedded_stack: EmbeddedStack, produce: Produce
) -> None:
    causes = [str(uuid.uuid4()) for _ in range(3)]
    never = str(uuid.uuid4())

    with TriggerWatch(embedded_stack.bootstrap_servers, TOPIC) as watch:
        process = _watcher()
        assert process.pid != multiprocessing.current_process().pid
        before = time.time()
        for cause in causes:
            produce(TOPIC, cause, {"caused_by": [cause]})
        after = time.time()
        arrived = watch.wait_for([*causes, never], timeout_s=2.0)

    assert set(arrived) == set(causes)
    assert all(before <= at <= after + 1.0 for at in arrived.values())
    assert not process.is_alive()
    assert process.exitcode == 0


def test_it_is_stopped_when_its_block_fails(embedded_stack: EmbeddedStack) -> None:
    seen: list[BaseProcess] = []

    def send_and_fail() -> None:
        with TriggerWatch(embedded_stack.bootstrap_servers, TOPIC):
            seen.append(_watcher())
            raise RuntimeError("sending failed")

    with pytest.raises(RuntimeError, match="sending failed"):
        send_and_fail()

    [process] = seen
    assert not process.is_alive()
    assert process.exitcode == 0
    assert "trigger-watch" not in {p.name for p in multiprocessing.active_children()}


def test_an_unknown_topic_fails_at_once(embedded_stack: EmbeddedStack) -> None:
    with (
        pytest.raises(RuntimeError, match="before it could start polling"),
        TriggerWatch(embedded_stack.bootstrap_servers, "no.such-topic"),
    ):
        pass

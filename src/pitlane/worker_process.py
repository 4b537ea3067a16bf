"""A pitlane worker as a child process, for the demo, benchmarks and tests.

Running the worker in its own process is how production runs it, and it keeps the
driver's event loop and the worker's apart. Settings reach the child the way an
operator gives them: as `PITLANE_*` environment variables.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from pitlane.stack.embedded import EmbeddedStack

EMBEDDED_SESSION_TIMEOUT_S = 2
"""Group timeouts for the embedded broker: tansu answers a join after about half the
session timeout, so the 10 s default would cost every demo, test and bench ~5 s."""


def embedded_worker_env(stack: EmbeddedStack, **settings: object) -> dict[str, str]:
    """`PITLANE_*` settings that point a worker at `stack`, plus any given here
    (`abandonment_window_s=3` becomes `PITLANE_ABANDONMENT_WINDOW_S=3`)."""
    env = {
        "PITLANE_BROKER": stack.broker_url,
        "PITLANE_REDIS_URL": stack.redis_url,
        "PITLANE_SESSION_TIMEOUT_S": str(EMBEDDED_SESSION_TIMEOUT_S),
    }
    env.update({f"PITLANE_{name.upper()}": str(value) for name, value in settings.items()})
    return env


class WorkerProcess:
    """Starts `pitlane worker` with the given settings and stops it on exit."""

    def __init__(self, env: dict[str, str], web_port: int, log_path: Path) -> None:
        self.web_port = web_port
        self.log_path = log_path
        self._env = {**os.environ, **env, "PITLANE_WEB_PORT": str(web_port)}
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The child's pid while it runs."""
        return self._process.pid if self._process else None

    def start(self) -> None:
        """Launch the worker; returns at once (see `wait_ready`)."""
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "pitlane", "worker"],
            env=self._env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def get(self, path: str) -> tuple[int, Any]:
        """GET a path of the worker's web API: status and decoded JSON body."""
        url = f"http://127.0.0.1:{self.web_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # loopback only
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Block until the worker has joined its consumer group and owns partitions."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise RuntimeError(f"worker exited early; see {self.log_path}\n{self.log_tail()}")
            try:
                status, _ = self.get("/health")
                if status == 200:
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.25)
        raise TimeoutError(f"worker not ready after {timeout_s:.0f}s; see {self.log_path}")

    def stats(self) -> dict[str, Any]:
        """The worker's running totals."""
        _, body = self.get("/stats")
        return dict(body)

    def log_tail(self, lines: int = 30) -> str:
        """The end of the worker's log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """Stop gracefully (SIGTERM, as an orchestrator would), then kill if stuck."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            return process.wait()

    def kill(self) -> None:
        """Die the hard way, as a crashed machine would: no shutdown at all."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

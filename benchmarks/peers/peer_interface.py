"""What every peer pipeline offers the benchmark harness: command line, report, exit codes.

The harness (`pitlane.bench`) starts a peer as
`python benchmarks/peers/<name>.py --broker kafka://HOST:PORT --redis redis://HOST:PORT/DB
--group GROUP --expect N [--state-dir DIR] [--timeout-s S]`, and relies on this:

- the peer reads the four input topics from the earliest offset in the fresh consumer
  group GROUP and counts every record it consumes, valid or not;
- once N records are processed it prints exactly one JSON line to stdout,
  `{"peer", "events", "seconds", "events_per_s", "cpu_s"}`, and exits 0;
- on failure it exits 1 with the reason on stderr; after `--timeout-s` it exits 2.

`seconds` runs from the moment the first record is handed to the peer's code to the
moment the Nth is done, so start-up and the consumer group join are not in it;
`cpu_s` is the CPU time of the whole process (every thread) over that same window.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType

EXIT_FAILED = 1
EXIT_TIMED_OUT = 2


def parse_args(peer: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The harness's command line, common to every peer."""
    parser = argparse.ArgumentParser(
        prog=f"{peer}.py",
        description=f"The {peer} peer pipeline: pitlane's stateful work, for benchmarking.",
    )
    parser.add_argument("--broker", required=True, help="Kafka bootstrap, kafka://HOST:PORT")
    parser.add_argument("--redis", required=True, help="Redis URL, redis://HOST:PORT/DB")
    parser.add_argument("--group", required=True, help="consumer group; must be a fresh one")
    parser.add_argument(
        "--expect", required=True, type=int, help="records to process before reporting"
    )
    parser.add_argument(
        "--state-dir", default=None, help="local state directory (default: a temporary one)"
    )
    parser.add_argument(
        "--timeout-s", type=float, default=600.0, help="give up and exit 2 after this long"
    )
    parser.add_argument(
        "--log-level", default="WARNING", help="log level of the stderr log (default WARNING)"
    )
    args = parser.parse_args(argv)
    if not args.broker.startswith("kafka://"):
        parser.error(f"--broker must look like kafka://HOST:PORT, got {args.broker!r}")
    if args.expect <= 0:
        parser.error(f"--expect must be positive, got {args.expect}")
    if args.timeout_s <= 0:
        parser.error(f"--timeout-s must be positive, got {args.timeout_s}")
    return args


def bootstrap_servers(broker: str) -> list[str]:
    """`kafka://h1:p1;h2:p2` as the `host:port` list Kafka clients take."""
    return [server for server in broker.removeprefix("kafka://").split(";") if server]


def arm_timeout(peer: str, seconds: float) -> None:
    """Exit 2 after `seconds`, whatever the peer is doing (no thread is involved).

    `os._exit` rather than an exception: a stuck consumer thread must not keep the
    process alive, and the harness needs the exit status, not a clean shutdown.
    """

    def expire(signum: int, frame: FrameType | None) -> None:
        sys.stderr.write(f"{peer}: timed out after {seconds:g} s before processing all records\n")
        sys.stderr.flush()
        os._exit(EXIT_TIMED_OUT)

    signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def fail(peer: str, reason: str) -> int:
    """Say why the peer failed, on stderr; returns the exit status to use."""
    sys.stderr.write(f"{peer}: failed: {reason}\n")
    sys.stderr.flush()
    return EXIT_FAILED


class Meter:
    """Counts processed records and prints the report line when the Nth is done."""

    def __init__(self, peer: str, expect: int) -> None:
        self.peer = peer
        self.expect = expect
        self.count = 0
        self._started_at: float | None = None
        self._cpu_at_start = 0.0

    @property
    def finished(self) -> bool:
        """True once `expect` records are processed (and the report printed)."""
        return self.count >= self.expect

    def seen(self) -> None:
        """Call when a record reaches the peer's code; the first one starts the clock."""
        if self._started_at is None:
            self._started_at = time.perf_counter()
            self._cpu_at_start = time.process_time()

    def done(self) -> bool:
        """Call when a record is processed; True exactly once, when it is the Nth."""
        self.count += 1
        if self.count != self.expect:
            return False
        assert self._started_at is not None, "seen() comes before done()"
        seconds = time.perf_counter() - self._started_at
        report = {
            "peer": self.peer,
            "events": self.count,
            "seconds": round(seconds, 4),
            "events_per_s": round(self.count / seconds, 1) if seconds > 0 else None,
            "cpu_s": round(time.process_time() - self._cpu_at_start, 4),
        }
        # sys.__stdout__: frameworks may redirect sys.stdout into their logging.
        out = sys.__stdout__ or sys.stdout
        out.write(json.dumps(report) + "\n")
        out.flush()
        return True


def exit_status(meter: Meter, runner: str) -> int:
    """0 once every record was processed, else the failure of a `runner` that stopped early."""
    if meter.finished:
        return 0
    return fail(meter.peer, f"{runner} stopped after {meter.count} of {meter.expect} records")

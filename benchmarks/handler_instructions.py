"""Instructions per event of the batch handler, counted by callgrind.

A rate on this machine drifts by 10 % from one run to the next, so a change that
saves a percent or two cannot be seen in events/s. An instruction count does not
depend on the machine's speed: counts of the same code agree within 0.03 %.

    python benchmarks/handler_instructions.py [--start 100000] [--events 12000] [--warmup 2000]

Needs valgrind (`apt-get install valgrind`). Builds the default `pitlane bench`
workload and starts the embedded stack. The first `--start` records are applied
without valgrind: the workload begins by setting its world up (cars linked, consents
given, services completed), so its first records are not the standard mix. Then the
handler runs twice in a child process under callgrind with a fixed clock and hash
seed, from the state the first `--start` records left: on the next `--warmup`
records and on the next `--events`. The difference of the two counts, per event,
leaves out the interpreter's start and the imports. About two minutes. Prints one
JSON object.

Instructions are not time (Python's interpreter loop retires more instructions per
cycle than, say, a dict miss does), so confirm a saving with `pitlane bench` too.

Run from the compiled build (`PYTHONPATH="$(scripts/compiled.sh)"`), the callgrind
count is the compiled handler's.

`--bytecodes` says where the Python-level work is instead, without valgrind: the
handler runs in this process, and a trace function counts the bytecodes each
function executes on the same records (about half a minute). Code
generated at run time (a dataclass's `__init__`, a NamedTuple's `__new__`) is named
after its class.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import redis
from pydantic import SecretStr

from pitlane.adapters.redis_store import make_store
from pitlane.bench import BenchConfig, build_workload
from pitlane.bench_harness import Silent
from pitlane.bench_profile import Record, time_handler
from pitlane.compiled import build
from pitlane.settings import Settings
from pitlane.stack.embedded import EmbeddedStack
from pitlane.topics import load_topics

_COUNT = re.compile(rb"I\s+refs:\s+([\d,]+)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=12_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--bytecodes", action="store_true", help="count bytecodes instead")
    parser.add_argument("--child", nargs=4, metavar=("START", "N", "REDIS_URL", "WORKLOAD"))
    options = parser.parse_args()
    if options.child:
        start, count, url, workload = options.child
        handle(int(start), int(count), url, Path(workload))
        return
    if not options.events > options.warmup >= 0:
        parser.error("--events must be more than --warmup")
    if options.start < 0:
        parser.error("--start must not be negative")
    if options.bytecodes:
        print(json.dumps(count_bytecodes(options.start, options.events, options.warmup)))
        return
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    _quiet()
    now = datetime.now(UTC).replace(microsecond=0)
    workload = build_workload(BenchConfig(), now)
    with tempfile.TemporaryDirectory(prefix="pitlane-instructions-") as scratch:
        path = Path(scratch) / "workload.pickle"
        end = options.start + options.events
        if end > len(workload.messages):
            sys.exit(f"the workload has {len(workload.messages):,} records, not {end:,}")
        kept = [(m.topic, m.key, m.value) for m in workload.messages[:end]]
        path.write_bytes(pickle.dumps((now, kept)))
        with EmbeddedStack(load_topics(Settings().topics_file)) as stack:
            counts = {
                n: count_instructions(valgrind, options.start, n, stack.redis_url, path)
                for n in (options.warmup, options.events)
            }
    per_event = (counts[options.events] - counts[options.warmup]) / (
        options.events - options.warmup
    )
    print(
        json.dumps(
            {
                "commit": _commit(),
                "start": options.start,
                "events": options.events,
                "warmup": options.warmup,
                "instructions": counts,
                "instructions_per_event": round(per_event),
            }
        )
    )


def count_instructions(
    valgrind: str, start: int, events: int, redis_url: str, workload: Path
) -> int:
    """Instructions this script's child retires handling the `events` records after
    the first `start`, which are applied first without valgrind."""
    redis.Redis.from_url(redis_url).flushall()
    now, messages = pickle.loads(workload.read_bytes())
    asyncio.run(_apply(_records(messages)[:start], redis_url, now))
    command = [
        valgrind,
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--child",
        str(start),
        str(events),
        redis_url,
        str(workload),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, capture_output=True, env=env, check=False)
    found = _COUNT.search(done.stderr)
    if done.returncode != 0 or found is None:
        sys.exit(f"callgrind run failed:\n{done.stderr.decode(errors='replace')[-2000:]}")
    return int(found.group(1).replace(b",", b""))


def count_bytecodes(start: int, events: int, warmup: int) -> dict[str, Any]:
    """Bytecodes per event of records `start + warmup` to `start + events`, in all and
    per function."""
    now = datetime.now(UTC).replace(microsecond=0)
    messages = build_workload(BenchConfig(), now).messages[: start + events]
    if len(messages) < start + events:
        sys.exit(f"the workload has {len(messages):,} records, not {start + events:,}")
    if (built := build()) != "source":
        sys.exit(
            f"--bytecodes counts interpreted code, and pitlane here is {built}: "
            "take the compiled build off PYTHONPATH"
        )
    records = _records([(m.topic, m.key, m.value) for m in messages])
    counts: Counter[str] = Counter()

    def tracer(frame: FrameType, event: str, arg: object) -> Any:  # sys.settrace's type
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        if event == "opcode":
            counts[_function(frame)] += 1
        return tracer

    with EmbeddedStack(load_topics(Settings().topics_file)) as stack:
        _quiet()
        settings = Settings().model_copy(update={"redis_url": SecretStr(stack.redis_url)})
        topics = load_topics(settings.topics_file)
        untraced = start + warmup
        for part, traced in ((records[:untraced], False), (records[untraced:], True)):
            sys.settrace(tracer if traced else None)
            try:
                asyncio.run(
                    time_handler(part, make_store(settings), settings, topics, 500, Silent())
                )
            finally:
                sys.settrace(None)
    traced_events = events - warmup
    total = sum(counts.values())
    return {
        "commit": _commit(),
        "start": start,
        "events": events,
        "warmup": warmup,
        "bytecodes_per_event": round(total / traced_events),
        "by_function": {
            name: round(count / traced_events, 1) for name, count in counts.most_common(40)
        },
    }


def _function(frame: FrameType) -> str:
    code = frame.f_code
    if code.co_filename == "<string>":
        owner = frame.f_locals.get("self", frame.f_locals.get("_cls"))
        kind = owner if isinstance(owner, type) else type(owner)
        return f"{kind.__qualname__}.{code.co_name} (generated)"
    path = code.co_filename.rsplit("site-packages/", 1)[-1].rsplit("/src/", 1)[-1]
    return f"{path}:{code.co_qualname}"


def _quiet() -> None:
    logging.getLogger("pitlane").addHandler(logging.NullHandler())
    logging.getLogger("pitlane").propagate = False


def handle(start: int, events: int, redis_url: str, workload: Path) -> None:
    """The measured child: the handler on the `events` records after the first `start`."""
    _quiet()
    now, messages = pickle.loads(workload.read_bytes())
    asyncio.run(_apply(_records(messages)[start : start + events], redis_url, now))


def _records(messages: list[tuple[str, bytes | None, bytes]]) -> list[Record]:
    """The workload as consumed records; offsets count across it, so they only grow."""
    return [Record(topic, 0, i, key, value) for i, (topic, key, value) in enumerate(messages)]


async def _apply(records: list[Record], redis_url: str, now: datetime) -> None:
    """The handler on `records` in batches of 500, every batch at the time `now`."""
    settings = Settings().model_copy(update={"redis_url": SecretStr(redis_url)})
    topics = load_topics(settings.topics_file)
    await time_handler(records, make_store(settings), settings, topics, 500, Silent(), lambda: now)


def _commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip()


if __name__ == "__main__":
    main()

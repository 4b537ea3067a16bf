"""pitlane's telematics path per reading: the Python core against the Rust slice.

    benchmarks/native_slice/run.sh      # builds the slice, then runs this

Builds the default `pitlane bench` workload and applies it in memory with the domain
code, settling pending offsets every 2,000 records as the worker's writes do. Every
telematics reading after record 100,000 (the standard mix, see docs/benchmarks.md)
is kept with its car's stored value just before it. Then the same readings, in
batches of 500, go through three paths, each from the reading's bytes and the stored
value to the new stored value:

- `python`: `decode_event`, the store's `decode`, `keys_for`, `apply`, `encode`;
- `rust_tree`: the slice with the car as a JSON tree, as the Python core holds it;
- `rust_typed`: the slice with the car as a typed record.

The three must agree on every reading (the same JSON), or the script stops. Prints
one JSON object: CPU microseconds per reading for each path, the median of
`--rounds`, and the Python path's steps, each timed around its call. `run.sh` puts
the compiled build first on `PYTHONPATH`: the Python figure is what production runs.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from pitlane.adapters.redis_store import decode, encode
from pitlane.bench import BenchConfig, build_workload
from pitlane.compiled import build
from pitlane.domain.apply import apply
from pitlane.domain.dedupe import settle
from pitlane.domain.entities import EntityKey, vehicle
from pitlane.domain.events import (
    INPUT_TOPIC_OF_TYPE,
    InputEvent,
    InvalidEvent,
    TelematicsReading,
    decode_event,
)
from pitlane.domain.profile import State
from pitlane.domain.routing import Unroutable, keys_for
from pitlane.settings import Settings

TOPIC = INPUT_TOPIC_OF_TYPE["telematics.reading"]
_INPUT_TOPICS = frozenset(INPUT_TOPIC_OF_TYPE.values())
PARTITION = f"{TOPIC}:3"
Item = tuple[bytes, bytes, str, int]
Path = Callable[[Sequence[Item]], list[bytes]]
_SETTINGS = Settings()
_SALT = _SETTINGS.erasure_salt.get_secret_value()


def readings(start: int) -> list[Item]:
    """Each telematics reading from record `start` on, with its car's stored value."""
    states: dict[EntityKey, State | None] = {}
    items: list[Item] = []
    for index, message in enumerate(build_workload(BenchConfig(), datetime.now(UTC)).messages):
        try:
            event = decode_event(message.value, message.topic)
            while missing := [k for k in keys_for(event, states, _SALT) if k not in states]:
                states.update(dict.fromkeys(missing))
        except (InvalidEvent, Unroutable):
            continue
        if index >= start and isinstance(event, TelematicsReading):
            car = states.get(vehicle(event.vin))
            if car is not None:
                items.append((message.value, encode(7, car), PARTITION, index))
        apply(event, states, _SETTINGS, (f"{message.topic}:0", index))
        if index % 2_000 == 0:
            committed = {f"{topic}:0": index for topic in _INPUT_TOPICS}
            for state in states.values():
                if state is not None and state["kind"] != "erased":
                    settle(state, committed)
    return items


def python_path(items: Sequence[Item]) -> list[bytes]:
    """What the worker's handler does for a reading, without Redis and Kafka."""
    out = []
    for raw, stored, partition, offset in items:
        event = decode_event(raw, TOPIC)
        loaded = decode(stored)
        out.append(encode(loaded.version + 1, _applied(event, loaded.state, partition, offset)))
    return out


def _applied(event: InputEvent, car: State, partition: str, offset: int) -> State:
    """The reading routed and applied to its car (`car`, changed in place)."""
    assert isinstance(event, TelematicsReading)
    states: dict[EntityKey, State | None] = {vehicle(event.vin): car}
    keys_for(event, states, _SALT)
    apply(event, states, _SETTINGS, (partition, offset))
    return car


def _same(a: bytes, b: bytes) -> bool:
    version_a, _, body_a = a.partition(b"|")
    version_b, _, body_b = b.partition(b"|")
    return version_a == version_b and orjson.loads(body_a) == orjson.loads(body_b)


def _cpu_us(path: Path, batches: list[list[Item]], count: int) -> float:
    started = time.process_time()
    for batch in batches:
        path(batch)
    return (time.process_time() - started) / count * 1e6


def _python_steps(items: list[Item]) -> dict[str, float]:
    """The Python path's steps, each timed around its call (wall clock, one thread)."""
    spent = [0, 0, 0, 0]
    clock = time.perf_counter_ns
    for raw, stored, partition, offset in items:
        t0 = clock()
        event = decode_event(raw, TOPIC)
        t1 = clock()
        loaded = decode(stored)
        t2 = clock()
        car = _applied(event, loaded.state, partition, offset)
        t3 = clock()
        encode(loaded.version + 1, car)
        t4 = clock()
        for step, (begun, ended) in enumerate(((t0, t1), (t1, t2), (t2, t3), (t3, t4))):
            spent[step] += ended - begun
    names = ("decode_event", "state_decode", "route_and_apply", "state_encode")
    return {name: round(ns / 1e3 / len(items), 2) for name, ns in zip(names, spent, strict=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=int, default=100_000, help="first record kept")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of each path")
    args = parser.parse_args()
    native: Any = importlib.import_module("native_slice")
    paths: dict[str, Path] = {
        "python": python_path,
        "rust_tree": native.telematics_tree,
        "rust_typed": native.telematics_typed,
    }
    items = readings(args.start)
    batches = [items[k : k + 500] for k in range(0, len(items), 500)]
    outputs = {name: [v for batch in batches for v in path(batch)] for name, path in paths.items()}
    for name, values in outputs.items():
        differ = sum(not _same(a, b) for a, b in zip(outputs["python"], values, strict=True))
        if differ:
            raise SystemExit(f"{name} disagrees with the Python core on {differ} readings")
    rounds: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.rounds):  # interleaved, so that the machine's drift hits all
        for name, path in paths.items():
            rounds[name].append(_cpu_us(path, batches, len(items)))
    median = {name: round(statistics.median(times), 2) for name, times in rounds.items()}
    report = {
        "readings": len(items),
        "mean_stored_bytes": round(statistics.mean(len(stored) for _, stored, _, _ in items)),
        "pitlane_build": build(),
        "cpu_us_per_reading": median,
        "python_over_rust": {
            name: round(median["python"] / median[name], 2) for name in paths if name != "python"
        },
        "python_steps_us": _python_steps(items),
        "rounds_us": {name: [round(t, 2) for t in times] for name, times in rounds.items()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""`pitlane replay`: publish recorded events, in order, to the topics they belong on.

A team replays a day of traffic (one JSON event per line, files or a directory of
`*.jsonl`) into the input topics, then starts workers with `PITLANE_CLOCK=event`, and
gets the triggers the live run would have given. Lines that are not events are
reported with their file and line number and not sent: the replay never guesses a
topic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from pitlane.domain.events import INPUT_TOPIC_OF_TYPE
from pitlane.simulate import PublishReport, SimulatedMessage, publish


@dataclass
class ReplayPlan:
    """What a set of recordings holds: messages to send and lines that cannot be."""

    messages: list[SimulatedMessage] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    last_event_time: str | None = None


def recording_files(paths: Iterable[Path]) -> list[Path]:
    """The files to replay: each file given, and each directory's `*.jsonl` by name."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(path.glob("*.jsonl")))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"no recording at {path}")
    return files


def message_key(event: dict[str, Any]) -> str | None:
    """The contract's key: the vin for telematics, else the customer, else the visitor."""
    if str(event.get("type", "")).startswith("telematics."):
        return str(event["vin"]) if event.get("vin") else None
    for name in ("customer_id", "anonymous_id"):
        if event.get(name):
            return str(event[name])
    return None


def plan(files: Iterable[Path]) -> ReplayPlan:
    """Read every line of `files` in order into messages, keeping each line's bytes."""
    result = ReplayPlan()
    for path in files:
        for number, line in _lines(path):
            where = f"{path}:{number}"
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError as error:
                result.rejected.append(f"{where}: invalid JSON ({error})")
                continue
            kind = event.get("type") if isinstance(event, dict) else None
            topic = INPUT_TOPIC_OF_TYPE.get(kind) if isinstance(kind, str) else None
            if topic is None:
                result.rejected.append(f"{where}: not an event of a known type")
                continue
            key = message_key(event)
            result.messages.append(SimulatedMessage(topic, key.encode() if key else None, line))
            occurred = event.get("occurred_at")
            if isinstance(occurred, str) and (
                result.last_event_time is None or occurred > result.last_event_time
            ):
                result.last_event_time = occurred
    return result


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            stripped = line.strip()
            if stripped:
                yield number, stripped


def replay(
    bootstrap_servers: list[str],
    recording: ReplayPlan,
    on_sent: Callable[[int], None] | None = None,
    pace: float | None = None,
) -> PublishReport:
    """Publish the plan's messages in order (kafka-python, acknowledged)."""
    return publish(bootstrap_servers, recording.messages, on_sent=on_sent, pace=pace)

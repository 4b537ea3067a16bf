"""docs/events.md is what producers copy from, so its examples and tables must match the models."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from pitlane.domain.events import (
    EVENT_TYPES,
    INPUT_TOPIC_OF_TYPE,
    Envelope,
    InvalidEvent,
    decode_event,
    event_fields,
)
from pitlane.domain.outputs import (
    AbandonedConfigurationContext,
    DeadLetter,
    ServiceDueContext,
    SuppressedTrigger,
    Trigger,
)

DOC = (Path(__file__).parents[3] / "docs" / "events.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```json\n(.*?)^```$", DOC, flags=re.MULTILINE | re.DOTALL)
EXAMPLES: list[dict[str, Any]] = [orjson.loads(block) for block in BLOCKS]
CONTEXT_MODELS: dict[str, type[BaseModel]] = {
    "abandoned_configuration": AbandonedConfigurationContext,
    "service_due": ServiceDueContext,
}
ENVELOPE = {"event_id", "type", "occurred_at", "customer_id", "anonymous_id"}
IDS = {"customer_id", "anonymous_id"}


def kind_of(example: dict[str, Any]) -> str:
    """Which contract document an example is, judged by its own fields."""
    if example.get("type") in EVENT_TYPES:
        return "input"
    if "trigger_id" in example:
        return "trigger"
    if "trigger" in example:
        return "suppressed"
    if "original_b64" in example:
        return "deadletter"
    raise AssertionError(f"doc example of unknown kind: {sorted(example)}")


def of_kind(kind: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (block, example)
        for block, example in zip(BLOCKS, EXAMPLES, strict=True)
        if kind_of(example) == kind
    ]


def section(heading: str) -> str:
    """The text under the `heading` line up to the next heading."""
    match = re.search(rf"^{re.escape(heading)}\n(.*?)(?=^##)", DOC, re.MULTILINE | re.DOTALL)
    assert match, f"no section {heading!r} in docs/events.md"
    return match.group(1)


def table_rows(text: str) -> dict[str, list[str]]:
    """First-column field name -> remaining cells, for every table row naming a field."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| `"):
            name, *cells = (cell.strip() for cell in line.strip("| ").split("|"))
            rows[name.strip("`")] = cells
    return rows


def tables(text: str) -> list[set[str]]:
    """The field names of each table in `text`."""
    return [set(table_rows(paragraph)) for paragraph in re.split(r"\n\s*\n", text)]


def test_every_example_is_a_known_kind() -> None:
    kinds = [kind_of(example) for example in EXAMPLES]

    assert {"input", "trigger", "suppressed", "deadletter"} <= set(kinds)


def test_every_input_type_has_an_example() -> None:
    documented = [example["type"] for _, example in of_kind("input")]

    assert sorted(documented) == sorted(EVENT_TYPES)


@pytest.mark.parametrize(
    "block", [block for block, _ in of_kind("input")], ids=lambda block: orjson.loads(block)["type"]
)
def test_input_example_decodes_on_its_topic(block: str) -> None:
    event_type = orjson.loads(block)["type"]

    event = decode_event(block.encode(), INPUT_TOPIC_OF_TYPE[event_type])

    assert type(event) is EVENT_TYPES[event_type]


def documented_under_its_type(model: type[Envelope], name: str) -> bool:
    """Envelope fields live in the envelope table, unless the type makes an id required."""
    return name not in ENVELOPE or (name in IDS and event_fields(model)[name].is_required())


@pytest.mark.parametrize("event_type", list(EVENT_TYPES))
def test_type_table_lists_its_fields_and_whether_required(event_type: str) -> None:
    model = EVENT_TYPES[event_type]
    expected = {
        name: "yes" if field.is_required() else "no"
        for name, field in event_fields(model).items()
        if documented_under_its_type(model, name)
    }

    rows = table_rows(section(f"### `{event_type}`"))

    assert {name: cells[1] for name, cells in rows.items()} == expected


def test_envelope_table_lists_the_envelope() -> None:
    assert set(table_rows(section("## Envelope"))) == ENVELOPE


def test_trigger_examples_validate_with_their_context() -> None:
    triggers = [Trigger.model_validate(example) for _, example in of_kind("trigger")]
    triggers += [SuppressedTrigger.model_validate(ex).trigger for _, ex in of_kind("suppressed")]

    assert {trigger.type for trigger in triggers} == set(CONTEXT_MODELS)
    for trigger in triggers:
        CONTEXT_MODELS[trigger.type].model_validate(trigger.context)


def test_dead_letter_example_is_what_pitlane_would_write() -> None:
    [(_, example)] = of_kind("deadletter")
    letter = DeadLetter.model_validate(example)

    with pytest.raises(InvalidEvent) as caught:
        decode_event(base64.b64decode(letter.original_b64), letter.topic)

    assert caught.value.reason == letter.reason


@pytest.mark.parametrize(
    "model",
    [Trigger, SuppressedTrigger, DeadLetter, AbandonedConfigurationContext, ServiceDueContext],
)
def test_each_output_has_a_table_of_exactly_its_fields(model: type[BaseModel]) -> None:
    outputs = DOC[DOC.index("## What pitlane emits") :]

    assert set(model.model_fields) in tables(outputs)

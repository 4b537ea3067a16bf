"""JSON Schema export: one file per contract document, stable and faithful to the models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from pitlane.domain.events import EVENT_TYPES, event_fields
from pitlane.schema import write_schemas

OUTPUT_NAMES = [
    "trigger",
    "suppressed_trigger",
    "deadletter",
    "abandoned_configuration.context",
    "service_due.context",
]


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


@pytest.fixture(scope="module")
def schemas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One export shared by the tests that only read it."""
    out_dir = tmp_path_factory.mktemp("schemas")
    write_schemas(out_dir)
    return out_dir


def test_one_file_per_input_type_and_output(tmp_path: Path) -> None:
    paths = write_schemas(tmp_path)

    assert [path.name for path in paths] == [
        f"{name}.json" for name in [*EVENT_TYPES, *OUTPUT_NAMES]
    ]
    assert sorted(tmp_path.iterdir()) == sorted(paths)


def test_output_is_deterministic_and_sorted(tmp_path: Path) -> None:
    first = write_schemas(tmp_path / "a")
    second = write_schemas(tmp_path / "b")

    for one, other in zip(first, second, strict=True):
        text = one.read_text(encoding="utf-8")
        assert text == other.read_text(encoding="utf-8")
        assert text == json.dumps(load(one), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_rewriting_overwrites_in_place(tmp_path: Path) -> None:
    (tmp_path / "trigger.json").write_text("stale", encoding="utf-8")
    (tmp_path / "README").write_text("keep", encoding="utf-8")

    write_schemas(tmp_path)

    assert load(tmp_path / "trigger.json")["title"] == "Trigger"
    assert (tmp_path / "README").read_text(encoding="utf-8") == "keep"


@pytest.mark.parametrize("path", OUTPUT_NAMES + list(EVENT_TYPES))
def test_every_file_is_a_valid_2020_12_schema(schemas: Path, path: str) -> None:
    document = load(schemas / f"{path}.json")

    Draft202012Validator.check_schema(document)
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("event_type", list(EVENT_TYPES))
def test_input_schema_pins_type_and_required_fields(schemas: Path, event_type: str) -> None:
    document = load(schemas / f"{event_type}.json")
    model = EVENT_TYPES[event_type]

    assert document["properties"]["type"]["const"] == event_type
    assert document["required"] == [
        name for name, field in event_fields(model).items() if field.is_required()
    ]


def test_configurator_schema_requires_one_identifier(schemas: Path) -> None:
    validator = Draft202012Validator(load(schemas / "configurator.quote_requested.json"))
    event = {
        "event_id": "e",
        "type": "configurator.quote_requested",
        "occurred_at": "2026-11-22T08:00:00Z",
        "session_id": "s",
        "configuration_id": "CFG-1",
    }

    assert not validator.is_valid(event)
    assert not validator.is_valid({**event, "customer_id": "", "anonymous_id": None})
    assert validator.is_valid({**event, "anonymous_id": "web-1"})
    assert validator.is_valid({**event, "customer_id": "C-1"})


def test_output_schemas_mark_always_written_fields_required(schemas: Path) -> None:
    assert "schema_version" in load(schemas / "trigger.json")["required"]
    assert "detail" in load(schemas / "suppressed_trigger.json")["required"]
    assert "key_b64" in load(schemas / "deadletter.json")["required"]

"""JSON Schema export of the wire contract, for producer and consumer teams.

Files are byte-for-byte deterministic so that a committed copy diffs cleanly and a
CI check can tell when a model change alters the contract.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter

from pitlane.domain.events import EVENT_TYPES
from pitlane.domain.outputs import (
    AbandonedConfigurationContext,
    DeadLetter,
    ServiceDueContext,
    SuppressedTrigger,
    Trigger,
)

_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# Outputs are described as pitlane writes them, inputs as pitlane accepts them.
_OUTPUTS: dict[str, type[BaseModel]] = {
    "trigger": Trigger,
    "suppressed_trigger": SuppressedTrigger,
    "deadletter": DeadLetter,
    "abandoned_configuration.context": AbandonedConfigurationContext,
    "service_due.context": ServiceDueContext,
}


def write_schemas(out_dir: Path) -> list[Path]:
    """Write one `<name>.json` per input event type and per output; return the paths.

    Input files are named after the event `type` (`configurator.option_selected.json`).
    Existing files of the same name are overwritten; others in `out_dir` are left alone.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    documents = {name: _schema(model, "validation") for name, model in EVENT_TYPES.items()}
    documents |= {name: _schema(model, "serialization") for name, model in _OUTPUTS.items()}
    paths = []
    for name, document in documents.items():
        path = out_dir / f"{name}.json"
        path.write_text(
            json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
            encoding="utf-8",
        )
        paths.append(path)
    return paths


def _schema(model: type[Any], mode: Literal["validation", "serialization"]) -> dict[str, Any]:
    return {"$schema": _DIALECT, **TypeAdapter(model).json_schema(mode=mode)}

"""The `pitlane` commands an operator, a dealer and a downstream team run, as processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pitlane.stack.embedded import EmbeddedStack
from pitlane.worker_process import WorkerProcess
from wire import customer_key, event, option_click, stored, unique, wait_for

pytestmark = pytest.mark.integration


def _pitlane(
    stack: EmbeddedStack, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PITLANE_BROKER": stack.broker_url, "PITLANE_REDIS_URL": stack.redis_url}
    return subprocess.run(
        [sys.executable, "-m", "pitlane", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_profile_prints_the_dealer_view_as_json_and_readably(
    embedded_stack: EmbeddedStack,
    worker: WorkerProcess,
    produce: Callable[[str, str, object], None],
    redis_client: object,
) -> None:
    customer = unique("C")
    produce(
        "configurator.events",
        customer,
        event(
            "configurator.option_selected",
            customer_id=customer,
            session_id="S1",
            model_code="TAYCAN-4S",
            category="color",
            option_code="GENTIAN",
            option_label="Gentian Blue",
        ),
    )
    wait_for(lambda: stored(redis_client, customer_key(customer)))  # type: ignore[arg-type]

    as_json = _pitlane(embedded_stack, "profile", customer, "--json")
    readable = _pitlane(embedded_stack, "profile", customer)
    unknown = _pitlane(embedded_stack, "profile", unique("nobody"))

    assert as_json.returncode == 0, as_json.stderr
    view = json.loads(as_json.stdout)
    assert view["customer_id"] == customer
    assert view["sessions"][0]["options"]["color"][0]["label"] == "Gentian Blue"
    assert readable.returncode == 0
    assert "Gentian Blue" in readable.stdout
    assert unknown.returncode == 1


def test_tail_prints_triggers_as_json_lines(
    embedded_stack: EmbeddedStack,
    worker: WorkerProcess,
    produce: Callable[[str, str, object], None],
) -> None:
    customer = unique("C")
    produce(
        "identity.events",
        customer,
        event("identity.consent_updated", customer_id=customer, channel="push", granted=True),
    )
    for code in ("A", "B", "C"):
        produce(
            "configurator.events",
            customer,
            # Long quiet since the clicks: the reminder fires at once.
            option_click(customer, code, occurred_at="2026-11-01T08:00:00Z"),
        )

    def tailed() -> list[dict[str, object]]:
        out = _pitlane(
            embedded_stack,
            "tail",
            "campaign.abandoned-configuration",
            "--json",
            "--from-beginning",
            "--idle-timeout",
            "1",
        )
        lines = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        return [t for t in lines if t.get("customer_id") == customer]

    triggers = wait_for(tailed, timeout_s=40)

    assert triggers[0]["topic"] == "campaign.abandoned-configuration"
    assert triggers[0]["channels"] == ["push"]


def test_topics_create_is_idempotent_and_schema_writes_files(
    embedded_stack: EmbeddedStack, tmp_path: Path
) -> None:
    again = _pitlane(embedded_stack, "topics", "create")
    schemas = _pitlane(embedded_stack, "schema", "--out", str(tmp_path))

    assert again.returncode == 0, again.stderr
    assert "created nothing" in again.stdout
    assert schemas.returncode == 0, schemas.stderr
    assert (tmp_path / "configurator.option_selected.json").exists()
    assert (tmp_path / "trigger.json").exists()

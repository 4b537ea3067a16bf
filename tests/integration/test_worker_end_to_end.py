"""A real worker process on the embedded stack: events in through Kafka, state in Redis."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import redis

from pitlane.adapters.redis_store import decode
from pitlane.compiled import build
from pitlane.domain.entities import event_tag
from pitlane.worker_process import WorkerProcess
from wire import customer_key, event, option_click, session_clicks, stored, wait_for

pytestmark = pytest.mark.integration


def _profile(redis_client: redis.Redis, customer_id: str) -> dict[str, Any] | None:
    return stored(redis_client, customer_key(customer_id))


def test_events_reach_the_profile(
    worker: WorkerProcess, produce: Callable[..., None], redis_client: redis.Redis
) -> None:
    customer = f"C-{uuid.uuid4().hex[:8]}"
    visitor = f"anon-{uuid.uuid4().hex[:8]}"
    clicks = [
        event(
            "configurator.option_selected",
            anonymous_id=visitor,
            session_id="S1",
            model_code="ID4-PRO",
            category=category,
            option_code=code,
            option_label=label,
            occurred_at=f"2026-11-22T08:0{i}:00Z",
        )
        for i, (category, code, label) in enumerate(
            [
                ("color", "P8P8", "Kings Red"),
                ("wheels", "W20", "20in Sagitta"),
                ("package", "PK1", "Comfort"),
            ]
        )
    ]
    for click in clicks:
        produce("configurator.events", visitor, click)
    produce(
        "identity.events",
        customer,
        event("identity.customer_identified", customer_id=customer, anonymous_id=visitor),
    )
    produce(
        "identity.events",
        customer,
        event("identity.consent_updated", customer_id=customer, channel="email", granted=True),
    )
    # The two topics are consumed independently: the merge may come before the last click.
    profile = wait_for(
        lambda: (
            (p := _profile(redis_client, customer))
            and p["consent"]
            and session_clicks(p, "S1") == 3
            and p
        )
    )
    session = profile["sessions"]["S1"]
    assert set(session["opts"]) == {"color", "wheels", "package"}
    assert profile["anon_ids"] == [visitor]
    assert profile["consent"]["email"][0] is True

    status, view = worker.get(f"/customers/{customer}")
    assert status == 200
    assert view["sessions"][0]["options"]["color"][0]["label"] == "Kings Red"
    status, _ = worker.get("/customers/nobody-here")
    assert status == 404


def test_health_says_which_build_the_worker_runs(worker: WorkerProcess) -> None:
    status, health = wait_for(lambda: (r := worker.get("/health"))[0] == 200 and r)

    assert status == 200
    assert health["build"] == build()  # the worker inherits this process's PYTHONPATH
    assert health["partitions"]


def test_malformed_message_goes_to_deadletter_and_later_events_apply(
    worker: WorkerProcess,
    produce: Callable[..., None],
    redis_client: redis.Redis,
    read_topic: Callable[..., list[dict[str, Any]]],
) -> None:
    customer = f"C-{uuid.uuid4().hex[:8]}"
    garbage = b'{"event_id": "x", "type": "identity.consent_updated", "customer_id": '
    produce("identity.events", customer, garbage)
    produce(
        "identity.events",
        customer,
        event("identity.consent_updated", customer_id=customer, channel="sms", granted=True),
    )
    wait_for(lambda: (p := _profile(redis_client, customer)) and p["consent"].get("sms"))
    letters = read_topic(
        "pitlane.deadletter",
        lambda letter: base64.b64decode(letter.get("original_b64", "")) == garbage,
    )
    assert letters[0]["topic"] == "identity.events"
    assert "invalid JSON" in letters[0]["reason"]
    assert letters[0]["offset"] >= 0


def test_duplicate_event_is_applied_once(
    worker: WorkerProcess, produce: Callable[..., None], redis_client: redis.Redis
) -> None:
    customer = f"C-{uuid.uuid4().hex[:8]}"
    click = event(
        "configurator.option_selected",
        customer_id=customer,
        session_id="S9",
        model_code="GOLF-GTI",
        category="accessory",
        option_code="ROOFBOX",
    )
    produce("configurator.events", customer, click)
    produce("configurator.events", customer, click)
    marker = event("identity.consent_updated", customer_id=customer, channel="push", granted=False)
    produce(
        "configurator.events",
        customer,
        event(
            "configurator.session_started",
            customer_id=customer,
            session_id="S10",
            model_code="GOLF-GTI",
        ),
    )
    produce("identity.events", customer, marker)
    profile = wait_for(
        lambda: (p := _profile(redis_client, customer)) and "S10" in p["sessions"] and p
    )
    assert profile["sessions"]["S9"]["n"] == 1


def test_erasure_leaves_no_key_of_the_customer(
    worker: WorkerProcess, produce: Callable[..., None], redis_client: redis.Redis
) -> None:
    customer = f"C-{uuid.uuid4().hex[:8]}"
    visitor = f"anon-{uuid.uuid4().hex[:8]}"
    vin = "WVWZZZE1Z" + uuid.uuid4().hex[:8].upper()
    produce(
        "configurator.events",
        visitor,
        event(
            "configurator.session_started",
            anonymous_id=visitor,
            session_id="S1",
            model_code="ID4-PRO",
        ),
    )
    produce(
        "identity.events",
        customer,
        event("identity.customer_identified", customer_id=customer, anonymous_id=visitor),
    )
    produce(
        "identity.events",
        customer,
        event("identity.vehicle_linked", customer_id=customer, vin=vin, model_code="ID4-PRO"),
    )
    # Also the visitor's session: read after the erasure, it would be a visitor's new
    # activity, not a leftover.
    wait_for(
        lambda: (
            (p := _profile(redis_client, customer))
            and p["vehicles"]
            and p["anon_ids"]
            and "S1" in p["sessions"]
        )
    )

    produce("identity.events", customer, event("identity.customer_erased", customer_id=customer))
    produce(
        "configurator.events",
        customer,
        event(
            "configurator.session_started",
            customer_id=customer,
            session_id="S2",
            model_code="ID4-PRO",
            occurred_at="2026-11-22T09:00:00Z",
        ),
    )
    wait_for(lambda: _profile(redis_client, customer) is None)
    time.sleep(1.0)  # the late event after the erasure has been consumed by now

    leftovers = [
        key
        for key in redis_client.scan_iter(count=1000)
        if customer.encode() in key
        or visitor.encode() in key
        or customer.encode() in (redis_client.get(key) or b"")
        or visitor.encode() in (redis_client.get(key) or b"")
    ]
    assert leftovers == []
    car = decode(redis_client.get(f"pitlane:veh:{{{vin}}}:state")).state
    assert car is not None
    assert car["owner"] is None
    assert orjson.dumps(car).find(customer.encode()) == -1


def test_operator_sweep_command_is_obeyed_and_unknown_ones_are_reported(
    worker: WorkerProcess, produce: Callable[..., None]
) -> None:
    produce("pitlane.control", "operator", {"command": "sweep"})
    produce("pitlane.control", "operator", {"command": "reboot-the-moon"})

    wait_for(lambda: "control: sweeping due deadlines now" in worker.log_tail(400))
    wait_for(lambda: "ignoring unknown command" in worker.log_tail(400))


def test_a_profile_forgets_an_event_once_its_offset_is_committed(
    worker: WorkerProcess, produce: Callable[..., None], redis_client: redis.Redis
) -> None:
    """The worker tells the handler what it committed; the next write of the profile
    drops the events a redelivery can no longer bring back, so `pend` stays small."""
    customer = f"C-{uuid.uuid4().hex[:8]}"
    first, second = (option_click(customer, code) for code in ("A", "B"))

    produce("configurator.events", customer, first)
    pending_after_first = wait_for(lambda: (p := _profile(redis_client, customer)) and p["pend"])
    produce("configurator.events", customer, second)
    wait_for(lambda: session_clicks(_profile(redis_client, customer), "S1") == 2)
    profile = _profile(redis_client, customer)

    assert profile is not None
    assert [list(tags) for tags in pending_after_first.values()] == [[event_tag(first["event_id"])]]
    assert [list(tags) for tags in profile["pend"].values()] == [[event_tag(second["event_id"])]]

"""Triggers fired on time by a real worker: events in through Kafka, triggers out.

The session worker runs with a 3 s abandonment window and a 0.2 s sweep, so "goes
quiet for the window" takes seconds here, with the same code as the 24 h default.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from conftest import ABANDONMENT_WINDOW_S
from pitlane.worker_process import WorkerProcess
from wire import at, event, option_click, unique, vin

pytestmark = pytest.mark.integration

Produce = Callable[[str, str, object], None]
ReadTopic = Callable[..., list[dict[str, Any]]]

OPTIONS = [
    ("color", "P8P8", "Kings Red"),
    ("wheels", "W20", "20in Sagitta"),
    ("package", "PK1", "Comfort package"),
    ("accessory", "ROOF", "Roof box"),
]


def _consent(produce: Produce, customer: str) -> None:
    produce(
        "identity.events",
        customer,
        event(
            "identity.consent_updated",
            customer_id=customer,
            channel="email",
            granted=True,
            occurred_at=at(-60),
        ),
    )


def _configure(produce: Produce, customer: str, session: str, picks: int) -> None:
    for category, code, label in OPTIONS[:picks]:
        produce(
            "configurator.events",
            customer,
            option_click(customer, code, session_id=session, category=category, option_label=label),
        )


def _triggers_for(
    read_topic: ReadTopic, customer: str, timeout_s: float, topic: str
) -> list[dict[str, Any]]:
    return read_topic(topic, lambda t: t.get("customer_id") == customer, timeout_s=timeout_s)


def test_quiet_after_four_options_fires_one_abandoned_configuration(
    worker: WorkerProcess, produce: Produce, read_topic: ReadTopic
) -> None:
    customer, session = unique("C"), unique("S")
    _consent(produce, customer)
    _configure(produce, customer, session, picks=4)
    last_activity = time.time()

    triggers = _triggers_for(read_topic, customer, 20, "campaign.abandoned-configuration")

    assert len(triggers) == 1
    trigger = triggers[0]
    fired = datetime.fromisoformat(trigger["fired_at"]).timestamp()
    assert fired >= last_activity + ABANDONMENT_WINDOW_S - 1.0
    assert trigger["channels"] == ["email"]
    context = trigger["context"]
    assert context["session_id"] == session
    assert context["model_code"] == "ID4-PRO"
    assert {cat: [o["code"] for o in opts] for cat, opts in context["options"].items()} == {
        "color": ["P8P8"],
        "wheels": ["W20"],
        "package": ["PK1"],
        "accessory": ["ROOF"],
    }
    assert len(trigger["caused_by"]) >= 4
    time.sleep(ABANDONMENT_WINDOW_S + 1)
    again = _triggers_for(read_topic, customer, 2, "campaign.abandoned-configuration")
    assert [t["trigger_id"] for t in again] == [trigger["trigger_id"]]


def test_test_drive_within_the_window_cancels_the_reminder(
    worker: WorkerProcess, produce: Produce, read_topic: ReadTopic
) -> None:
    customer, session = unique("C"), unique("S")
    _consent(produce, customer)
    _configure(produce, customer, session, picks=4)
    produce(
        "booking.events",
        customer,
        event(
            "booking.test_drive_booked",
            customer_id=customer,
            booking_id=unique("TD"),
            model_code="ID4-PRO",
            dealer_id="DE-BER-014",
            scheduled_at=at(3 * 86_400),
        ),
    )
    time.sleep(ABANDONMENT_WINDOW_S + 2)

    assert _triggers_for(read_topic, customer, 2, "campaign.abandoned-configuration") == []


def test_two_options_only_is_not_engaged(
    worker: WorkerProcess, produce: Produce, read_topic: ReadTopic
) -> None:
    customer, session = unique("C"), unique("S")
    _consent(produce, customer)
    _configure(produce, customer, session, picks=2)
    time.sleep(ABANDONMENT_WINDOW_S + 2)

    assert _triggers_for(read_topic, customer, 2, "campaign.abandoned-configuration") == []


def test_resumed_activity_moves_the_deadline(
    worker: WorkerProcess, produce: Produce, read_topic: ReadTopic
) -> None:
    customer, session = unique("C"), unique("S")
    _consent(produce, customer)
    _configure(produce, customer, session, picks=3)
    time.sleep(ABANDONMENT_WINDOW_S / 2)
    _configure(produce, customer, session, picks=4)
    last_activity = time.time()

    triggers = _triggers_for(read_topic, customer, 20, "campaign.abandoned-configuration")

    assert len(triggers) == 1
    fired = datetime.fromisoformat(triggers[0]["fired_at"]).timestamp()
    assert fired >= last_activity + ABANDONMENT_WINDOW_S - 1.0


def test_without_consent_the_trigger_is_suppressed_with_the_reason(
    worker: WorkerProcess, produce: Produce, read_topic: ReadTopic
) -> None:
    customer, session = unique("C"), unique("S")
    _configure(produce, customer, session, picks=4)

    held = read_topic(
        "pitlane.suppressed", lambda s: s["trigger"]["customer_id"] == customer, timeout_s=20
    )

    assert [s["reason"] for s in held] == ["no_consent"]
    assert _triggers_for(read_topic, customer, 1, "campaign.abandoned-configuration") == []


def test_car_near_its_service_distance_fires_service_due_to_its_owner(
    worker: WorkerProcess, produce: Produce, read_topic: ReadTopic
) -> None:
    customer, car = unique("C"), vin()
    _consent(produce, customer)
    produce(
        "identity.events",
        customer,
        event(
            "identity.vehicle_linked",
            customer_id=customer,
            vin=car,
            model_code="GOLF-GTI",
            service_interval_km=15_000,
            service_interval_months=12,
            occurred_at=at(-30 * 86_400),
        ),
    )
    produce(
        "booking.events",
        customer,
        event(
            "booking.service_completed",
            customer_id=customer,
            vin=car,
            odometer_km=20_000,
            dealer_id="DE-MUC-003",
            occurred_at=at(-20 * 86_400),
        ),
    )
    produce("telematics.events", car, event("telematics.reading", vin=car, odometer_km=33_600))

    triggers = _triggers_for(read_topic, customer, 20, "campaign.service-due")

    assert len(triggers) == 1
    context = triggers[0]["context"]
    assert context["reason"] == "distance"
    assert context["vin"] == car
    assert context["remaining_km"] == pytest.approx(1_400)
    assert context["dealer_id"] == "DE-MUC-003"

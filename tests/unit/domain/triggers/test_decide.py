"""decide: the entry point the shell calls after a batch and when a deadline comes due."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from trigger_shell import (
    CUSTOMER,
    FOUR_OPTIONS,
    MODEL,
    VIN,
    Shell,
    configure,
    consent,
    days,
    event,
    hours,
    make_settings,
)

from pitlane.domain import entities
from pitlane.domain.decide import decide, decision_keys, trigger_id
from pitlane.domain.events import InputEvent
from pitlane.domain.profile import new_profile, new_vehicle

C1 = entities.customer(CUSTOMER)
CAR = entities.vehicle(VIN)
WINDOW = timedelta(seconds=make_settings().abandonment_window_s)


def customer_with_car() -> list[InputEvent]:
    """An engaged, consenting customer whose car comes due by distance on day 3."""
    return [
        consent(hours(0)),
        event(
            "identity.vehicle_linked",
            hours(0),
            customer_id=CUSTOMER,
            vin=VIN,
            model_code=MODEL,
            first_registered_on="2026-09-01",
        ),
        *configure(hours(1), FOUR_OPTIONS),
        event("telematics.reading", days(3), vin=VIN, odometer_km=13_800),
    ]


def test_trigger_ids_are_name_based_uuids_of_type_subject_and_episode() -> None:
    made = trigger_id("service_due", VIN, "initial")

    assert made == trigger_id("service_due", VIN, "initial")
    assert uuid.UUID(made).version == 5
    assert made != trigger_id("service_due", VIN, "service:e1")
    assert made != trigger_id("service_due", "OTHER", "initial")
    assert made != trigger_id("abandoned_configuration", VIN, "initial")


def test_two_runs_of_the_same_events_publish_the_same_triggers() -> None:
    events = customer_with_car()
    runs = []
    for _ in range(2):
        shell = Shell()
        shell.send(*events)
        shell.advance(days(10))
        runs.append([t.model_dump() for t in shell.triggers])

    assert [t["type"] for t in runs[0]] == ["abandoned_configuration", "service_due"]
    assert runs[0] == runs[1]


@pytest.mark.parametrize("event_clock", [True, False])
def test_fired_at_is_the_deadline_on_the_event_clock_and_now_on_the_wall(
    event_clock: bool,
) -> None:
    shell = Shell(event_clock=event_clock)
    shell.send(consent(hours(0)), *configure(hours(1), FOUR_OPTIONS))
    deadline = hours(1) + timedelta(minutes=len(FOUR_OPTIONS)) + WINDOW
    swept = deadline + timedelta(hours=3)

    shell.advance(swept)

    [trigger] = shell.triggers
    assert trigger.fired_at == (deadline if event_clock else swept)


def test_a_trigger_an_event_made_due_fires_at_now_on_either_clock() -> None:
    shell = Shell(event_clock=True)
    shell.send(*customer_with_car()[:2])

    shell.send(event("telematics.reading", days(3), vin=VIN, odometer_km=13_800))

    [trigger] = shell.triggers
    assert trigger.fired_at == days(3)


def test_decisions_report_deadlines_and_changes_of_customers_and_vehicles_only() -> None:
    shell = Shell()
    shell.send(*customer_with_car()[:-1], *configure(hours(1), [], anonymous_id="web-1"))
    states = {key: shell.state(key) for key in shell.store}
    car = states[CAR]
    assert car is not None
    car["odo"] = 13_800

    decisions = decide(states, list(states), hours(5).timestamp(), shell.settings, False)

    assert entities.anonymous("web-1") in states
    assert decisions.deadlines == {
        C1: (hours(1) + timedelta(minutes=4) + WINDOW).timestamp(),
        CAR: None,
    }
    assert decisions.changed == {C1, CAR}
    assert [t.type for t in decisions.triggers] == ["service_due"]


def test_decision_keys_add_the_owner_of_each_touched_vehicle() -> None:
    car = new_vehicle(VIN)
    car["owner"] = "C7"
    unowned = new_vehicle("VIN2")
    states = {CAR: car, entities.vehicle("VIN2"): unowned, C1: new_profile("customer", "C1")}

    assert decision_keys(states, [CAR, entities.vehicle("VIN2"), C1]) == [entities.customer("C7")]
    assert decision_keys({**states, entities.customer("C7"): None}, [CAR]) == []


def test_an_owner_profile_that_was_not_loaded_is_an_error_not_a_lost_trigger() -> None:
    car = new_vehicle(VIN)
    car["owner"] = "C7"

    with pytest.raises(KeyError):
        decide({CAR: car}, [CAR], 0.0, make_settings(), event_clock=False)


def _service_event(type_: str, at: datetime, **fields: Any) -> list[InputEvent]:
    return [event(type_, at, customer_id=CUSTOMER, dealer_id="D1", **fields)]


_ACTIONS: dict[str, Callable[[datetime, float, str], list[InputEvent]]] = {
    "click": lambda at, km, s: configure(at, FOUR_OPTIONS[:2], session_id=s),
    "save": lambda at, km, s: configure(at, [], session_id=s, saved="CFG"),
    "drive": lambda at, km, s: [event("telematics.reading", at, vin=VIN, odometer_km=km)],
    "book": lambda at, km, s: _service_event(
        "booking.service_booked", at, booking_id="SV-1", vin=VIN, scheduled_at=at
    ),
    "cancel": lambda at, km, s: [
        event("booking.cancelled", at, customer_id=CUSTOMER, booking_id="SV-1")
    ],
    "service": lambda at, km, s: _service_event(
        "booking.service_completed", at, vin=VIN, odometer_km=km
    ),
    "test_drive": lambda at, km, s: _service_event(
        "booking.test_drive_booked", at, booking_id=f"TD-{at}", model_code=MODEL, scheduled_at=at
    ),
}
"""Events a step may send: (time, odometer, session id) -> events."""


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=48), st.sampled_from([*_ACTIONS, "sweep", "recheck"])
        ),
        max_size=25,
    ),
    event_clock=st.booleans(),
    cooldown=st.sampled_from([0.0, 7 * 86_400.0]),
)
def test_an_episode_fires_at_most_once(
    steps: list[tuple[float, str]], event_clock: bool, cooldown: float
) -> None:
    shell = Shell(make_settings(cooldown_s=cooldown), event_clock=event_clock)
    shell.send(*customer_with_car())
    at, km, session = days(3), 13_800.0, 1
    for gap, action in steps:
        at += timedelta(hours=gap)
        km += 40 * gap
        session += gap > 24  # a long pause starts a new configurator session
        if action == "sweep":
            shell.advance(at)
        elif action == "recheck":
            shell.recheck([C1, CAR])
        else:
            shell.send(*_ACTIONS[action](at, km, f"S{session}"))

    fired = shell.fired
    assert len({t.trigger_id for t in fired}) == len(fired)
    sessions = [t.context["session_id"] for t in fired if t.type == "abandoned_configuration"]
    assert len(set(sessions)) == len(sessions)

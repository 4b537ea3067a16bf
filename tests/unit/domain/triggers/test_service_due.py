"""Service due: one reminder per service cycle, to the car's current owner, when it is due."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pytest
from trigger_shell import (
    CUSTOMER,
    DEALER,
    MODEL,
    VIN,
    Shell,
    consent,
    days,
    event,
    make_settings,
)

from pitlane.domain import entities
from pitlane.domain.events import InputEvent
from pitlane.domain.profile import new_vehicle
from pitlane.domain.triggers import service_due

CAR = entities.vehicle(VIN)
WORKSHOP = "DE-HAM-001"


def linked(at: datetime, customer_id: str = CUSTOMER, **optional: Any) -> InputEvent:
    return event(
        "identity.vehicle_linked",
        at,
        customer_id=customer_id,
        vin=VIN,
        model_code=MODEL,
        **optional,
    )


def reading(at: datetime, km: float, **optional: Any) -> InputEvent:
    return event("telematics.reading", at, vin=VIN, odometer_km=km, **optional)


def serviced(at: datetime, km: float, booking_id: str | None = None) -> InputEvent:
    return event(
        "booking.service_completed",
        at,
        customer_id=CUSTOMER,
        vin=VIN,
        odometer_km=km,
        dealer_id=WORKSHOP,
        booking_id=booking_id,
    )


def booked(at: datetime, booking_id: str = "SV-1") -> InputEvent:
    return event(
        "booking.service_booked",
        at,
        customer_id=CUSTOMER,
        booking_id=booking_id,
        vin=VIN,
        dealer_id=DEALER,
        scheduled_at=at + timedelta(days=5),
    )


def owned_car(shell: Shell) -> None:
    """An owned car registered two months before T0, serviced on day 1 at 10,000 km."""
    shell.send(
        consent(days(0)),
        linked(days(0), first_registered_on="2026-09-01"),
        serviced(days(1), 10_000),
    )


def test_distance_left_under_the_threshold_is_due_by_distance() -> None:
    shell = Shell()
    owned_car(shell)
    latest = reading(days(100), 23_600)

    shell.send(latest)

    [trigger] = shell.triggers
    assert trigger.type == "service_due"
    assert trigger.customer_id == CUSTOMER
    assert trigger.fired_at == days(100)
    assert latest.event_id in trigger.caused_by
    context = trigger.context
    assert context["reason"] == "distance"
    assert (context["vin"], context["model_code"]) == (VIN, MODEL)
    assert (context["odometer_km"], context["remaining_km"]) == (23_600, 1_400)
    assert context["dealer_id"] == WORKSHOP


def test_a_cycle_fires_once() -> None:
    shell = Shell()
    owned_car(shell)

    decisions = shell.send(reading(days(100), 23_600), reading(days(101), 23_700))
    shell.advance(days(400))

    assert len(shell.triggers) == 1
    assert decisions.deadlines[CAR] is None


def test_60_km_a_day_is_due_when_the_prediction_comes_within_30_days() -> None:
    shell = Shell()
    shell.send(consent(days(0)), linked(days(0), first_registered_on="2026-10-01"))
    # 60 km a day; the 15,000 km plan has 2,500 km left on day 8.
    for day in range(9):
        shell.send(reading(days(day), 12_020 + 60 * day))
    assert shell.triggers == []

    day = 9
    while not shell.triggers:
        shell.send(reading(days(day), 12_020 + 60 * day))
        day += 1

    [trigger] = shell.triggers
    context = trigger.context
    assert context["reason"] == "predicted"
    assert 1_750 <= context["remaining_km"] <= 1_850
    ahead = date.fromisoformat(context["due_date"]) - trigger.fired_at.date()
    assert timedelta(days=29) <= ahead <= timedelta(days=30)


def test_the_prediction_fires_on_its_deadline_with_no_new_reading() -> None:
    shell = Shell()
    shell.send(consent(days(0)), linked(days(0), first_registered_on="2026-10-01"))

    decisions = shell.send(reading(days(0), 11_940), reading(days(1), 12_000))
    # 3,000 km left at 60 km a day: due on day 51, within 30 days from day 21.
    assert decisions.deadlines[CAR] == pytest.approx(days(21).timestamp())
    shell.advance(days(21))

    [trigger] = shell.triggers
    assert trigger.context["reason"] == "predicted"
    assert trigger.context["due_date"] == days(51).date().isoformat()


def test_the_cars_indicator_is_due_by_vehicle_indicator() -> None:
    shell = Shell()
    shell.send(consent(days(0)), linked(days(0), first_registered_on="2026-10-01"))

    shell.send(reading(days(1), 5_000, service_remaining_km=9_000, service_remaining_days=20))

    [trigger] = shell.triggers
    assert trigger.context["reason"] == "vehicle_indicator"
    assert trigger.context["remaining_km"] == 9_000
    assert trigger.context["due_date"] == days(21).date().isoformat()


def test_the_indicators_days_count_down_to_a_deadline() -> None:
    shell = Shell()
    shell.send(consent(days(0)), linked(days(0), first_registered_on="2026-10-01"))

    decisions = shell.send(reading(days(1), 5_000, service_remaining_days=45))
    shell.advance(days(16))

    assert decisions.deadlines[CAR] == days(16).timestamp()
    [trigger] = shell.triggers
    assert trigger.context["reason"] == "vehicle_indicator"


def test_the_plans_months_are_due_by_time_even_without_any_reading() -> None:
    shell = Shell(event_clock=True)
    shell.send(consent(days(0)))

    # Registered 2025-12-15: the 12-month plan ends 2026-12-15, 30 days before is 11-15.
    decisions = shell.send(linked(days(0), first_registered_on="2025-12-15"))
    shell.advance(days(20))

    assert decisions.deadlines[CAR] == datetime.fromisoformat("2026-11-15T00:00Z").timestamp()
    [trigger] = shell.triggers
    assert trigger.fired_at == datetime.fromisoformat("2026-11-15T00:00Z")
    assert trigger.context["reason"] == "time"
    assert trigger.context["due_date"] == "2026-12-15"
    assert trigger.context["odometer_km"] == 0
    assert trigger.context["remaining_km"] is None


def test_an_open_booking_holds_it_back_and_a_cancellation_lets_it_fire() -> None:
    shell = Shell()
    owned_car(shell)

    held = shell.send(booked(days(50)), reading(days(100), 23_600))
    assert shell.triggers == []
    assert held.deadlines[CAR] is None

    shell.send(
        event("booking.cancelled", days(102), customer_id=CUSTOMER, booking_id="SV-1"),
    )

    [trigger] = shell.triggers
    assert trigger.context["reason"] == "distance"
    assert trigger.fired_at == days(102)


def test_a_completed_service_starts_a_new_cycle_that_fires_again() -> None:
    shell = Shell()
    owned_car(shell)
    shell.send(reading(days(100), 23_600))

    renewed = shell.send(booked(days(101)), serviced(days(106), 23_700, booking_id="SV-1"))
    assert len(shell.triggers) == 1
    # The car's mileage carries over: the new cycle is predicted due in time.
    deadline = renewed.deadlines[CAR]
    assert deadline is not None
    shell.advance(deadline)

    first, second = shell.triggers
    assert second.context["reason"] == "predicted"
    assert second.trigger_id != first.trigger_id
    assert second.fired_at.timestamp() == pytest.approx(deadline, abs=1e-6)


def test_a_car_without_owner_fires_when_one_is_linked_while_still_due() -> None:
    shell = Shell()
    shell.send(consent(days(0)))

    unowned = shell.send(reading(days(1), 14_000))
    assert shell.triggers == []
    assert unowned.deadlines[CAR] is None

    shell.send(linked(days(2)))

    [trigger] = shell.triggers
    assert trigger.customer_id == CUSTOMER
    assert trigger.context["remaining_km"] == 1_000


def test_only_the_current_owner_is_reached() -> None:
    shell = Shell()
    shell.send(consent(days(0)), consent(days(0), customer_id="C2"), linked(days(0)))

    shell.send(linked(days(5), customer_id="C2"), reading(days(6), 14_000))

    [trigger] = shell.triggers
    assert trigger.customer_id == "C2"


def test_an_erased_owner_is_not_reached() -> None:
    shell = Shell()
    shell.send(consent(days(0)), linked(days(0)))

    shell.send(event("identity.customer_erased", days(1), customer_id=CUSTOMER))
    shell.send(reading(days(2), 14_000))

    assert shell.fired == []


def test_an_indicator_reading_from_the_previous_cycle_is_ignored() -> None:
    settings = make_settings()
    car = new_vehicle(VIN)
    car["ind"] = {"km": 200, "days": 3, "at": days(1).timestamp()}
    car["service"] = {"km": 10_000, "at": days(2).timestamp(), "dealer": None, "v": [0, "e"]}

    seen = service_due.outlook(car, settings)

    assert (seen.indicator_km, seen.indicator_at) == (None, None)
    assert seen.cycle.id == "service:e"


@pytest.mark.parametrize(
    ("start", "months", "end"),
    [
        ("2026-01-31T10:00:00Z", 1, "2026-02-28T10:00:00Z"),
        ("2026-11-15T00:00:00Z", 12, "2027-11-15T00:00:00Z"),
        ("2026-12-31T00:00:00Z", 14, "2028-02-29T00:00:00Z"),
    ],
)
def test_plan_months_are_calendar_months(start: str, months: int, end: str) -> None:
    at = datetime.fromisoformat(start).timestamp()

    assert service_due.add_months(at, months) == datetime.fromisoformat(end).timestamp()

"""Invariants of `apply` over generated histories: arrival order and redelivery do not matter."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import builders as b
from builders import T0, Store
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pitlane.domain import entities
from pitlane.domain.events import InputEvent
from pitlane.domain.profile import State

C1 = entities.customer("C1")
PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

minutes = st.integers(0, 600)
"""Event times within ten hours; collisions are likely, so tie-breaks get exercised."""


def at(minute: int) -> Any:
    return T0 + timedelta(minutes=minute)


def significant(value: float, digits: int = 6) -> float:
    return float(f"{value:.{digits}g}")


def normalised(profile: State) -> State:
    """The profile with order-only differences removed.

    `seen` and `closed` are sets kept as lists in arrival order, and interest scores
    are sums of floats, equal only up to rounding whatever order they were added in.
    """
    result = copy.deepcopy(profile)
    result["seen"] = sorted(result["seen"])
    result["closed"] = sorted(result["closed"])
    result["interest"] = {
        category: [significant(value), ref] for category, (value, ref) in result["interest"].items()
    }
    return result


# --- (1) one customer's history in any order ------------------------------------------

CUSTOMER = {"customer_id": "C1"}
VISITOR = {"customer_id": None, "anonymous_id": "A1"}
OPTIONS = [("color", "RED"), ("color", "BLUE"), ("wheels", "W18"), ("wheels", "W19")]
OPTIONS += [("accessory", "TOW"), ("accessory", "ROOF"), ("package", "WINTER")]


@st.composite
def customer_history(draw: st.DrawFn) -> list[InputEvent]:
    """Configurator, identity, consent and booking events of C1, who was visitor A1 first.

    Saves and quotes go to a session without option clicks: their interest depends on
    arrival order (see test_apply.test_interest_of_a_save_does_not_depend_on_arrival_order).
    Each booking id is booked at most once. Fewer events than `dedupe_ids`, fewer
    sessions than `sessions_kept`.
    """
    ids = iter(f"e{n:03d}" for n in range(1000))
    events: list[InputEvent] = [
        b.customer_identified(anonymous_id="A1", at=at(draw(minutes)), event_id=next(ids))
    ]
    booked: set[str] = set()
    for _ in range(draw(st.integers(2, 24))):
        kind = draw(
            st.sampled_from(
                [
                    *("start", "option", "option", "option", "save", "quote", "consent"),
                    *("update", "test_drive", "service", "cancel", "order"),
                ]
            )
        )
        when, event_id = at(draw(minutes)), next(ids)
        who = draw(st.sampled_from([CUSTOMER, VISITOR]))
        if kind == "start":
            session = draw(st.sampled_from(["S1", "S2"]))
            dealer = draw(st.sampled_from([None, "D1", "D2"]))
            market = draw(st.sampled_from([None, "DE", "AT"]))
            events.append(
                b.session_started(
                    **who,
                    session_id=session,
                    model_code=draw(st.sampled_from(["ID4", "ID7"])),
                    dealer_id=dealer,
                    market=market,
                    at=when,
                    event_id=event_id,
                )
            )
        elif kind == "option":
            category, code = draw(st.sampled_from(OPTIONS))
            events.append(
                b.option_selected(
                    **who,
                    session_id=draw(st.sampled_from(["S1", "S2"])),
                    category=category,
                    code=code,
                    label=draw(st.sampled_from([None, "label-a", "label-b"])),
                    at=when,
                    event_id=event_id,
                )
            )
        elif kind == "save":
            events.append(
                b.configuration_saved(
                    **who,
                    session_id="S3",
                    configuration_id=draw(st.sampled_from(["CFG-1", "CFG-2"])),
                    total_price=draw(st.sampled_from([40_000.0, 45_000.0])),
                    at=when,
                    event_id=event_id,
                )
            )
        elif kind == "quote":
            events.append(b.quote_requested(**who, session_id="S3", at=when, event_id=event_id))
        elif kind == "consent":
            events.append(
                b.consent_updated(
                    channel=draw(st.sampled_from(["email", "sms"])),
                    granted=draw(st.booleans()),
                    at=when,
                    event_id=event_id,
                )
            )
        elif kind == "update":
            fields = draw(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "city": st.sampled_from(["Berlin", "Wien"]),
                        "market": st.sampled_from(["DE", "AT"]),
                    },
                )
            )
            events.append(b.customer_updated(**fields, at=when, event_id=event_id))
        elif kind in ("test_drive", "service"):
            booking = draw(st.sampled_from(["B1", "B2", "B3"]))
            if booking in booked:
                continue
            booked.add(booking)
            book = b.booked_test_drive if kind == "test_drive" else b.service_booked
            events.append(book(booking_id=booking, at=when, event_id=event_id))
        elif kind == "cancel":
            booking = draw(st.sampled_from(["B1", "B2", "B3"]))
            events.append(b.booking_cancelled(booking_id=booking, at=when, event_id=event_id))
        else:
            events.append(b.order_placed(at=when, event_id=event_id))
    return events


@PROPERTY
@given(st.data())
def test_any_arrival_order_gives_the_same_customer_profile(data: st.DataObject) -> None:
    history = data.draw(customer_history())
    arrival = data.draw(st.permutations(history))
    in_time_order = sorted(history, key=lambda event: (event.occurred_at, event.event_id))

    expected = b.run(in_time_order)[C1]
    actual = b.run(arrival)[C1]

    assert normalised(actual) == normalised(expected)


# --- (2) redelivery anywhere changes nothing ------------------------------------------

WORLD_CUSTOMERS = ["C1", "C2"]
WORLD_VISITORS = ["A1", "A2", "null"]
WORLD_VINS = ["V1", "V2"]
WORLD_BOOKINGS = ["B1", "B2"]


@st.composite
def world_event(draw: st.DrawFn, event_id: str) -> InputEvent:
    """One event of any type but erasure, in a small world of customers, visitors and cars."""
    envelope: dict[str, Any] = {"event_id": event_id, "at": at(draw(minutes))}
    customer = draw(st.sampled_from(WORLD_CUSTOMERS))
    booking = draw(st.sampled_from(WORLD_BOOKINGS))
    vin = draw(st.sampled_from(WORLD_VINS))
    visitor = draw(st.sampled_from(WORLD_VISITORS))
    who = draw(
        st.sampled_from([{"customer_id": customer}, {"customer_id": None, "anonymous_id": visitor}])
    )
    km = draw(st.integers(0, 50_000))
    category, code = draw(st.sampled_from(OPTIONS))
    kind = draw(st.integers(0, 13))
    if kind == 0:
        return b.session_started(**who, **envelope)
    if kind == 1:
        return b.option_selected(**who, category=category, code=code, **envelope)
    if kind == 2:
        return b.configuration_saved(**who, **envelope)
    if kind == 3:
        return b.quote_requested(**who, **envelope)
    if kind == 4:
        return b.booked_test_drive(customer_id=customer, booking_id=booking, **envelope)
    if kind == 5:
        return b.service_booked(customer_id=customer, booking_id=booking, vin=vin, **envelope)
    if kind == 6:
        return b.booking_cancelled(customer_id=customer, booking_id=booking, **envelope)
    if kind == 7:
        return b.order_placed(customer_id=customer, **envelope)
    if kind == 8:
        with_booking = draw(st.sampled_from([None, booking]))
        return b.service_completed(
            customer_id=customer, vin=vin, odometer_km=km, booking_id=with_booking, **envelope
        )
    if kind == 9:
        return b.telematics_reading(vin=vin, odometer_km=km, oil_life_pct=km % 100, **envelope)
    if kind == 10:
        return b.customer_identified(customer_id=customer, anonymous_id=visitor, **envelope)
    if kind == 11:
        return b.vehicle_linked(customer_id=customer, vin=vin, **envelope)
    if kind == 12:
        return b.consent_updated(customer_id=customer, granted=km % 2 == 0, **envelope)
    return b.customer_updated(
        customer_id=customer, city=draw(st.sampled_from(["B", "W"])), **envelope
    )


@st.composite
def world_history(draw: st.DrawFn) -> list[InputEvent]:
    return [draw(world_event(f"e{n:03d}")) for n in range(draw(st.integers(1, 30)))]


@st.composite
def with_redeliveries(draw: st.DrawFn, events: list[InputEvent]) -> list[InputEvent]:
    """`events` with some of them delivered again, each somewhere after its first delivery."""
    last = len(events) - 1
    pairs = draw(st.lists(st.tuples(st.integers(0, last), st.integers(0, last)), max_size=15))
    again: dict[int, list[InputEvent]] = {}
    for first, second in pairs:
        original, slot = min(first, second), max(first, second)
        again.setdefault(slot, []).append(events[original])
    delivery: list[InputEvent] = []
    for index, event in enumerate(events):
        delivery.append(event)
        delivery.extend(again.get(index, []))
    return delivery


@PROPERTY
@given(st.data())
def test_redeliveries_anywhere_change_nothing(data: st.DataObject) -> None:
    history = data.draw(world_history())
    delivery = data.draw(with_redeliveries(history))

    assert b.run(delivery) == b.run(history)


# --- (3) the odometer -----------------------------------------------------------------


@PROPERTY
@given(
    st.lists(
        st.tuples(st.integers(0, 300_000), st.integers(0, 60 * 24 * 30), st.booleans()),
        min_size=1,
        max_size=20,
    ),
    st.randoms(use_true_random=False),
)
def test_odometer_is_the_largest_reading_whatever_the_order(
    readings: list[tuple[int, int, bool]], random: Any
) -> None:
    events: list[InputEvent] = [
        b.service_completed(odometer_km=km, at=at(minute))
        if workshop
        else b.telematics_reading(odometer_km=km, at=at(minute))
        for km, minute, workshop in readings
    ]
    random.shuffle(events)

    store: Store = b.run(events)
    car = store[entities.vehicle(b.VIN)]

    assert car["odo"] == max(km for km, _, _ in readings)
    assert car["odo_at"] == max(at(minute).timestamp() for _, minute, _ in readings)

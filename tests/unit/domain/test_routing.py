"""Routing: which entities an event needs, round by round, as the shell loads them."""

from __future__ import annotations

import builders as b
import pytest

from pitlane.domain import entities
from pitlane.domain.entities import EntityKey, erased_marker
from pitlane.domain.events import InputEvent
from pitlane.domain.profile import State, new_profile, new_vehicle
from pitlane.domain.routing import (
    RoutesInACycle,
    Unroutable,
    keys_for,
    routes_through_state,
    write_phases,
)

SALT = b.SALT
C1 = entities.customer("C1")
C2 = entities.customer("C2")
MARKER_C1 = erased_marker("C1", SALT)
MARKER_C2 = erased_marker("C2", SALT)
VISITOR = entities.anonymous(b.VISITOR)
TOMBSTONE = erased_marker(b.VISITOR, SALT, "anonymous")
CAR = entities.vehicle(b.VIN)

States = dict[EntityKey, State | None]


def settle(event: InputEvent, states: States) -> list[EntityKey]:
    """Every key the shell ends up loading, in order, with `states` as the store."""
    loaded: States = {}
    order: list[EntityKey] = []
    while missing := [k for k in keys_for(event, loaded, SALT) if k not in loaded]:
        for key in missing:
            loaded[key] = states.get(key)
            order.append(key)
    return order


def customer_with(**fields: object) -> State:
    profile = new_profile("customer", "C1")
    profile.update(fields)
    return profile


def test_configurator_event_of_a_customer_names_profile_and_erasure_marker() -> None:
    event = b.option_selected(customer_id="C1", anonymous_id=b.VISITOR)

    assert keys_for(event, {}, SALT) == [C1, MARKER_C1]


def test_anonymous_configurator_event_names_the_visitor_and_its_tombstone() -> None:
    event = b.option_selected(customer_id=None, anonymous_id=b.VISITOR)

    assert keys_for(event, {}, SALT) == [VISITOR, TOMBSTONE]
    assert keys_for(event, {VISITOR: None, TOMBSTONE: None}, SALT) == [VISITOR, TOMBSTONE]


def test_an_erased_visitors_event_names_its_tombstone_in_the_first_round() -> None:
    """The tombstone is in the batch's first read: no round trip more than before."""
    event = b.option_selected(customer_id=None, anonymous_id=b.VISITOR)
    erased = {TOMBSTONE: {"kind": "erased", "at": 0.0}}

    assert settle(event, erased) == [VISITOR, TOMBSTONE]
    assert routes_through_state(event, keys_for(event, {}, SALT))


def test_visitor_stitched_to_a_customer_also_names_the_customer() -> None:
    event = b.option_selected(customer_id=None, anonymous_id=b.VISITOR)
    visitor = new_profile("anonymous", b.VISITOR)
    visitor["stitched_to"] = "C1"

    assert keys_for(event, {VISITOR: visitor}, SALT) == [VISITOR, TOMBSTONE, C1, MARKER_C1]
    assert settle(event, {VISITOR: visitor}) == [VISITOR, TOMBSTONE, C1, MARKER_C1]


def test_junk_customer_id_falls_back_to_the_visitor() -> None:
    event = b.option_selected(customer_id="null", anonymous_id=b.VISITOR)

    assert keys_for(event, {}, SALT) == [VISITOR, TOMBSTONE]


@pytest.mark.parametrize(
    ("customer_id", "anonymous_id"),
    [
        ("null", "0"),
        ("anonymous", None),
        (None, "00000000-0000-0000-0000-000000000000"),
        ("-1", ""),
    ],
)
def test_configurator_event_with_only_junk_ids_is_unroutable(
    customer_id: str | None, anonymous_id: str | None
) -> None:
    event = b.session_started(customer_id=customer_id, anonymous_id=anonymous_id)

    with pytest.raises(Unroutable, match="identifies anyone"):
        keys_for(event, {}, SALT)


@pytest.mark.parametrize("customer_id", ["null", "0", "anonymous", "-1"])
def test_customer_event_with_junk_customer_id_is_unroutable(customer_id: str) -> None:
    with pytest.raises(Unroutable, match="identifies no one"):
        keys_for(b.consent_updated(customer_id=customer_id), {}, SALT)


def test_telematics_reading_names_only_the_vehicle() -> None:
    assert keys_for(b.telematics_reading(), {}, SALT) == [CAR]


@pytest.mark.parametrize("event", [b.service_booked(), b.service_completed()])
def test_service_events_name_customer_and_vehicle(event: InputEvent) -> None:
    assert settle(event, {}) == [C1, MARKER_C1, CAR]


def test_cancelling_a_service_booking_names_its_vehicle_once_the_customer_is_loaded() -> None:
    profile = customer_with(bookings={"SV-1": {"kind": "service", "vin": b.VIN, "at": 0.0}})
    event = b.booking_cancelled(booking_id="SV-1")

    assert keys_for(event, {}, SALT) == [C1, MARKER_C1]
    assert keys_for(event, {C1: profile, MARKER_C1: None}, SALT) == [C1, MARKER_C1, CAR]
    assert settle(event, {C1: profile}) == [C1, MARKER_C1, CAR]


def test_cancelling_a_test_drive_or_an_unknown_booking_names_no_vehicle() -> None:
    profile = customer_with(bookings={"TD-1": {"kind": "test_drive", "at": 0.0}})

    assert settle(b.booking_cancelled(booking_id="TD-1"), {C1: profile}) == [C1, MARKER_C1]
    assert settle(b.booking_cancelled(booking_id="SV-9"), {C1: profile}) == [C1, MARKER_C1]


def test_vehicle_linked_names_the_previous_owner_once_the_car_is_loaded() -> None:
    car = new_vehicle(b.VIN)
    car["owner"] = "C1"
    event = b.vehicle_linked(customer_id="C2")

    assert keys_for(event, {}, SALT) == [C2, MARKER_C2, CAR]
    assert settle(event, {CAR: car}) == [C2, MARKER_C2, CAR, C1]


def test_vehicle_linked_to_its_current_owner_names_nobody_else() -> None:
    car = new_vehicle(b.VIN)
    car["owner"] = "C1"

    assert settle(b.vehicle_linked(customer_id="C1"), {CAR: car}) == [C1, MARKER_C1, CAR]


def test_customer_identified_names_customer_and_visitor_with_their_tombstones() -> None:
    event = b.customer_identified()

    assert keys_for(event, {}, SALT) == [C1, MARKER_C1, VISITOR, TOMBSTONE]
    assert settle(event, {}) == [C1, MARKER_C1, VISITOR, TOMBSTONE]


def test_customer_identified_with_a_junk_anonymous_id_names_no_visitor() -> None:
    assert settle(b.customer_identified(anonymous_id="null"), {}) == [C1, MARKER_C1]


def test_customer_erased_names_stitched_visitors_their_tombstones_and_owned_vehicles() -> None:
    profile = customer_with(anon_ids=["anon-1", "anon-2"], vehicles={"VIN-A": 0.0, "VIN-B": 0.0})
    event = b.customer_erased()

    assert keys_for(event, {}, SALT) == [C1, MARKER_C1]
    assert settle(event, {C1: profile}) == [
        C1,
        MARKER_C1,
        entities.anonymous("anon-1"),
        erased_marker("anon-1", SALT, "anonymous"),
        entities.anonymous("anon-2"),
        erased_marker("anon-2", SALT, "anonymous"),
        entities.vehicle("VIN-A"),
        entities.vehicle("VIN-B"),
    ]


def test_visitors_tombstones_are_written_no_later_than_the_profile_that_names_them() -> None:
    """An erasure reaches its visitors through the profile it deletes: on a split write
    their tombstones go in an earlier phase than the profile's delete and the marker."""
    profile = customer_with(anon_ids=[b.VISITOR])
    event = b.customer_erased()
    first = keys_for(event, {}, SALT)
    keys = settle(event, {C1: profile})

    phases = write_phases([(first, [k for k in keys if k not in first])])

    assert phases.get(TOMBSTONE, 0) < phases[C1] == phases[MARKER_C1]
    assert phases.get(TOMBSTONE, 0) == phases.get(VISITOR, 0)


def test_erasing_an_unknown_customer_names_profile_and_marker_only() -> None:
    assert settle(b.customer_erased(), {}) == [C1, MARKER_C1]


# --- write order for split writes -----------------------------------------------------


def _world() -> States:
    """State that reaches further wherever a route can: a stitched visitor, a booked
    service car, an owned car, a customer with visitors and vehicles to erase."""
    visitor = new_profile("anonymous", b.VISITOR)
    visitor["stitched_to"] = "C2"
    car = new_vehicle(b.VIN)
    car["owner"] = "C2"
    profile = customer_with(
        bookings={"SV-1": {"kind": "service", "vin": b.VIN, "at": 0.0}},
        anon_ids=[b.VISITOR],
        vehicles={b.VIN: 0.0},
    )
    return {VISITOR: visitor, CAR: car, C1: profile, MARKER_C1: None}


@pytest.mark.parametrize(
    ("event", "through_state"),
    [
        (b.option_selected(customer_id="C1", anonymous_id=b.VISITOR), False),
        (b.session_started(customer_id="C1"), False),
        (b.option_selected(customer_id=None, anonymous_id=b.VISITOR), True),
        (b.option_selected(customer_id="null", anonymous_id=b.VISITOR), True),
        (b.telematics_reading(), False),
        (b.consent_updated(), False),
        (b.booking_cancelled(booking_id="SV-1"), True),
        (b.vehicle_linked(customer_id="C1"), True),
        (b.customer_erased(), True),
    ],
)
def test_a_route_said_not_to_go_through_state_is_the_first_one_whatever_is_loaded(
    event: InputEvent, through_state: bool
) -> None:
    first = keys_for(event, {}, SALT)

    assert routes_through_state(event, first) is through_state
    if not through_state:
        assert keys_for(event, _world(), SALT) == first
    else:  # the world is built so that each of these does reach further
        assert keys_for(event, _world(), SALT) != first


def test_entities_reached_through_state_are_written_before_those_that_reach_them() -> None:
    customer, car, previous = (
        entities.customer("C2"),
        entities.vehicle("V"),
        entities.customer("C1"),
    )
    visitor = entities.anonymous("A")

    phases = write_phases([([customer, car], [previous]), ([visitor], [customer])])

    assert phases.get(previous, 0) < phases[car] == phases[customer] < phases[visitor]


def test_routes_that_reach_each_other_have_no_write_order() -> None:
    customer, car = entities.customer("C1"), entities.vehicle("V")

    with pytest.raises(RoutesInACycle):
        write_phases([([customer], [car]), ([car], [customer])])


def test_no_routes_means_one_phase() -> None:
    assert write_phases([]) == {}

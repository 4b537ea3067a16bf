"""Applying events: what each one does to the profiles and vehicles it touches."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import builders as b
import pytest
from builders import SETTINGS, VIN, VISITOR, Store, hours

from pitlane.domain import entities
from pitlane.domain.apply import apply
from pitlane.domain.entities import EntityKey
from pitlane.domain.events import InputEvent
from pitlane.domain.routing import ROUTES_LOST_BY_APPLYING, keys_for, write_phases

C1 = entities.customer("C1")
C2 = entities.customer("C2")
CAR = entities.vehicle(VIN)
ANON = entities.anonymous(VISITOR)
MARKER_C1 = entities.erased_marker("C1", b.SALT)
TOMBSTONE = entities.erased_marker(VISITOR, b.SALT, "anonymous")


def ts(n: float) -> float:
    """`hours(n)` as the epoch seconds state stores."""
    return hours(n).timestamp()


def anonymous_click(**fields: Any) -> InputEvent:
    return b.option_selected(customer_id=None, anonymous_id=VISITOR, **fields)


def mentions(value: object, needle: str) -> bool:
    """True when `needle` is a string, dict key or key id anywhere inside `value`."""
    if isinstance(value, str):
        return value == needle
    if isinstance(value, dict):
        return any(mentions(k, needle) or mentions(v, needle) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(mentions(item, needle) for item in value)
    return False


# --- configurator -------------------------------------------------------------------


def test_options_are_grouped_by_category() -> None:
    store = b.run(
        [
            b.option_selected(category="color", code="P8P8", label="Kings Red", at=hours(1)),
            b.option_selected(category="wheels", code="PJ3", price_delta=950.0, at=hours(2)),
            b.option_selected(category="accessory", code="3CX", at=hours(3)),
        ]
    )
    session = store[C1]["sessions"]["S1"]

    assert {category: sorted(chosen) for category, chosen in session["opts"].items()} == {
        "color": ["P8P8"],
        "wheels": ["PJ3"],
        "accessory": ["3CX"],
    }
    assert session["opts"]["color"]["P8P8"]["label"] == "Kings Red"
    assert session["opts"]["wheels"]["PJ3"]["price"] == 950.0
    assert session["n"] == 3
    assert session["model"] == b.MODEL
    assert (session["started"], session["last"]) == (ts(1), ts(3))


@pytest.mark.parametrize("arrival", ["in order", "reversed"])
def test_single_choice_category_keeps_the_latest_pick(arrival: str) -> None:
    picks = [
        b.option_selected(category="color", code="RED", at=hours(1)),
        b.option_selected(category="color", code="BLUE", at=hours(2)),
        b.option_selected(category="wheels", code="W18", at=hours(3)),
    ]
    store = b.run(picks if arrival == "in order" else picks[::-1])
    opts = store[C1]["sessions"]["S1"]["opts"]

    assert list(opts["color"]) == ["BLUE"]
    assert list(opts["wheels"]) == ["W18"]
    assert store[C1]["sessions"]["S1"]["n"] == 3


def test_picking_an_earlier_colour_again_makes_it_the_latest() -> None:
    store = b.run(
        [
            b.option_selected(category="color", code="RED", at=hours(1)),
            b.option_selected(category="color", code="BLUE", at=hours(2)),
            b.option_selected(category="color", code="RED", at=hours(3)),
        ]
    )

    assert list(store[C1]["sessions"]["S1"]["opts"]["color"]) == ["RED"]


def test_multi_choice_category_accumulates() -> None:
    store = b.run(
        [
            b.option_selected(category="accessory", code="ROOF-BOX", at=hours(1)),
            b.option_selected(category="accessory", code="TOW-BAR", at=hours(2)),
            b.option_selected(category="accessory", code="ROOF-BOX", at=hours(3)),
        ]
    )

    assert sorted(store[C1]["sessions"]["S1"]["opts"]["accessory"]) == ["ROOF-BOX", "TOW-BAR"]


def test_session_started_records_model_dealer_and_market() -> None:
    store = b.run([b.session_started(market="at", dealer_id="AT-VIE-001", at=hours(1))])
    session = store[C1]["sessions"]["S1"]

    assert (session["model"], session["dealer"], session["market"]) == (
        b.MODEL,
        "AT-VIE-001",
        "AT",
    )


def test_saved_configuration_is_recorded_on_session_and_profile() -> None:
    store = b.run(
        [
            b.option_selected(at=hours(1)),
            b.configuration_saved(configuration_id="CFG-1", dealer_id="DE-BER-014", at=hours(2)),
        ]
    )
    profile = store[C1]

    assert profile["saved"]["id"] == "CFG-1"
    assert profile["saved"]["options"] == ["P8P8", "PJ3"]
    assert (profile["saved"]["price"], profile["saved"]["cur"]) == (52_840.0, "EUR")
    assert profile["sessions"]["S1"]["cfg"]["id"] == "CFG-1"
    assert profile["sessions"]["S1"]["dealer"] == "DE-BER-014"


def test_the_newest_saved_configuration_wins_whatever_arrives_last() -> None:
    newer = b.configuration_saved(configuration_id="CFG-2", at=hours(5))
    older = b.configuration_saved(configuration_id="CFG-1", at=hours(2))
    store = b.run([newer, older])

    assert store[C1]["saved"]["id"] == "CFG-2"
    assert store[C1]["sessions"]["S1"]["cfg"]["id"] == "CFG-2"


def test_conversions_are_recorded() -> None:
    store = b.run(
        [
            b.option_selected(at=hours(1)),
            b.quote_requested(at=hours(2)),
            b.booked_test_drive(at=hours(3)),
            b.order_placed(at=hours(4)),
        ]
    )

    assert store[C1]["conv"] == {"quote": ts(2), "test_drive": ts(3), "order": ts(4)}
    assert store[C1]["sessions"]["S1"]["quote"] == ts(2)


def test_interest_grows_with_options_saves_and_quotes() -> None:
    store = b.run(
        [
            b.option_selected(category="color", at=hours(1)),
            b.option_selected(category="wheels", code="PJ3", at=hours(1)),
            b.option_selected(category="wheels", code="PJ4", at=hours(1)),
            b.configuration_saved(at=hours(1)),
            b.quote_requested(at=hours(1)),
        ]
    )

    assert store[C1]["interest"] == {
        "color": [pytest.approx(1 + 3 + 5), ts(1)],
        "wheels": [pytest.approx(2 + 3 + 5), ts(1)],
    }


def test_interest_of_a_save_does_not_depend_on_arrival_order() -> None:
    events = [
        b.option_selected(category="color", at=hours(1)),
        b.configuration_saved(at=hours(2)),
    ]

    in_order = b.run(events)[C1]["interest"]
    save_first = b.run(events[::-1])[C1]["interest"]

    assert save_first == {"color": [pytest.approx(in_order["color"][0]), in_order["color"][1]]}


# --- consent and attributes -----------------------------------------------------------


def test_latest_consent_by_event_time_wins_even_when_the_older_arrives_later() -> None:
    store = b.run(
        [
            b.consent_updated(channel="email", granted=False, at=hours(5)),
            b.consent_updated(channel="email", granted=True, at=hours(1)),
            b.consent_updated(channel="sms", granted=True, at=hours(2)),
        ]
    )
    consent = store[C1]["consent"]

    assert consent["email"][0] is False
    assert consent["email"][1] == ts(5)
    assert consent["sms"][0] is True


def test_consent_changes_when_a_newer_event_arrives() -> None:
    store = b.run(
        [
            b.consent_updated(granted=True, at=hours(1)),
            b.consent_updated(granted=False, at=hours(2)),
            b.consent_updated(granted=True, at=hours(3)),
        ]
    )

    assert store[C1]["consent"]["email"][0] is True


def test_customer_updated_keeps_the_latest_value_per_field() -> None:
    store = b.run(
        [
            b.customer_updated(market="DE", city="Berlin", at=hours(2)),
            b.customer_updated(city="Hamburg", time_zone="Europe/Berlin", at=hours(3)),
            b.customer_updated(market="AT", city="Wien", at=hours(1)),
            b.customer_updated(birth_date="1980-04-17", at=hours(4)),
        ]
    )
    attrs = {name: value[0] for name, value in store[C1]["attrs"].items()}

    assert attrs == {
        "market": "DE",
        "city": "Hamburg",
        "time_zone": "Europe/Berlin",
        "birth_date": "1980-04-17",
    }


# --- telematics ---------------------------------------------------------------------


def test_odometer_never_moves_back_on_a_late_reading() -> None:
    store = b.run([b.telematics_reading(odometer_km=1_000, at=hours(10), oil_life_pct=80)])
    late = b.telematics_reading(odometer_km=900, at=hours(5), oil_life_pct=20)

    applied = b.step(late, store)

    assert store[CAR]["odo"] == 1_000
    assert store[CAR]["odo_at"] == ts(10)
    assert store[CAR]["oil"] == 80
    assert applied is not None
    assert "late reading: odometer kept" in applied.notes


def test_reading_records_indicator_health_and_trouble_codes() -> None:
    store = b.run(
        [
            b.telematics_reading(
                odometer_km=12_000,
                service_remaining_km=-150,
                service_remaining_days=12,
                oil_life_pct=41,
                battery_soh_pct=93.5,
                fuel_level_pct=60,
                dtc_codes=["P0301", "P0128", "P0301"],
            )
        ]
    )
    car = store[CAR]

    assert car["ind"] == {"km": -150, "days": 12, "at": ts(0)}
    assert (car["oil"], car["soh"], car["fuel"]) == (41, 93.5, 60)
    assert car["dtc"] == ["P0128", "P0301"]


def test_daily_mileage_estimate_converges_near_the_true_rate() -> None:
    # 60 km a day, read every 12 h: 35 km in the daytime half, 25 km overnight.
    km, readings = 20_000.0, []
    for half_day in range(40):
        readings.append(b.telematics_reading(odometer_km=km, at=hours(12 * half_day)))
        km += 35 if half_day % 2 == 0 else 25

    car = b.run(readings)[CAR]

    assert car["rate"] == pytest.approx(60, abs=3)
    assert car["odo"] == readings[-1].odometer_km


def test_readings_closer_than_the_minimum_span_do_not_move_the_estimate() -> None:
    store = b.run(
        [
            b.telematics_reading(odometer_km=1_000, at=hours(0)),
            b.telematics_reading(odometer_km=1_030, at=hours(12)),
            b.telematics_reading(odometer_km=1_060, at=hours(13)),
        ]
    )

    assert store[CAR]["rate"] == pytest.approx(60)
    assert store[CAR]["odo"] == 1_060


# --- bookings -----------------------------------------------------------------------


def test_service_booked_opens_the_booking_on_customer_and_vehicle() -> None:
    store = b.run([b.service_booked(booking_id="SV-1", services=["oil"], at=hours(1))])

    assert store[C1]["bookings"]["SV-1"] == {
        "kind": "service",
        "at": ts(1 + 72),
        "vin": VIN,
        "dealer": b.DEALER,
        "services": ["oil"],
        "v": [ts(1), store[C1]["bookings"]["SV-1"]["v"][1]],
    }
    assert store[CAR]["booking"]["id"] == "SV-1"


def test_cancelled_service_booking_is_closed_on_customer_and_vehicle() -> None:
    store = b.run(
        [
            b.service_booked(booking_id="SV-1", at=hours(1)),
            b.booking_cancelled(booking_id="SV-1", at=hours(2)),
        ]
    )

    assert store[C1]["bookings"] == {}
    assert "SV-1" in store[C1]["closed"]
    assert store[CAR]["booking"] is None
    assert "SV-1" in store[CAR]["closed"]


def test_cancellation_arriving_before_the_booking_means_it_never_opens() -> None:
    store = b.run(
        [
            b.booking_cancelled(booking_id="SV-1", at=hours(2)),
            b.service_booked(booking_id="SV-1", at=hours(1)),
        ]
    )

    assert store[C1]["bookings"] == {}
    assert store[CAR]["booking"] is None


def test_cancelled_test_drive_is_closed_but_still_counts_as_conversion() -> None:
    booked = b.booked_test_drive(booking_id="TD-1", at=hours(1))
    cancelled = b.booking_cancelled(booking_id="TD-1", at=hours(2))

    for events in ([booked, cancelled], [cancelled, booked]):
        store = b.run(events)
        assert store[C1]["bookings"] == {}
        assert store[C1]["closed"] == ["TD-1"]
        assert store[C1]["conv"] == {"test_drive": ts(1)}


def test_service_completed_sets_last_service_and_releases_the_booking() -> None:
    store = b.run(
        [
            b.service_booked(booking_id="SV-1", at=hours(1)),
            b.service_completed(
                booking_id="SV-1", odometer_km=15_210, dealer_id="DE-MUC-003", at=hours(75)
            ),
        ]
    )
    car = store[CAR]

    assert car["service"]["km"] == 15_210
    assert car["service"]["at"] == ts(75)
    assert car["service"]["dealer"] == "DE-MUC-003"
    assert car["booking"] is None
    assert car["odo"] == 15_210
    assert store[C1]["bookings"] == {}


def test_service_completed_without_booking_id_releases_the_due_booking() -> None:
    store = b.run(
        [
            b.service_booked(booking_id="SV-1", at=hours(1), scheduled_at=hours(72)),
            b.service_completed(at=hours(75)),
        ]
    )

    assert store[CAR]["booking"] is None
    assert store[CAR]["service"]["at"] == ts(75)


def test_late_booking_of_an_already_completed_service_does_not_reopen() -> None:
    booked = b.service_booked(booking_id="SV-1", at=hours(1), scheduled_at=hours(72))
    completed = b.service_completed(at=hours(75))

    store = b.run([completed, booked])

    assert store[CAR]["booking"] is None


def test_rebooking_the_same_booking_keeps_the_newest_whatever_arrives_last() -> None:
    first = b.service_booked(booking_id="SV-1", at=hours(1), scheduled_at=hours(72))
    moved = b.service_booked(booking_id="SV-1", at=hours(2), scheduled_at=hours(120))

    store = b.run([moved, first])

    assert store[CAR]["booking"]["at"] == ts(120)
    assert store[C1]["bookings"]["SV-1"]["at"] == ts(120)


# --- vehicles -----------------------------------------------------------------------


def test_vehicle_linked_records_the_car_and_the_owner() -> None:
    store = b.run(
        [
            b.vehicle_linked(
                first_registered_on="2023-04-17",
                service_interval_km=30_000,
                market="de",
                at=hours(1),
            )
        ]
    )
    car = store[CAR]

    assert (car["owner"], car["model"], car["registered_on"], car["market"]) == (
        "C1",
        b.MODEL,
        "2023-04-17",
        "DE",
    )
    assert car["plan"] == {"km": 30_000, "months": SETTINGS.service_interval_months}
    assert car["owners"] == [["C1", ts(1), None]]
    assert store[C1]["vehicles"] == {VIN: ts(1)}


def test_vehicle_linked_to_a_new_customer_ends_the_previous_link() -> None:
    store = b.run(
        [
            b.vehicle_linked(customer_id="C1", at=hours(1)),
            b.vehicle_linked(customer_id="C2", at=hours(5)),
        ]
    )

    assert store[CAR]["owner"] == "C2"
    assert store[CAR]["owners"] == [["C1", ts(1), ts(5)], ["C2", ts(5), None]]
    assert store[C1]["vehicles"] == {}
    assert store[C2]["vehicles"] == {VIN: ts(5)}


def test_late_older_link_does_not_steal_the_car_back() -> None:
    store = b.run(
        [
            b.vehicle_linked(customer_id="C1", at=hours(1)),
            b.vehicle_linked(customer_id="C2", at=hours(5)),
            b.vehicle_linked(customer_id="C1", at=hours(3)),
        ]
    )

    assert store[CAR]["owner"] == "C2"
    assert store[C1]["vehicles"] == {}
    assert store[C2]["vehicles"] == {VIN: ts(5)}


# --- identity -----------------------------------------------------------------------


def anonymous_history() -> list[InputEvent]:
    return [
        b.session_started(customer_id=None, anonymous_id=VISITOR, at=hours(1)),
        anonymous_click(category="color", code="RED", at=hours(1.1)),
        anonymous_click(category="wheels", code="W19", at=hours(1.2)),
        b.configuration_saved(customer_id=None, anonymous_id=VISITOR, at=hours(1.3)),
    ]


def test_customer_identified_merges_the_anonymous_history_into_the_customer() -> None:
    store = b.run(anonymous_history())
    visitor_before = copy.deepcopy(store[ANON])

    b.run([b.consent_updated(at=hours(0.5)), b.customer_identified(at=hours(2))], store)
    profile = store[C1]

    assert profile["anon_ids"] == [VISITOR]
    assert profile["sessions"] == visitor_before["sessions"]
    assert profile["interest"] == visitor_before["interest"]
    assert profile["saved"] == visitor_before["saved"]
    assert (profile["first"], profile["last"]) == (ts(1), ts(1.3))
    assert profile["consent"]["email"][0] is True
    assert store[ANON]["stitched_to"] == "C1"


def test_anonymous_clicks_after_identification_land_in_the_customer() -> None:
    store = b.run([*anonymous_history(), b.customer_identified(at=hours(2))])
    visitor_before = copy.deepcopy(store[ANON])

    b.run([anonymous_click(category="accessory", code="TOW-BAR", at=hours(3))], store)

    assert store[ANON] == visitor_before
    assert "TOW-BAR" in store[C1]["sessions"]["S1"]["opts"]["accessory"]
    assert store[C1]["sessions"]["S1"]["n"] == 3


def test_clicks_before_and_after_login_give_the_same_customer() -> None:
    identify = b.customer_identified(at=hours(2))
    clicks = anonymous_history()

    before = b.run([*clicks, identify])[C1]
    after = b.run([identify, *clicks])[C1]

    assert sorted(before.pop("seen")) == sorted(after.pop("seen"))
    assert before == after


@pytest.mark.parametrize("junk", ["null", "0", "anonymous", "00000000-0000-0000-0000-000000000000"])
def test_junk_anonymous_id_never_merges(junk: str) -> None:
    store = b.run(
        [
            b.option_selected(customer_id="C1", at=hours(1)),
            b.customer_identified(customer_id="C1", anonymous_id=junk, at=hours(2)),
            b.customer_identified(customer_id="C2", anonymous_id=junk, at=hours(3)),
            b.option_selected(customer_id=None, anonymous_id=junk, at=hours(4)),
        ]
    )

    assert entities.anonymous(junk) not in store
    assert store[C1]["anon_ids"] == []
    assert C2 not in store
    assert store[C1]["sessions"]["S1"]["n"] == 1


def test_visitor_stitched_to_one_customer_is_not_moved_to_another() -> None:
    store = b.run([*anonymous_history(), b.customer_identified(customer_id="C1", at=hours(2))])
    c1_before = copy.deepcopy(store[C1])

    applied = b.step(b.customer_identified(customer_id="C2", at=hours(3)), store)
    b.run([anonymous_click(category="accessory", code="TOW-BAR", at=hours(4))], store)

    assert applied is not None
    assert any("identity conflict" in note for note in applied.notes)
    assert store[ANON]["stitched_to"] == "C1"
    assert store[ANON]["conflicts"] == [["C2", ts(3)]]
    assert C2 not in store
    assert store[C1]["sessions"]["S1"]["n"] == c1_before["sessions"]["S1"]["n"] + 1


def test_logging_in_twice_on_the_same_device_does_not_double_the_history() -> None:
    store = b.run([*anonymous_history(), b.customer_identified(at=hours(2))])
    once = copy.deepcopy(store[C1])

    b.run([b.customer_identified(at=hours(30))], store)

    assert store[C1]["sessions"]["S1"]["n"] == once["sessions"]["S1"]["n"]
    assert store[C1]["interest"] == once["interest"]


def test_merge_does_not_share_state_between_visitor_and_customer() -> None:
    store = b.run(anonymous_history())
    identify = b.customer_identified(at=hours(2))
    click = anonymous_click(category="accessory", code="TOW-BAR", at=hours(3))
    batch = b.load(identify, store, SETTINGS)
    visitor_sessions = copy.deepcopy(store[ANON]["sessions"])

    apply(identify, batch, SETTINGS)
    apply(click, batch, SETTINGS)

    visitor = batch[ANON]
    assert visitor is not None
    assert visitor["sessions"] == visitor_sessions


# --- erasure ------------------------------------------------------------------------


def customer_history() -> list[InputEvent]:
    return [
        *anonymous_history(),
        b.customer_identified(at=hours(2)),
        b.option_selected(customer_id="C1", session_id="S2", at=hours(3)),
        b.consent_updated(at=hours(3)),
        b.customer_updated(city="Berlin", at=hours(3)),
        b.vehicle_linked(at=hours(4)),
        b.telematics_reading(odometer_km=12_000, at=hours(4)),
        b.booked_test_drive(at=hours(5)),
    ]


def erased_store() -> Store:
    return b.run([*customer_history(), b.customer_erased(at=hours(10))])


def test_erasure_deletes_the_customer_and_everything_that_names_them() -> None:
    store = erased_store()

    assert C1 not in store
    assert ANON not in store
    assert store[CAR]["owner"] is None
    assert store[CAR]["owners"] == []
    assert store[CAR]["odo"] == 12_000
    assert store[MARKER_C1] == {"kind": "erased", "at": ts(10)}
    assert not mentions(list(store.values()), "C1")
    assert not mentions(list(store.values()), VISITOR)


def test_erasing_twice_changes_nothing() -> None:
    store = erased_store()
    before = copy.deepcopy(store)

    b.run([b.customer_erased(at=hours(11))], store)

    assert store == before


LATE_CUSTOMER_EVENTS: list[Callable[[], InputEvent]] = [
    lambda: b.option_selected(customer_id="C1", at=hours(12)),
    lambda: b.session_started(customer_id="C1", session_id="S9", at=hours(12)),
    lambda: b.configuration_saved(customer_id="C1", at=hours(12)),
    lambda: b.quote_requested(customer_id="C1", at=hours(12)),
    lambda: b.consent_updated(at=hours(1)),
    lambda: b.customer_updated(city="Köln", at=hours(12)),
    lambda: b.booked_test_drive(booking_id="TD-9", at=hours(12)),
    lambda: b.service_booked(booking_id="SV-9", at=hours(12)),
    lambda: b.booking_cancelled(booking_id="TD-1", at=hours(12)),
    lambda: b.order_placed(at=hours(12)),
]


@pytest.mark.parametrize("make", LATE_CUSTOMER_EVENTS, ids=lambda make: make().type)
def test_late_events_of_an_erased_customer_change_nothing(make: Callable[[], InputEvent]) -> None:
    store = erased_store()
    before = copy.deepcopy(store)

    applied = b.step(make(), store)

    assert store == before
    assert applied is not None
    assert "dropped: customer erased" in applied.notes


def test_replaying_the_customer_history_after_erasure_rebuilds_no_profile() -> None:
    store = erased_store()

    b.run([event for event in customer_history() if event.customer_id == "C1"], store)

    assert C1 not in store


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: b.vehicle_linked(at=hours(12)), id="vehicle_linked"),
        pytest.param(lambda: b.customer_identified(at=hours(12)), id="customer_identified"),
        pytest.param(lambda: b.service_completed(at=hours(12)), id="service_completed"),
        pytest.param(lambda: anonymous_click(at=hours(12)), id="anonymous_click"),
    ],
)
def test_late_events_leave_no_trace_of_an_erased_customer(make: Callable[[], InputEvent]) -> None:
    store = erased_store()

    b.step(make(), store)

    assert C1 not in store
    assert not mentions(list(store.values()), "C1")


def test_erasure_leaves_for_the_visitor_a_tombstone_that_names_no_one() -> None:
    store = erased_store()

    assert store[TOMBSTONE] == {"kind": "erased", "at": ts(10)}
    assert TOMBSTONE != MARKER_C1
    assert [key for key in store if key.kind == "anonymous"] == []
    assert not mentions([key.id for key in store], VISITOR)
    assert not any(VISITOR in key.id or "C1" in key.id for key in store)


def test_a_visitor_click_redelivered_after_erasure_rebuilds_nothing() -> None:
    """What Kafka does after a crash: the visitor's clicks, applied before the erasure
    but not committed, come back once it is done."""
    history = customer_history()
    store = b.run([*history, b.customer_erased(at=hours(10))])
    before = copy.deepcopy(store)

    clicks = [e for e in history if e.anonymous_id == VISITOR and e.customer_id is None]
    assert len(clicks) == len(anonymous_history())
    for click in clicks:
        applied = b.step(click, store)
        assert applied is not None
        assert applied.notes == ["dropped: visitor erased"]

    assert store == before
    assert ANON not in store


def test_a_new_click_from_an_erased_customers_device_is_dropped() -> None:
    store = erased_store()
    before = copy.deepcopy(store)

    applied = b.step(anonymous_click(category="accessory", code="TOW-BAR", at=hours(12)), store)

    assert applied is not None
    assert applied.notes == ["dropped: visitor erased"]
    assert not applied.changed
    assert store == before


def test_the_whole_history_redelivered_after_erasure_rebuilds_nothing() -> None:
    """The erasure comes back too, at its place in the log: after it, the state is the
    same as after the first delivery."""
    history = [*customer_history(), b.customer_erased(at=hours(10))]
    store = b.run(history)
    before = copy.deepcopy(store)

    b.run(history, store)

    assert store == before


@pytest.mark.parametrize("customer_id", ["C1", "C2"], ids=["same-customer", "another-customer"])
def test_identifying_an_erased_customers_visitor_rebuilds_nothing(customer_id: str) -> None:
    """Redelivered, or the device logging in as someone else: the visitor stays with
    the customer it was stitched to first, and that customer is gone."""
    store = erased_store()
    before = copy.deepcopy(store)

    applied = b.step(b.customer_identified(customer_id=customer_id, at=hours(12)), store)

    assert applied is not None
    assert not applied.changed
    assert applied.notes == [
        "dropped: customer erased" if customer_id == "C1" else "dropped: visitor erased"
    ]
    assert store == before


def test_a_redelivered_identification_after_erasure_rebuilds_nothing() -> None:
    history = customer_history()
    identify = next(e for e in history if e.type == "identity.customer_identified")
    store = b.run([*history, b.customer_erased(at=hours(10))])
    before = copy.deepcopy(store)

    b.step(identify, store)

    assert store == before


def test_erasure_leaves_a_tombstone_for_a_visitor_whose_profile_is_gone() -> None:
    """An anonymous profile expires (its TTL) while the customer still names it."""
    store = b.run(customer_history())
    del store[ANON]

    b.run([b.customer_erased(at=hours(10)), anonymous_click(at=hours(12))], store)

    assert store[TOMBSTONE] == {"kind": "erased", "at": ts(10)}
    assert ANON not in store


def test_a_click_after_the_erasure_in_the_same_batch_is_dropped() -> None:
    """The shell routes each event of a batch over the batch's working state."""
    store = b.run(customer_history())
    erase = b.customer_erased(at=hours(10))
    click = anonymous_click(category="accessory", code="TOW-BAR", at=hours(12))
    working = b.load(erase, store, SETTINGS)
    keys = keys_for(click, working, b.SALT)
    working.update({key: copy.deepcopy(store.get(key)) for key in keys if key not in working})

    apply(erase, working, SETTINGS)
    applied = apply(click, working, SETTINGS)

    assert keys_for(click, working, b.SALT) == [ANON, TOMBSTONE]
    assert applied.notes == ["dropped: visitor erased"]
    assert working[ANON] is None


# --- duplicates and partial writes ----------------------------------------------------


def test_redelivering_any_event_changes_nothing() -> None:
    history = [
        *customer_history(),
        b.service_booked(booking_id="SV-1", at=hours(6)),
        b.booking_cancelled(booking_id="TD-1", at=hours(6)),
        b.service_completed(booking_id="SV-1", at=hours(80)),
        b.quote_requested(customer_id="C1", session_id="S2", at=hours(81)),
        b.order_placed(at=hours(82)),
        b.vehicle_linked(customer_id="C2", at=hours(90)),
        b.customer_identified(customer_id="C2", at=hours(91)),
        b.customer_erased(customer_id="C2", at=hours(92)),
    ]
    store = b.run(history)

    for event in history:
        before = copy.deepcopy(store)
        b.step(event, store)
        assert store == before, f"redelivered {event.type} changed the store"


def test_redelivered_identification_after_a_crash_completes_the_customer() -> None:
    history = anonymous_history()
    identify = b.customer_identified(at=hours(2))
    expected = b.run([*history, identify])
    store = b.run(history)

    crashed = b.load(identify, store, SETTINGS)
    b.write_back(crashed, apply(identify, crashed, SETTINGS), store, only=[ANON])
    assert C1 not in store

    b.step(identify, store)
    before = copy.deepcopy(store)
    b.step(identify, store)

    assert store == expected
    assert store == before


def crash_points(
    changed: list[EntityKey], phases: dict[EntityKey, int]
) -> Iterator[list[EntityKey]]:
    """Every set of changed keys a write in `phases` order can have stored when the
    worker dies: all of the earlier phases and part of the current one."""
    for level in sorted({phases.get(k, 0) for k in changed}):
        done = [k for k in changed if phases.get(k, 0) < level]
        current = [k for k in changed if phases.get(k, 0) == level]
        for size in range(len(current)):
            for some in itertools.combinations(current, size):
                yield [*done, *some]


def partial_write_failures(
    history: list[InputEvent], event: InputEvent, *, ordered: bool
) -> list[list[str]]:
    """The crash points after which redelivery leaves the store wrong, when the write
    follows the shell's order (`routing.write_phases`) or no order at all."""
    base = b.run(history)
    expected = b.run([event], copy.deepcopy(base))
    working = b.load(event, base, SETTINGS)
    first = keys_for(event, {}, b.SALT)
    route = (first, [k for k in working if k not in first])
    phases = write_phases([route]) if ordered and event.type in ROUTES_LOST_BY_APPLYING else {}
    applied = apply(event, working, SETTINGS)
    changed = sorted(applied.changed)
    assert len(changed) > 1, "not a multi-entity event"
    failures = []
    for written in crash_points(changed, phases):
        store = copy.deepcopy(base)
        b.write_back(copy.deepcopy(working), applied, store, only=written)
        b.step(event, store)
        if store != expected:
            failures.append([f"{key.kind}:{key.id}" for key in written])
    return failures


ROUTE_LOSING = [
    pytest.param(
        lambda: [b.service_booked(at=hours(1))],
        lambda: b.booking_cancelled(at=hours(2)),
        id="service-cancelled",  # the car is named only by the booking it closes
    ),
    pytest.param(
        lambda: [b.vehicle_linked(customer_id="C1", at=hours(1))],
        lambda: b.vehicle_linked(customer_id="C2", at=hours(5)),
        id="resale",  # the previous owner is named only on the car it re-links
    ),
    pytest.param(
        lambda: [*customer_history(), b.service_booked(at=hours(6))],
        lambda: b.customer_erased(at=hours(10)),
        id="erasure",  # visitors and cars are named only in the profile it deletes
    ),
]

PARTIAL_WRITES = [
    pytest.param(anonymous_history, lambda: b.customer_identified(at=hours(2)), id="identified"),
    pytest.param(lambda: [], lambda: b.service_booked(at=hours(1)), id="service-booked"),
    pytest.param(
        lambda: [b.service_booked(at=hours(1))],
        lambda: b.service_completed(booking_id="SV-1", at=hours(75)),
        id="service-completed",
    ),
    *ROUTE_LOSING,
]


@pytest.mark.parametrize(("history", "make"), PARTIAL_WRITES)
def test_redelivery_after_a_partial_write_repairs_every_entity(
    history: Callable[[], list[InputEvent]], make: Callable[[], InputEvent]
) -> None:
    """A Redis Cluster store writes per slot, in the order `write_phases` gives."""
    assert partial_write_failures(history(), make(), ordered=True) == []


@pytest.mark.parametrize(("history", "make"), ROUTE_LOSING)
def test_without_the_write_order_some_partial_writes_are_never_repaired(
    history: Callable[[], list[InputEvent]], make: Callable[[], InputEvent]
) -> None:
    assert partial_write_failures(history(), make(), ordered=False) != []

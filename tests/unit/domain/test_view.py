"""The customer view: one readable document per customer, built from stored state."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import builders as b
import pytest
from builders import SETTINGS, VIN, VISITOR, Store, hours

from pitlane.domain import entities
from pitlane.domain.view import customer_view, iso

C1 = entities.customer("C1")
NOW = hours(24 * 10)


def click(**fields: Any) -> Any:
    return b.option_selected(customer_id=None, anonymous_id=VISITOR, **fields)


def history_store() -> Store:
    events = [
        b.session_started(customer_id=None, anonymous_id=VISITOR, dealer_id="D1", at=hours(1)),
        click(category="color", code="RED", label="Kings Red", at=hours(1.1)),
        click(category="wheels", code="W19", label="19 inch", price_delta=950.0, at=hours(1.2)),
        click(category="accessory", code="TOW", at=hours(1.3)),
        click(category="accessory", code="ROOF", at=hours(1.4)),
        click(category="accessory", code="ROOF", at=hours(1.5)),
        b.customer_identified(at=hours(2)),
        b.configuration_saved(session_id="S2", configuration_id="CFG-9", at=hours(2.5)),
        b.consent_updated(channel="email", granted=True, at=hours(3)),
        b.consent_updated(channel="sms", granted=False, at=hours(3)),
        b.customer_updated(city="Berlin", market="DE", at=hours(3)),
        b.vehicle_linked(first_registered_on="2023-04-17", at=hours(4)),
        b.service_booked(booking_id="SV-1", at=hours(5), scheduled_at=hours(24 * 12)),
        b.booked_test_drive(booking_id="TD-1", at=hours(6)),
    ]
    events += [
        b.telematics_reading(odometer_km=10_000 + 30 * half_day, at=hours(12 * half_day))
        for half_day in range(21)
    ]
    return b.run(events)


def view_of(store: Store) -> dict[str, Any]:
    profile = store[C1]
    cars = {vin: store.get(entities.vehicle(vin)) for vin in profile["vehicles"]}
    return customer_view(profile, cars, NOW, SETTINGS)


def timestamps(value: object, key: str = "") -> list[str]:
    """Every value under a key that names a time (`at`, `*_at`)."""
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in timestamps(v, k)]
    if isinstance(value, list):
        return [t for item in value for t in timestamps(item, key)]
    if isinstance(value, str) and (key == "at" or key.endswith("_at")):
        return [value]
    return []


def test_view_names_the_customer_and_their_anonymous_ids() -> None:
    view = view_of(history_store())

    assert view["customer_id"] == "C1"
    assert view["anonymous_ids"] == [VISITOR]
    assert view["attributes"] == {"city": "Berlin", "market": "DE"}


def test_view_groups_session_options_by_category() -> None:
    sessions = {s["session_id"]: s for s in view_of(history_store())["sessions"]}

    assert sessions["S1"]["options"] == {
        "accessory": [
            {"code": "ROOF", "label": None, "price_delta": None},
            {"code": "TOW", "label": None, "price_delta": None},
        ],
        "color": [{"code": "RED", "label": "Kings Red", "price_delta": None}],
        "wheels": [{"code": "W19", "label": "19 inch", "price_delta": 950.0}],
    }
    assert sessions["S1"]["option_selections"] == 5
    assert sessions["S1"]["dealer_id"] == "D1"
    assert sessions["S2"]["configuration"]["configuration_id"] == "CFG-9"


def test_view_lists_sessions_newest_first() -> None:
    view = view_of(history_store())

    assert [s["session_id"] for s in view["sessions"]] == ["S2", "S1"]


def test_view_shows_vehicles_with_odometer_and_daily_mileage() -> None:
    (car,) = view_of(history_store())["vehicles"]

    assert car["vin"] == VIN
    assert car["model_code"] == b.MODEL
    assert car["registered_on"] == "2023-04-17"
    assert car["odometer_km"] == 10_600
    assert car["odometer_at"] == "2026-11-12T08:00:00Z"
    assert car["daily_km"] == 60.0
    assert car["open_service_booking"]["booking_id"] == "SV-1"


def test_view_of_a_vehicle_without_state_keeps_the_link() -> None:
    store = history_store()
    view = customer_view(store[C1], {}, NOW, SETTINGS)

    assert view["vehicles"] == [{"vin": VIN, "owner_since": "2026-11-02T12:00:00Z"}]


def test_view_shows_consent_per_channel() -> None:
    assert view_of(history_store())["consent"] == {
        "email": {"granted": True, "updated_at": "2026-11-02T11:00:00Z"},
        "sms": {"granted": False, "updated_at": "2026-11-02T11:00:00Z"},
    }


def test_view_sorts_interests_by_score() -> None:
    view = view_of(history_store())
    scores = list(view["interests"].values())

    assert next(iter(view["interests"])) == "accessory"
    assert set(view["interests"]) == {"accessory", "color", "wheels"}
    assert scores == sorted(scores, reverse=True)
    assert 0 < scores[-1] < scores[0]


def test_interests_decay_to_the_time_asked_for() -> None:
    store = history_store()
    profile = store[C1]
    later = customer_view(profile, {}, hours(24 * 10 + 24 * 14), SETTINGS)["interests"]
    now = customer_view(profile, {}, NOW, SETTINGS)["interests"]

    assert later["accessory"] == pytest.approx(now["accessory"] / 2, abs=0.001)


def test_view_shows_saved_configuration_conversions_and_bookings() -> None:
    view = view_of(history_store())

    assert view["last_configuration"]["configuration_id"] == "CFG-9"
    assert view["last_configuration"]["saved_at"] == "2026-11-02T10:30:00Z"
    assert view["conversions"] == {"test_drive": "2026-11-02T14:00:00Z"}
    assert [(bk["booking_id"], bk["kind"]) for bk in view["open_bookings"]] == [
        ("SV-1", "service"),
        ("TD-1", "test_drive"),
    ]


def test_every_timestamp_is_rfc3339_utc_ending_in_z() -> None:
    found = timestamps(view_of(history_store()))

    assert len(found) > 10
    for text in found:
        assert text.endswith("Z"), text
        assert datetime.fromisoformat(text).tzinfo == UTC


def test_iso() -> None:
    assert iso(None) is None
    assert iso(0) == "1970-01-01T00:00:00Z"
    assert iso(1.5) == "1970-01-01T00:00:01.500000Z"


def test_view_is_a_pure_function_of_state() -> None:
    store = history_store()
    before = copy.deepcopy(store)

    assert view_of(store) == view_of(store)
    assert store == before

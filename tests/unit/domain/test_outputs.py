"""Outputs: what campaign tools and channels can rely on in what pitlane emits."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from pitlane.domain.outputs import (
    AbandonedConfigurationContext,
    DeadLetter,
    ServiceDueContext,
    SuppressedTrigger,
    Trigger,
    dead_letter,
)

FIRED_AT = datetime(2026, 11, 23, 8, 21, 47, tzinfo=UTC)


def service_due_context(**changes: Any) -> ServiceDueContext:
    fields: dict[str, Any] = {
        "vin": "WVWZZZE1ZPP012345",
        "model_code": "ID4-PRO",
        "odometer_km": 28412.6,
        "remaining_km": 1320.0,
        "due_date": date(2027, 1, 2),
        "reason": "vehicle_indicator",
        "dealer_id": "DE-MUC-003",
    }
    return ServiceDueContext(**{**fields, **changes})


def trigger(**changes: Any) -> Trigger:
    fields: dict[str, Any] = {
        "trigger_id": "sd-0b7e4f2a91c35d68",
        "type": "service_due",
        "customer_id": "C-20931577",
        "fired_at": FIRED_AT,
        "channels": ["email", "dealer_call"],
        "context": service_due_context().model_dump(mode="json"),
        "caused_by": ["e7d6c5b4-a392-4817-a6f5-e4d3c2b1a098"],
    }
    return Trigger(**{**fields, **changes})


def test_trigger_round_trips_through_json() -> None:
    original = trigger()

    assert Trigger.model_validate_json(original.model_dump_json()) == original


def test_trigger_is_version_1_and_says_so_on_the_wire() -> None:
    assert trigger().model_dump(mode="json")["schema_version"] == 1
    with pytest.raises(ValidationError, match="schema_version"):
        trigger(schema_version=2)


def test_trigger_time_is_held_in_utc() -> None:
    cet = timezone(timedelta(hours=1))

    fired = trigger(fired_at=datetime(2026, 11, 23, 9, 21, 47, tzinfo=cet)).fired_at

    assert fired == FIRED_AT
    assert fired.tzinfo is UTC
    assert trigger().model_dump(mode="json")["fired_at"] == "2026-11-23T08:21:47Z"


def test_trigger_rejects_naive_time() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        trigger(fired_at=datetime(2026, 11, 23, 8, 21, 47))  # noqa: DTZ001


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("channels", ["fax"]),
        ("type", "Service-Due"),
        ("type", ""),
        ("trigger_id", ""),
        ("customer_id", ""),
    ],
)
def test_trigger_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        trigger(**{field: value})


def test_trigger_without_consented_channels_is_still_a_trigger() -> None:
    # A no_consent suppression carries the trigger with an empty channel list.
    assert trigger(channels=[]).channels == []


def test_consumers_ignore_fields_added_later() -> None:
    newer = {**trigger().model_dump(mode="json"), "priority": "high", "schema_version": 1}

    assert Trigger.model_validate(newer) == trigger()


@pytest.mark.parametrize("reason", ["no_consent", "contact_cap", "cooldown", "control_group"])
def test_suppressed_trigger_carries_the_reason(reason: str) -> None:
    suppressed = SuppressedTrigger(trigger=trigger(), reason=reason, detail=None)

    assert SuppressedTrigger.model_validate_json(suppressed.model_dump_json()) == suppressed


def test_suppressed_trigger_rejects_unknown_reason() -> None:
    with pytest.raises(ValidationError, match="reason"):
        SuppressedTrigger(trigger=trigger(), reason="quiet_hours")


def test_suppressed_trigger_always_writes_detail() -> None:
    suppressed = SuppressedTrigger(trigger=trigger(), reason="cooldown")

    assert suppressed.model_dump(mode="json")["detail"] is None


RECEIVED_AT = datetime(2026, 11, 22, 9, 0, 1, tzinfo=UTC)


@given(raw=st.binary(max_size=300), key=st.none() | st.binary(max_size=40))
def test_dead_letter_keeps_the_exact_bytes(raw: bytes, key: bytes | None) -> None:
    letter = dead_letter(raw, key, "booking.events", 7, 1_048_213, "invalid JSON: x", RECEIVED_AT)
    wire = DeadLetter.model_validate_json(letter.model_dump_json())

    assert base64.b64decode(wire.original_b64, validate=True) == raw
    assert (None if wire.key_b64 is None else base64.b64decode(wire.key_b64)) == key


def test_dead_letter_records_where_the_message_came_from() -> None:
    letter = dead_letter(b"{", b"C-1", "booking.events", 7, 1_048_213, "invalid JSON", RECEIVED_AT)

    assert letter.model_dump(mode="json") == {
        "original_b64": "ew==",
        "key_b64": "Qy0x",
        "topic": "booking.events",
        "partition": 7,
        "offset": 1_048_213,
        "reason": "invalid JSON",
        "received_at": "2026-11-22T09:00:01Z",
    }


def test_dead_letter_without_key_writes_null() -> None:
    letter = dead_letter(b"[]", None, "telematics.events", 0, 0, "not an object", RECEIVED_AT)

    assert letter.model_dump(mode="json")["key_b64"] is None


@pytest.mark.parametrize(("partition", "offset"), [(-1, 0), (0, -1)])
def test_dead_letter_rejects_negative_positions(partition: int, offset: int) -> None:
    with pytest.raises(ValidationError):
        dead_letter(b"{", None, "booking.events", partition, offset, "x", RECEIVED_AT)


def test_abandoned_configuration_context_groups_options_by_category() -> None:
    context = AbandonedConfigurationContext(
        session_id="cfg-sess-88213",
        configuration_id=None,
        model_code="ID4-PRO",
        options={
            "wheels": [{"code": "PJ3", "label": "20-inch Narvik alloy wheels"}],
            "package": [{"code": "9WT"}],
        },
        total_price=None,
        currency="eur",
        top_interest_category="wheels",
        dealer_id=None,
        last_activity_at=datetime(2026, 11, 22, 9, 21, 47, tzinfo=timezone(timedelta(hours=1))),
    )

    wire = context.model_dump(mode="json")

    assert wire["options"] == {
        "wheels": [{"code": "PJ3", "label": "20-inch Narvik alloy wheels"}],
        "package": [{"code": "9WT", "label": None}],
    }
    assert wire["currency"] == "EUR"
    assert wire["last_activity_at"] == "2026-11-22T08:21:47Z"
    assert AbandonedConfigurationContext.model_validate(wire) == context


def test_abandoned_configuration_context_rejects_unknown_category() -> None:
    with pytest.raises(ValidationError, match="options"):
        AbandonedConfigurationContext.model_validate(
            {
                "session_id": "s",
                "model_code": "ID4-PRO",
                "options": {"colour": [{"code": "P8P8"}]},
                "last_activity_at": "2026-11-22T08:21:47Z",
            }
        )


def test_service_due_context_round_trips_and_allows_overdue() -> None:
    overdue = service_due_context(remaining_km=-240.0, reason="distance", due_date=None)

    assert ServiceDueContext.model_validate_json(overdue.model_dump_json()) == overdue


@pytest.mark.parametrize(
    ("field", "value"), [("reason", "mileage"), ("odometer_km", -1.0), ("vin", "")]
)
def test_service_due_context_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        service_due_context(**{field: value})


def test_outputs_are_frozen() -> None:
    with pytest.raises(ValidationError, match="frozen"):
        trigger().customer_id = "C-2"  # type: ignore[misc]

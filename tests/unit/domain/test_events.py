"""Input events: what producers may send, and what decode_event makes of it."""

from __future__ import annotations

import ast
import copy
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Union, get_args, get_origin

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from pitlane.domain import events, outputs
from pitlane.domain.events import (
    EVENT_TYPES,
    INPUT_TOPIC_OF_TYPE,
    ConfiguratorEvent,
    CustomerEvent,
    InputEvent,
    InvalidEvent,
    decode_event,
    event_fields,
)

ENVELOPE = {"event_id": "evt-1", "occurred_at": "2026-11-22T08:00:00Z"}

# The smallest valid payload of each type (envelope aside); tests derive variants.
MINIMAL: dict[str, dict[str, Any]] = {
    "configurator.session_started": {
        "anonymous_id": "web-7f3a9c2d1e",
        "session_id": "cfg-sess-1",
        "model_code": "ID4-PRO",
    },
    "configurator.option_selected": {
        "anonymous_id": "web-7f3a9c2d1e",
        "session_id": "cfg-sess-1",
        "model_code": "ID4-PRO",
        "category": "wheels",
        "option_code": "PJ3",
    },
    "configurator.configuration_saved": {
        "customer_id": "C-1",
        "session_id": "cfg-sess-1",
        "configuration_id": "CFG-1",
        "model_code": "ID4-PRO",
        "options": ["P8P8", "PJ3"],
        "total_price": 52840.0,
        "currency": "EUR",
    },
    "configurator.quote_requested": {
        "customer_id": "C-1",
        "session_id": "cfg-sess-1",
        "configuration_id": "CFG-1",
    },
    "booking.test_drive_booked": {
        "customer_id": "C-1",
        "booking_id": "TD-1",
        "model_code": "ID4-PRO",
        "dealer_id": "DE-BER-014",
        "scheduled_at": "2026-11-28T10:30:00+01:00",
    },
    "booking.service_booked": {
        "customer_id": "C-1",
        "booking_id": "SV-1",
        "vin": "WVWZZZE1ZPP012345",
        "dealer_id": "DE-MUC-003",
        "scheduled_at": "2026-12-02T08:00:00+01:00",
    },
    "booking.cancelled": {"customer_id": "C-1", "booking_id": "SV-1"},
    "booking.order_placed": {"customer_id": "C-1", "order_id": "ORD-1", "model_code": "ID4-PRO"},
    "booking.service_completed": {
        "customer_id": "C-1",
        "vin": "WVWZZZE1ZPP012345",
        "odometer_km": 29874.0,
        "dealer_id": "DE-MUC-003",
    },
    "telematics.reading": {"vin": "WVWZZZE1ZPP012345", "odometer_km": 28412.6},
    "identity.customer_identified": {"customer_id": "C-1", "anonymous_id": "web-7f3a9c2d1e"},
    "identity.vehicle_linked": {
        "customer_id": "C-1",
        "vin": "WVWZZZE1ZPP012345",
        "model_code": "ID4-PRO",
    },
    "identity.consent_updated": {"customer_id": "C-1", "channel": "email", "granted": True},
    "identity.customer_updated": {"customer_id": "C-1"},
    "identity.customer_erased": {"customer_id": "C-1"},
}


def payload(event_type: str, **changes: Any) -> dict[str, Any]:
    """A valid event of `event_type` as a JSON dict, with `changes` applied."""
    return {**ENVELOPE, "type": event_type, **copy.deepcopy(MINIMAL[event_type]), **changes}


def encode(data: object) -> bytes:
    return orjson.dumps(data)


def reason_of(data: object, topic: str | None = None) -> str:
    with pytest.raises(InvalidEvent) as caught:
        decode_event(encode(data), topic)
    return caught.value.reason


def required_fields(event_type: str) -> list[str]:
    model = EVENT_TYPES[event_type]
    return [name for name, field in event_fields(model).items() if field.is_required()]


def test_every_contract_type_has_a_minimal_builder() -> None:
    assert set(MINIMAL) == set(EVENT_TYPES)


@pytest.mark.parametrize("event_type", list(EVENT_TYPES))
def test_each_type_decodes_to_its_class(event_type: str) -> None:
    event = decode_event(encode(payload(event_type)), INPUT_TOPIC_OF_TYPE[event_type])

    assert type(event) is EVENT_TYPES[event_type]
    assert event.type == event_type
    assert event.event_id == "evt-1"


@pytest.mark.parametrize(
    ("event_type", "field"),
    [
        (event_type, field)
        for event_type in EVENT_TYPES
        for field in required_fields(event_type)
        if field != "type"
    ],
)
def test_missing_required_field_is_named(event_type: str, field: str) -> None:
    data = payload(event_type)
    data.pop(field, None)

    assert f"{field}: Field required" in reason_of(data)


def test_required_fields_follow_the_contract() -> None:
    envelope = ["event_id", "type", "occurred_at"]
    assert required_fields("configurator.option_selected") == [
        *envelope,
        "session_id",
        "model_code",
        "category",
        "option_code",
    ]
    assert required_fields("identity.customer_identified") == [
        *envelope,
        "customer_id",
        "anonymous_id",
    ]
    assert required_fields("telematics.reading") == [*envelope, "vin", "odometer_km"]


@pytest.mark.parametrize(
    "event_type", [t for t, cls in EVENT_TYPES.items() if issubclass(cls, ConfiguratorEvent)]
)
@pytest.mark.parametrize(
    "ids",
    [{}, {"customer_id": None, "anonymous_id": None}, {"customer_id": "", "anonymous_id": ""}],
)
def test_configurator_event_needs_someone(event_type: str, ids: dict[str, Any]) -> None:
    data = payload(event_type)
    data.pop("customer_id", None)
    data.pop("anonymous_id", None)

    assert "customer_id or anonymous_id is required" in reason_of({**data, **ids})


@pytest.mark.parametrize(
    "ids",
    [
        {"customer_id": "C-1"},
        {"anonymous_id": "web-1"},
        {"customer_id": "", "anonymous_id": "web-1"},
    ],
)
def test_configurator_event_accepts_either_id(ids: dict[str, Any]) -> None:
    data = payload("configurator.session_started", **{"anonymous_id": None, **ids})

    assert isinstance(decode_event(encode(data)), events.SessionStarted)


CUSTOMER_TYPES = [t for t, cls in EVENT_TYPES.items() if issubclass(cls, CustomerEvent)]


def test_every_booking_and_identity_event_is_about_a_known_customer() -> None:
    assert [t for t in EVENT_TYPES if t.startswith(("booking.", "identity."))] == CUSTOMER_TYPES


@pytest.mark.parametrize("event_type", CUSTOMER_TYPES)
@pytest.mark.parametrize("customer_id", ["", None])
def test_booking_and_identity_events_need_a_customer(event_type: str, customer_id: Any) -> None:
    assert f"{event_type}: customer_id: " in reason_of(payload(event_type, customer_id=customer_id))


def test_customer_identified_needs_a_non_empty_anonymous_id() -> None:
    reason = reason_of(payload("identity.customer_identified", anonymous_id=""))

    assert "anonymous_id: String should have at least 1 character" in reason


def test_unknown_fields_are_ignored() -> None:
    plain = decode_event(encode(payload("configurator.option_selected")))
    extended = decode_event(
        encode(payload("configurator.option_selected", ab_variant="B", utm={"source": "mail"}))
    )

    assert extended == plain
    assert not hasattr(extended, "ab_variant")


@pytest.mark.parametrize(
    "occurred_at",
    ["2026-11-22T08:00:00", "2026-11-22", "1795334400", 1795334400, 1795334400.5, "yesterday"],
)
def test_timestamp_without_offset_is_rejected(occurred_at: object) -> None:
    reason = reason_of(payload("booking.cancelled", occurred_at=occurred_at))

    assert reason.startswith(
        "booking.cancelled: occurred_at: Input should be an RFC 3339 timestamp"
    )


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-22T09:30:00+01:00",
        "2026-11-22T03:30:00-05:00",
        "2026-11-22t08:30:00z",
        "2026-11-22 08:30:00Z",
    ],
)
def test_timestamp_with_offset_is_held_in_utc(text: str) -> None:
    event = decode_event(encode(payload("booking.test_drive_booked", occurred_at=text)))

    assert event.occurred_at == datetime(2026, 11, 22, 8, 30, tzinfo=UTC)
    assert event.occurred_at.utcoffset() == timedelta(0)


def test_fractional_seconds_are_kept() -> None:
    event = decode_event(
        encode(payload("booking.cancelled", occurred_at="2026-11-22T08:00:00.512Z"))
    )

    assert event.occurred_at.microsecond == 512_000


def test_scheduled_at_is_held_in_utc() -> None:
    event = decode_event(encode(payload("booking.test_drive_booked")))

    assert isinstance(event, events.TestDriveBooked)
    assert event.scheduled_at == datetime(2026, 11, 28, 9, 30, tzinfo=UTC)
    assert event.scheduled_at.tzinfo is UTC


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_timestamp_beyond_utc_range_is_rejected(text: str) -> None:
    assert "occurred_at: Input is out of the UTC date range" in reason_of(
        payload("booking.cancelled", occurred_at=text)
    )


def test_models_built_in_python_reject_naive_datetimes_and_normalise_aware_ones() -> None:
    fields = {**MINIMAL["booking.cancelled"], "event_id": "e", "type": "booking.cancelled"}
    with pytest.raises(ValidationError, match="timezone"):
        events.BookingCancelled(**fields, occurred_at=datetime(2026, 11, 22, 8, 0))  # noqa: DTZ001

    cet = timezone(timedelta(hours=1))
    event = events.BookingCancelled(**fields, occurred_at=datetime(2026, 11, 22, 9, 0, tzinfo=cet))
    assert event.occurred_at == datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
    assert event.occurred_at.tzinfo is UTC


def test_events_are_frozen() -> None:
    event = decode_event(encode(payload("booking.cancelled")))
    assert isinstance(event, events.BookingCancelled)

    with pytest.raises(FrozenInstanceError):
        event.booking_id = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    "raw", [b"", b"{", b"{'type': 'booking.cancelled'}", b"NaN", b"\xff\xfe{}", b"\xed\xa0\x80"]
)
def test_invalid_json_or_utf8_is_rejected(raw: bytes) -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode_event(raw)

    assert caught.value.reason.startswith("invalid JSON: ")
    assert str(caught.value) == caught.value.reason


def test_missing_value_is_rejected_not_crashed() -> None:
    # A Kafka tombstone reaches the caller as None despite the annotation.
    with pytest.raises(InvalidEvent, match="invalid JSON"):
        decode_event(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ([1], "an array"),
        ("x", "a string"),
        (3, "a number"),
        (2.5, "a number"),
        (None, "null"),
        (True, "a boolean"),
    ],
)
def test_non_object_json_is_rejected(value: object, kind: str) -> None:
    assert reason_of(value) == f"expected a JSON object, got {kind}"


def test_missing_type_lists_the_known_types() -> None:
    data = payload("booking.cancelled")
    del data["type"]

    reason = reason_of(data)

    assert reason.startswith("missing 'type'; expected one of: ")
    assert all(event_type in reason for event_type in EVENT_TYPES)


@pytest.mark.parametrize(
    ("type_value", "shown"),
    [
        ("configurator.clicked", "'configurator.clicked'"),
        ("BOOKING.CANCELLED", "'BOOKING.CANCELLED'"),
        (None, "None"),
        (5, "5"),
        (["booking.cancelled"], "['booking.cancelled']"),
        ({"a": 1}, "{'a': 1}"),
    ],
)
def test_unknown_type_is_named(type_value: object, shown: str) -> None:
    reason = reason_of({**payload("booking.cancelled"), "type": type_value})

    assert reason.startswith(f"unknown type {shown}; expected one of: configurator.session_started")


def test_long_unknown_type_is_shortened() -> None:
    reason = reason_of({**payload("booking.cancelled"), "type": "x" * 10_000})

    assert len(reason) < 1_000


def test_event_on_the_wrong_topic_is_rejected() -> None:
    reason = reason_of(payload("booking.cancelled"), topic="identity.events")

    assert reason == (
        "booking.cancelled does not belong on topic 'identity.events'; "
        "publish it to 'booking.events'"
    )


def test_input_topics_follow_the_type_prefix() -> None:
    assert INPUT_TOPIC_OF_TYPE["configurator.quote_requested"] == "configurator.events"
    assert INPUT_TOPIC_OF_TYPE["booking.cancelled"] == "booking.events"
    assert INPUT_TOPIC_OF_TYPE["telematics.reading"] == "telematics.events"
    assert INPUT_TOPIC_OF_TYPE["identity.customer_erased"] == "identity.events"
    assert set(INPUT_TOPIC_OF_TYPE.values()) == {
        "configurator.events",
        "booking.events",
        "telematics.events",
        "identity.events",
    }


def test_contract_has_fifteen_types() -> None:
    assert len(EVENT_TYPES) == 15
    assert all(cls.__name__[0].isupper() for cls in EVENT_TYPES.values())


def test_validation_reason_names_each_failing_field() -> None:
    data = payload("configurator.option_selected", category="colour")
    del data["session_id"]

    assert reason_of(data) == (
        "configurator.option_selected: session_id: Field required; "
        "category: Input should be 'color', 'wheels', 'engine', 'trim', 'interior', "
        "'package', 'accessory', 'safety', 'comfort' or 'other'"
    )


def test_list_item_errors_are_located() -> None:
    reason = reason_of(payload("configurator.configuration_saved", options=["P8P8", 7]))

    assert "options.1: Input should be a valid string" in reason


def test_reason_stays_short_when_everything_is_wrong() -> None:
    data = {"type": "configurator.configuration_saved", "options": list(range(50))}

    reason = reason_of(data)

    # 5 missing fields, 50 bad options, 2 more missing fields: 57 errors, 5 shown.
    assert reason.count(";") == 5
    assert reason.endswith("; and 52 more errors")


@pytest.mark.parametrize(
    ("event_type", "field", "value", "problem"),
    [
        ("configurator.option_selected", "category", "colour", "Input should be 'color'"),
        ("identity.consent_updated", "channel", "letter", "Input should be 'email'"),
        ("identity.consent_updated", "granted", "yes", "Input should be a valid boolean"),
        ("identity.consent_updated", "granted", 1, "Input should be a valid boolean"),
        ("identity.customer_updated", "market", "DEU", "String should match pattern"),
        ("identity.customer_updated", "market", "D1", "String should match pattern"),
        ("identity.vehicle_linked", "market", "", "String should match pattern"),
        ("configurator.session_started", "market", 49, "Input should be a valid string"),
        ("identity.customer_updated", "time_zone", "Europe", "IANA time zone"),
        ("identity.customer_updated", "time_zone", "Mars/Olympus", "IANA time zone"),
        ("identity.customer_updated", "time_zone", "localtime", "IANA time zone"),
        ("identity.customer_updated", "time_zone", "../etc/passwd", "IANA time zone"),
        ("identity.customer_updated", "birth_date", "09.05.1986", "date like 2023-04-17"),
        ("identity.customer_updated", "birth_date", 516_153_600, "not a number"),
        ("identity.vehicle_linked", "first_registered_on", "2023-02-30", "valid date"),
        ("identity.vehicle_linked", "service_interval_km", 0, "greater than 0"),
        ("identity.vehicle_linked", "service_interval_months", -12, "greater than 0"),
        ("identity.vehicle_linked", "service_interval_km", 15_000.5, "valid integer"),
        ("configurator.configuration_saved", "currency", "EURO", "String should match pattern"),
        ("configurator.configuration_saved", "total_price", -1, "greater than or equal to 0"),
        ("configurator.configuration_saved", "options", "P8P8", "valid list"),
        ("booking.service_completed", "odometer_km", -0.1, "greater than or equal to 0"),
        ("telematics.reading", "odometer_km", "inf", "must be a JSON number, not a string"),
        ("telematics.reading", "oil_life_pct", 100.1, "less than or equal to 100"),
        ("telematics.reading", "battery_soh_pct", -1, "greater than or equal to 0"),
        ("telematics.reading", "fuel_level_pct", "full", "must be a JSON number, not a string"),
        ("telematics.reading", "oil_life_pct", [80], "must be a JSON number, not an array"),
        ("booking.service_completed", "odometer_km", None, "must be a JSON number, not null"),
        ("telematics.reading", "dtc_codes", "P0301", "valid list"),
        ("booking.test_drive_booked", "scheduled_at", "2026-11-28T10:30:00", "RFC 3339"),
        ("booking.cancelled", "event_id", "", "at least 1 character"),
        ("booking.cancelled", "event_id", 42, "valid string"),
    ],
)
def test_bad_field_value_is_named(event_type: str, field: str, value: object, problem: str) -> None:
    reason = reason_of(payload(event_type, **{field: value}))

    assert reason.startswith(f"{event_type}: {field}: ")
    assert problem in reason


def test_codes_are_upper_cased() -> None:
    saved = decode_event(encode(payload("configurator.configuration_saved", currency="eur")))
    updated = decode_event(encode(payload("identity.customer_updated", market="de")))

    assert isinstance(saved, events.ConfigurationSaved)
    assert saved.currency == "EUR"
    assert isinstance(updated, events.CustomerUpdated)
    assert updated.market == "DE"


def test_overdue_vehicle_readings_are_kept() -> None:
    # VSS: negative DistanceToService / TimeToService mean the service is overdue.
    reading = decode_event(
        encode(
            payload("telematics.reading", service_remaining_km=-240.5, service_remaining_days=-3)
        )
    )

    assert isinstance(reading, events.TelematicsReading)
    assert reading.service_remaining_km == -240.5
    assert reading.service_remaining_days == -3


def test_optional_fields_accept_null() -> None:
    reading = decode_event(encode(payload("telematics.reading", dtc_codes=None, oil_life_pct=None)))

    assert isinstance(reading, events.TelematicsReading)
    assert reading.dtc_codes is None
    assert reading.oil_life_pct is None


def numeric_type(annotation: Any) -> type | None:
    """`int` or `float` for a field holding a number (optional or constrained), else None."""
    options = get_args(annotation) if get_origin(annotation) is Union else (annotation,)
    for option in options:
        base = get_args(option)[0] if get_origin(option) is Annotated else option
        if base in (int, float):
            return base  # type: ignore[no-any-return]
    return None


NUMERIC_FIELDS = [
    (event_type, name, kind)
    for event_type, cls in EVENT_TYPES.items()
    for name, field in event_fields(cls).items()
    if (kind := numeric_type(field.annotation)) is not None
]


def test_the_numeric_fields_are_found() -> None:
    assert [(event_type, name) for event_type, name, _ in NUMERIC_FIELDS] == [
        ("configurator.option_selected", "price_delta"),
        ("configurator.configuration_saved", "total_price"),
        ("booking.service_completed", "odometer_km"),
        ("telematics.reading", "odometer_km"),
        ("telematics.reading", "service_remaining_km"),
        ("telematics.reading", "service_remaining_days"),
        ("telematics.reading", "oil_life_pct"),
        ("telematics.reading", "battery_soh_pct"),
        ("telematics.reading", "fuel_level_pct"),
        ("identity.vehicle_linked", "service_interval_km"),
        ("identity.vehicle_linked", "service_interval_months"),
    ]


@pytest.mark.parametrize(("event_type", "field", "kind"), NUMERIC_FIELDS)
@pytest.mark.parametrize(
    ("value", "sent"),
    [("12", "a string"), ("12.5", "a string"), (True, "a boolean"), (False, "a boolean")],
)
def test_numbers_must_be_json_numbers(
    event_type: str, field: str, kind: type, value: object, sent: str
) -> None:
    # Lax pydantic would read "12" as 12 and true as 1: the contract says JSON numbers.
    reason = reason_of(payload(event_type, **{field: value}))

    assert reason == f"{event_type}: {field}: must be a JSON number, not {sent}"


@pytest.mark.parametrize(("event_type", "field", "kind"), NUMERIC_FIELDS)
def test_numbers_may_be_integers_or_fractions_where_the_field_allows(
    event_type: str, field: str, kind: type
) -> None:
    # JSON has one number type: 12 suits a float field, and 12.0 an integer one.
    for value in (12, 12.0):
        event = decode_event(encode(payload(event_type, **{field: value})))
        assert getattr(event, field) == 12
        assert type(getattr(event, field)) is kind
    fraction = payload(event_type, **{field: 12.5})
    if kind is float:
        assert getattr(decode_event(encode(fraction)), field) == 12.5
    else:
        assert "got a number with a fractional part" in reason_of(fraction)


def test_models_built_in_python_reject_infinite_numbers() -> None:
    fields = {**MINIMAL["telematics.reading"], **ENVELOPE, "type": "telematics.reading"}
    with pytest.raises(ValidationError, match="finite number"):
        events.TelematicsReading(**{**fields, "odometer_km": float("inf")})


def test_price_delta_may_be_negative() -> None:
    event = decode_event(encode(payload("configurator.option_selected", price_delta=-450.0)))

    assert isinstance(event, events.OptionSelected)
    assert event.price_delta == -450.0


def imported_packages(module: ModuleType) -> set[str]:
    tree = ast.parse(Path(str(module.__file__)).read_text(encoding="utf-8"))
    names = [
        name
        for node in ast.walk(tree)
        for name in (
            [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else []
        )
    ]
    return {name.partition(".")[0] for name in names}


@pytest.mark.parametrize("module", [events, outputs])
def test_the_core_imports_no_infrastructure(module: ModuleType) -> None:
    assert not imported_packages(module) & {"faust", "mode", "redis", "kafka", "aiokafka"}


_TEXT = st.text(st.characters(codec="utf-8"), max_size=20)
_INTERESTING = st.sampled_from(
    [
        "2026-11-22T08:00:00Z",
        "2026-11-22T08:00:00",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "2023-04-17",
        "de",
        "EUR",
        "Europe/Berlin",
        "Europe",
        "localtime",
        "email",
        "wheels",
        "",
        "\x00",
        "inf",
        "nan",
        "1e400",
    ]
)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT
    | _INTERESTING
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)
_FIELD_NAMES = sorted({name for cls in EVENT_TYPES.values() for name in event_fields(cls)})
_TOPICS = st.none() | st.sampled_from(sorted(set(INPUT_TOPIC_OF_TYPE.values()))) | _TEXT


def decode_or_error(raw: bytes, topic: str | None = None) -> InputEvent | InvalidEvent:
    """The outcome of decoding as a value, so properties can assert on either kind."""
    try:
        return decode_event(raw, topic)
    except InvalidEvent as exc:
        return exc


@settings(max_examples=300)
@given(raw=st.binary(max_size=200), topic=_TOPICS)
def test_arbitrary_bytes_raise_only_invalid_event(raw: bytes, topic: str | None) -> None:
    outcome = decode_or_error(raw, topic)

    assert not isinstance(outcome, InvalidEvent) or outcome.reason


@settings(max_examples=500)
@given(
    event_type=st.sampled_from(list(EVENT_TYPES)) | _JSON,
    fields=st.dictionaries(st.sampled_from(_FIELD_NAMES) | _TEXT, _JSON, max_size=12),
    topic=_TOPICS,
)
def test_arbitrary_event_dicts_raise_only_invalid_event(
    event_type: object, fields: dict[str, object], topic: str | None
) -> None:
    outcome = decode_or_error(encode({**fields, "type": event_type}), topic)

    if isinstance(outcome, InvalidEvent):
        assert outcome.reason
    else:
        assert type(outcome) is EVENT_TYPES[str(event_type)]


@settings(max_examples=300)
@given(
    event_type=st.sampled_from(list(EVENT_TYPES)),
    field=st.sampled_from([name for name in _FIELD_NAMES if name != "type"]),
    value=_JSON,
)
def test_one_bad_field_in_a_valid_event_raises_only_invalid_event(
    event_type: str, field: str, value: object
) -> None:
    outcome = decode_or_error(encode(payload(event_type, **{field: value})))

    assert not isinstance(outcome, InvalidEvent) or outcome.reason.startswith(event_type)

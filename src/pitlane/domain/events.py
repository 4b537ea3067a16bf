"""Input events of the wire contract, and the one way raw Kafka bytes become them.

Every producer team publishes against these models (their JSON Schemas are exported
by `pitlane schema`), so a rule here is a promise to them: what is rejected goes to
the dead-letter topic with the reason `decode_event` gives, what is accepted is
applied. Unknown fields are ignored so producers can add fields before pitlane reads
them. The models are frozen values with UTC timestamps; they do no I/O and read no
clock.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from functools import cache
from typing import Annotated, Any, Final, Literal, Self, get_args
from zoneinfo import available_timezones

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError, PydanticKnownError

OptionCategory = Literal[
    "color",
    "wheels",
    "engine",
    "trim",
    "interior",
    "package",
    "accessory",
    "safety",
    "comfort",
    "other",
]
Channel = Literal["email", "sms", "push", "dealer_call"]

_RFC3339_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


def _rfc3339_text(value: Any) -> Any:
    # Without this, pydantic would also read epoch numbers (seconds or milliseconds,
    # guessed) and offset-less forms; the contract promises producers RFC 3339 only.
    if isinstance(value, str):  # first: every event has one, and a str is no number
        if _RFC3339_DATETIME.fullmatch(value) is None:
            raise PydanticCustomError(
                "rfc3339",
                "Input should be an RFC 3339 timestamp with an offset, e.g. 2026-11-22T08:00:00Z",
            )
    elif isinstance(value, int | float):
        raise PydanticCustomError(
            "rfc3339", "Input should be an RFC 3339 timestamp string, not a number"
        )
    return value


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00:00+01:00 is valid text but has no UTC representation.
        raise PydanticCustomError("datetime_range", "Input is out of the UTC date range") from None


def _iso_date_text(value: Any) -> Any:
    if isinstance(value, str):
        if _ISO_DATE.fullmatch(value) is None:
            raise PydanticCustomError("iso_date", "Input should be a date like 2023-04-17")
    elif isinstance(value, int | float):
        raise PydanticCustomError("iso_date", "Input should be a date string, not a number")
    return value


@cache
def _iana_zones() -> frozenset[str]:
    # "localtime" is the host's own zone, which means nothing for a customer.
    return frozenset(available_timezones() - {"localtime"})


def _integer_not_text(value: Any) -> Any:
    # Strict mode would also reject 15000.0, which JSON Schema's "integer" (the schema
    # producers validate against) accepts; lax mode alone reads "15000" and true.
    if isinstance(value, (str, bool)):  # a tuple: `str | bool` is rebuilt on every call
        raise PydanticKnownError("int_type")
    return value


def _iana_zone(value: str) -> str:
    if value not in _iana_zones():
        raise PydanticCustomError(
            "time_zone", "Input should be an IANA time zone, e.g. Europe/Berlin"
        )
    return value


UtcDatetime = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text), AfterValidator(_to_utc)]
"""A timestamp given with an offset (RFC 3339 on the wire), held in UTC."""
IsoDate = Annotated[date, BeforeValidator(_iso_date_text)]
NonEmptyStr = Annotated[str, StringConstraints(min_length=1)]
Market = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2}$", to_upper=True)]
"""ISO 3166-1 alpha-2 country code, upper-cased so that "de" and "DE" are one market."""
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{3}$", to_upper=True)]
"""ISO 4217 code, upper-cased like `Market`."""
TimeZone = Annotated[str, AfterValidator(_iana_zone)]
JsonNumber = Annotated[float, Strict()]
"""A JSON number (an integer is one too); a numeric string or a boolean is rejected.

Lax mode would read "12345.6" as 12345.6 and true as 1.0. Strict mode is pydantic's
own check, no Python call per field, which matters on the hot path."""
PositiveInteger = Annotated[int, Field(gt=0), BeforeValidator(_integer_not_text)]
"""A JSON number above 0 without a fractional part (15000 or 15000.0); a string or a
boolean is rejected. The bound sits inside, before the check: a bound given outside
it would be checked in Python too, at twice the cost."""
Kilometres = Annotated[JsonNumber, Field(ge=0)]
Percent = Annotated[JsonNumber, Field(ge=0, le=100)]


_CONFIG = ConfigDict(extra="ignore", allow_inf_nan=False)
_event = dataclass(frozen=True, kw_only=True, config=_CONFIG)
"""Events are pydantic dataclasses rather than `BaseModel`s for the hot path's sake:
`BaseModel` defines `__getattr__`, which keeps CPython 3.11 from specialising attribute
reads on its instances, and its metaclass is an `ABCMeta`, whose `isinstance` checks
run Python-level hooks. Reading events' fields is most of what routing and applying
do: as models they cost 3.8 % more instructions per event. Validation, JSON Schemas
and error messages are pydantic's either way."""

_configurator_event = dataclass(
    frozen=True,
    kw_only=True,
    config=ConfigDict(
        **_CONFIG,
        # The JSON Schema twin of `_someone`, for producers who validate before publishing.
        json_schema_extra={
            "anyOf": [
                {"required": [name], "properties": {name: {"type": "string", "minLength": 1}}}
                for name in ("customer_id", "anonymous_id")
            ]
        },
    ),
)
"""A dataclass's config is whole: nothing of the class it extends is merged into it, so
every configurator event names this one."""


@_event
class Envelope:
    """Fields every input event carries; `event_id` is what makes redelivery harmless."""

    event_id: NonEmptyStr = Field(
        description="Unique id of the event; a repeated id is processed once."
    )
    type: str = Field(description="Event type; selects the rest of the schema.")
    occurred_at: UtcDatetime = Field(
        description="When it happened (event time), RFC 3339 with an offset."
    )
    customer_id: str | None = Field(None, description="Known customer, if any.")
    anonymous_id: str | None = Field(
        None, description="Web or device id from before login, if any."
    )


@_configurator_event
class ConfiguratorEvent(Envelope):
    """Configurator activity, which may come before login: either id identifies the person."""

    session_id: NonEmptyStr = Field(description="Configurator session.")

    @model_validator(mode="after")
    def _someone(self) -> Self:
        if not (self.customer_id or self.anonymous_id):
            raise PydanticCustomError(
                "identity_missing",
                "customer_id or anonymous_id is required and must be non-empty",
            )
        return self


@_event
class CustomerEvent(Envelope):
    """An event about a known customer: booking and identity events are keyed by them."""

    customer_id: NonEmptyStr = Field(description="The customer.")


@_configurator_event
class SessionStarted(ConfiguratorEvent):
    """A person opened the configurator for a model."""

    type: Literal["configurator.session_started"]
    model_code: NonEmptyStr = Field(description="Model being configured, e.g. ID4-PRO.")
    market: Market | None = Field(None, description="Market of the configurator site.")
    dealer_id: str | None = Field(None, description="Dealer whose site hosts the session.")


@_configurator_event
class OptionSelected(ConfiguratorEvent):
    """An option was picked; three in one session make it an engaged configuration."""

    type: Literal["configurator.option_selected"]
    model_code: NonEmptyStr = Field(description="Model being configured.")
    category: OptionCategory = Field(description="Kind of option.")
    option_code: NonEmptyStr = Field(description="Manufacturer option code.")
    option_label: str | None = Field(None, description="Display name shown to the customer.")
    price_delta: JsonNumber | None = Field(
        None, description="Price change in the session currency; negative for a discount."
    )


@_configurator_event
class ConfigurationSaved(ConfiguratorEvent):
    """A configuration was saved, which alone makes it engaged."""

    type: Literal["configurator.configuration_saved"]
    configuration_id: NonEmptyStr = Field(description="Saved configuration.")
    model_code: NonEmptyStr = Field(description="Configured model.")
    options: list[str] = Field(description="Option codes of the configuration.")
    total_price: JsonNumber = Field(ge=0, description="Total price in `currency`.")
    currency: Currency = Field(description="ISO 4217 currency of `total_price`.")
    dealer_id: str | None = Field(None, description="Dealer the configuration is saved with.")


@_configurator_event
class QuoteRequested(ConfiguratorEvent):
    """The person asked for a quote: a conversion that cancels abandonment."""

    type: Literal["configurator.quote_requested"]
    configuration_id: NonEmptyStr = Field(description="Configuration the quote is for.")
    dealer_id: str | None = Field(None, description="Dealer asked for the quote.")


@_event
class TestDriveBooked(CustomerEvent):
    """A test drive was booked: a conversion that cancels abandonment."""

    __test__ = False  # its name starts with "Test"; not a pytest class.

    type: Literal["booking.test_drive_booked"]
    booking_id: NonEmptyStr = Field(description="Booking.")
    model_code: NonEmptyStr = Field(description="Model to drive.")
    dealer_id: NonEmptyStr = Field(description="Dealer hosting the drive.")
    scheduled_at: UtcDatetime = Field(description="Appointment time.")


@_event
class ServiceBooked(CustomerEvent):
    """A service appointment was booked; no service-due trigger while it is open."""

    type: Literal["booking.service_booked"]
    booking_id: NonEmptyStr = Field(description="Booking.")
    vin: NonEmptyStr = Field(description="Vehicle identification number.")
    dealer_id: NonEmptyStr = Field(description="Workshop.")
    scheduled_at: UtcDatetime = Field(description="Appointment time.")
    services: list[str] | None = Field(None, description="Booked service items.")


@_event
class BookingCancelled(CustomerEvent):
    """A test drive or service booking was cancelled."""

    type: Literal["booking.cancelled"]
    booking_id: NonEmptyStr = Field(description="The cancelled booking.")


@_event
class OrderPlaced(CustomerEvent):
    """A car was ordered: a conversion that cancels abandonment."""

    type: Literal["booking.order_placed"]
    order_id: NonEmptyStr = Field(description="Order.")
    model_code: NonEmptyStr = Field(description="Ordered model.")
    configuration_id: str | None = Field(None, description="Configuration that was ordered.")
    vin: str | None = Field(None, description="VIN, once one is assigned.")
    dealer_id: str | None = Field(None, description="Selling dealer.")


@_event
class ServiceCompleted(CustomerEvent):
    """A workshop finished a service, which starts a new service cycle."""

    type: Literal["booking.service_completed"]
    vin: NonEmptyStr = Field(description="Serviced vehicle.")
    odometer_km: Kilometres = Field(description="Odometer at the service, km.")
    dealer_id: NonEmptyStr = Field(description="Workshop.")
    booking_id: str | None = Field(None, description="Booking the service fulfilled.")
    services: list[str] | None = Field(None, description="Service items performed.")


@_event
class TelematicsReading(Envelope):
    """A connected car reported its state; names follow COVESA VSS where it has one.

    The remaining distance and days keep VSS's sign: negative means overdue, which is
    the most urgent reading a car sends, so it must not be rejected.
    """

    type: Literal["telematics.reading"]
    vin: NonEmptyStr = Field(description="Reporting vehicle.")
    odometer_km: Kilometres = Field(description="Vehicle.TraveledDistance, km.")
    service_remaining_km: JsonNumber | None = Field(
        None, description="Vehicle.Service.DistanceToService, km; negative when overdue."
    )
    service_remaining_days: JsonNumber | None = Field(
        None, description="Vehicle.Service.TimeToService in days; negative when overdue."
    )
    oil_life_pct: Percent | None = Field(None, description="Remaining oil life, %.")
    battery_soh_pct: Percent | None = Field(None, description="Traction battery health, %.")
    fuel_level_pct: Percent | None = Field(None, description="Fuel level, %.")
    dtc_codes: list[str] | None = Field(
        None,
        description="Vehicle.Diagnostics.DTCList; [] means no faults, absent means not reported.",
    )


@_event
class CustomerIdentified(CustomerEvent):
    """A person logged in: their anonymous history joins the customer's profile."""

    type: Literal["identity.customer_identified"]
    anonymous_id: NonEmptyStr = Field(description="The id used before login.")


@_event
class VehicleLinked(CustomerEvent):
    """The customer is now the current owner of the car; the previous owner's link ends."""

    type: Literal["identity.vehicle_linked"]
    vin: NonEmptyStr = Field(description="Vehicle identification number.")
    model_code: NonEmptyStr = Field(description="Model of the vehicle.")
    first_registered_on: IsoDate | None = Field(
        None, description="First registration; starts the first service cycle at 0 km."
    )
    service_interval_km: PositiveInteger | None = Field(
        None, description="Service plan distance, km; the operator default if absent."
    )
    service_interval_months: PositiveInteger | None = Field(
        None, description="Service plan time, months; the operator default if absent."
    )
    market: Market | None = Field(None, description="Market the vehicle is registered in.")


@_event
class ConsentUpdated(CustomerEvent):
    """The customer granted or withdrew contact on one channel.

    `granted` must be a JSON boolean: guessing consent from "yes" or 1 is not ours to do.
    """

    type: Literal["identity.consent_updated"]
    channel: Channel = Field(description="Contact channel.")
    granted: StrictBool = Field(description="true to allow contact, false to withdraw it.")


@_event
class CustomerUpdated(CustomerEvent):
    """Profile facts that decide seasons, quiet hours and the dealer to mention."""

    type: Literal["identity.customer_updated"]
    market: Market | None = Field(None, description="ISO 3166-1 alpha-2 country.")
    time_zone: TimeZone | None = Field(None, description="IANA time zone, e.g. Europe/Berlin.")
    city: str | None = Field(None, description="City of residence.")
    language: str | None = Field(None, description="Preferred language, e.g. de or de-AT.")
    preferred_dealer_id: str | None = Field(None, description="Dealer the customer prefers.")
    birth_date: IsoDate | None = Field(None, description="Date of birth.")


@_event
class CustomerErased(CustomerEvent):
    """The customer exercised the right to erasure; nothing of theirs may remain."""

    type: Literal["identity.customer_erased"]


InputEvent = Annotated[
    SessionStarted
    | OptionSelected
    | ConfigurationSaved
    | QuoteRequested
    | TestDriveBooked
    | ServiceBooked
    | BookingCancelled
    | OrderPlaced
    | ServiceCompleted
    | TelematicsReading
    | CustomerIdentified
    | VehicleLinked
    | ConsentUpdated
    | CustomerUpdated
    | CustomerErased,
    Field(discriminator="type"),
]


def event_fields(event_class: type[Envelope]) -> dict[str, FieldInfo]:
    """The fields of an event class by name, with what pydantic knows of each."""
    fields: dict[str, FieldInfo] = event_class.__pydantic_fields__  # type: ignore[attr-defined]
    return fields


EVENT_TYPES: Final[dict[str, type[Envelope]]] = {
    get_args(event_fields(cls)["type"].annotation)[0]: cls
    for cls in get_args(get_args(InputEvent)[0])
}
"""Event classes by their `type` value, in contract order."""

INPUT_TOPIC_OF_TYPE: Final[dict[str, str]] = {
    name: f"{name.partition('.')[0]}.events" for name in EVENT_TYPES
}
"""The contract's input topic of each event type (`booking.cancelled` -> `booking.events`)."""

_INPUT_EVENT: Final[TypeAdapter[InputEvent]] = TypeAdapter(InputEvent)
_VALIDATE: Final = _INPUT_EVENT.validator.validate_python
"""The compiled validator itself: the adapter's wrapper costs 10 % of a validation."""
_KNOWN_TYPES: Final = ", ".join(EVENT_TYPES)
_MAX_ERRORS_SHOWN: Final = 5


class InvalidEvent(ValueError):
    """A message pitlane cannot apply; `reason` is what the dead letter tells its producer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode_event(raw: bytes, topic: str | None = None) -> InputEvent:
    """Turn one Kafka message value into its event, or raise `InvalidEvent` saying why.

    `topic` is the contract's topic name the message came from; when given, an event
    type that belongs elsewhere is rejected rather than silently applied. Nothing but
    `InvalidEvent` escapes, whatever the bytes, so a caller can route every failure
    to the dead-letter topic with one `except`.
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidEvent(f"expected a JSON object, got {_json_kind(data)}")
    event_type = data.get("type")
    if not isinstance(event_type, str) or event_type not in EVENT_TYPES:
        seen = "missing 'type'" if "type" not in data else f"unknown type {_preview(event_type)}"
        raise InvalidEvent(f"{seen}; expected one of: {_KNOWN_TYPES}")
    if topic is not None and INPUT_TOPIC_OF_TYPE[event_type] != topic:
        raise InvalidEvent(
            f"{event_type} does not belong on topic {topic!r}; "
            f"publish it to {INPUT_TOPIC_OF_TYPE[event_type]!r}"
        )
    try:
        event: InputEvent = _VALIDATE(data)
        return event
    except ValidationError as exc:
        raise InvalidEvent(f"{event_type}: {_describe(exc.errors(include_url=False))}") from None


_NUMBER_ERRORS: Final = frozenset({"float_type", "int_type"})


def _describe(errors: list[ErrorDetails]) -> str:
    # The first location element is the union tag, which the caller already names.
    parts = [
        f"{'.'.join(map(str, error['loc'][1:]))}: {_message(error)}"
        if len(error["loc"]) > 1
        else _message(error)
        for error in errors[:_MAX_ERRORS_SHOWN]
    ]
    if len(errors) > _MAX_ERRORS_SHOWN:
        parts.append(f"and {len(errors) - _MAX_ERRORS_SHOWN} more errors")
    return "; ".join(parts)


def _message(error: ErrorDetails) -> str:
    # pydantic says "Input should be a valid number" even of "12345.6"; a producer
    # whose serialiser quotes numbers needs to hear what it sent instead.
    if error["type"] in _NUMBER_ERRORS:
        return f"must be a JSON number, not {_json_kind(error['input'])}"
    return error["msg"]


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    return kinds.get(type(value), "a number")


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."

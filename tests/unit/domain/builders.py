"""Builders for domain tests: valid events with sensible defaults, and a tiny shell.

Every builder returns a validated event model (built through its pydantic class, so a
builder can never produce something `decode_event` would reject) and gives it a fresh,
increasing event id unless one is passed. `run` emulates the worker shell: it routes
an event in rounds with `keys_for`, loads deep copies of what it names from a dict
"store", applies the event and writes back the keys `apply` reports as changed.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, get_args

from pydantic import TypeAdapter

from pitlane.domain.apply import Applied, apply
from pitlane.domain.entities import EntityKey
from pitlane.domain.events import (
    BookingCancelled,
    ConfigurationSaved,
    ConsentUpdated,
    CustomerErased,
    CustomerIdentified,
    CustomerUpdated,
    Envelope,
    InputEvent,
    OptionSelected,
    OrderPlaced,
    QuoteRequested,
    ServiceBooked,
    ServiceCompleted,
    SessionStarted,
    TelematicsReading,
    TestDriveBooked,
    VehicleLinked,
    event_fields,
)
from pitlane.domain.profile import State
from pitlane.domain.routing import Unroutable, keys_for
from pitlane.settings import Settings

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
"""A Monday morning; builders default to it, tests mostly use `hours(n)` after it."""
SALT = "test-salt"
CUSTOMER = "C1"
VISITOR = "anon-7f3a9c2d"
VIN = "WVWZZZE1ZPP012345"
MODEL = "ID4-PRO"
DEALER = "DE-MUC-003"

Store = dict[EntityKey, State]
Working = dict[EntityKey, State | None]
E = TypeVar("E", bound=Envelope)

_ids = itertools.count(1)


def next_event_id() -> str:
    """A fresh id; zero-padded so that ids also sort in creation order."""
    return f"evt-{next(_ids):07d}"


def hours(n: float) -> datetime:
    """`n` hours after `T0`."""
    return T0 + timedelta(hours=n)


def make_settings(**overrides: Any) -> Settings:
    """Settings with every field given explicitly, so no PITLANE_* variable leaks in."""
    defaults = {
        name: field.get_default(call_default_factory=True)
        for name, field in Settings.model_fields.items()
    }
    return Settings(**{**defaults, "erasure_salt": SALT, **overrides})


SETTINGS = make_settings()


def _build(cls: type[E], at: datetime | None, event_id: str | None, **fields: Any) -> E:
    (event_type,) = get_args(event_fields(cls)["type"].annotation)
    return TypeAdapter(cls).validate_python(
        {
            "event_id": event_id or next_event_id(),
            "type": event_type,
            "occurred_at": at or T0,
            **{name: value for name, value in fields.items() if value is not None},
        }
    )


def _someone(customer_id: str | None, anonymous_id: str | None) -> dict[str, str | None]:
    if customer_id is None and anonymous_id is None:
        customer_id = CUSTOMER
    return {"customer_id": customer_id, "anonymous_id": anonymous_id}


# --- configurator -------------------------------------------------------------------


def session_started(
    *,
    customer_id: str | None = None,
    anonymous_id: str | None = None,
    session_id: str = "S1",
    model_code: str = MODEL,
    market: str | None = None,
    dealer_id: str | None = None,
    at: datetime | None = None,
    event_id: str | None = None,
) -> SessionStarted:
    return _build(
        SessionStarted,
        at,
        event_id,
        **_someone(customer_id, anonymous_id),
        session_id=session_id,
        model_code=model_code,
        market=market,
        dealer_id=dealer_id,
    )


def option_selected(
    *,
    customer_id: str | None = None,
    anonymous_id: str | None = None,
    session_id: str = "S1",
    category: str = "color",
    code: str = "P8P8",
    label: str | None = None,
    price_delta: float | None = None,
    model_code: str = MODEL,
    at: datetime | None = None,
    event_id: str | None = None,
) -> OptionSelected:
    return _build(
        OptionSelected,
        at,
        event_id,
        **_someone(customer_id, anonymous_id),
        session_id=session_id,
        model_code=model_code,
        category=category,
        option_code=code,
        option_label=label,
        price_delta=price_delta,
    )


def configuration_saved(
    *,
    customer_id: str | None = None,
    anonymous_id: str | None = None,
    session_id: str = "S1",
    configuration_id: str = "CFG-1",
    options: Iterable[str] = ("P8P8", "PJ3"),
    total_price: float = 52_840.0,
    currency: str = "EUR",
    model_code: str = MODEL,
    dealer_id: str | None = None,
    at: datetime | None = None,
    event_id: str | None = None,
) -> ConfigurationSaved:
    return _build(
        ConfigurationSaved,
        at,
        event_id,
        **_someone(customer_id, anonymous_id),
        session_id=session_id,
        configuration_id=configuration_id,
        model_code=model_code,
        options=list(options),
        total_price=total_price,
        currency=currency,
        dealer_id=dealer_id,
    )


def quote_requested(
    *,
    customer_id: str | None = None,
    anonymous_id: str | None = None,
    session_id: str = "S1",
    configuration_id: str = "CFG-1",
    dealer_id: str | None = None,
    at: datetime | None = None,
    event_id: str | None = None,
) -> QuoteRequested:
    return _build(
        QuoteRequested,
        at,
        event_id,
        **_someone(customer_id, anonymous_id),
        session_id=session_id,
        configuration_id=configuration_id,
        dealer_id=dealer_id,
    )


# --- bookings -----------------------------------------------------------------------


def booked_test_drive(
    *,
    customer_id: str = CUSTOMER,
    booking_id: str = "TD-1",
    model_code: str = MODEL,
    dealer_id: str = DEALER,
    scheduled_at: datetime | None = None,
    at: datetime | None = None,
    event_id: str | None = None,
) -> TestDriveBooked:
    return _build(
        TestDriveBooked,
        at,
        event_id,
        customer_id=customer_id,
        booking_id=booking_id,
        model_code=model_code,
        dealer_id=dealer_id,
        scheduled_at=scheduled_at or (at or T0) + timedelta(days=3),
    )


def service_booked(
    *,
    customer_id: str = CUSTOMER,
    booking_id: str = "SV-1",
    vin: str = VIN,
    dealer_id: str = DEALER,
    scheduled_at: datetime | None = None,
    services: list[str] | None = None,
    at: datetime | None = None,
    event_id: str | None = None,
) -> ServiceBooked:
    return _build(
        ServiceBooked,
        at,
        event_id,
        customer_id=customer_id,
        booking_id=booking_id,
        vin=vin,
        dealer_id=dealer_id,
        scheduled_at=scheduled_at or (at or T0) + timedelta(days=3),
        services=services,
    )


def booking_cancelled(
    *,
    customer_id: str = CUSTOMER,
    booking_id: str = "SV-1",
    at: datetime | None = None,
    event_id: str | None = None,
) -> BookingCancelled:
    return _build(BookingCancelled, at, event_id, customer_id=customer_id, booking_id=booking_id)


def order_placed(
    *,
    customer_id: str = CUSTOMER,
    order_id: str = "ORD-1",
    model_code: str = MODEL,
    at: datetime | None = None,
    event_id: str | None = None,
) -> OrderPlaced:
    return _build(
        OrderPlaced, at, event_id, customer_id=customer_id, order_id=order_id, model_code=model_code
    )


def service_completed(
    *,
    customer_id: str = CUSTOMER,
    vin: str = VIN,
    odometer_km: float = 15_210.0,
    dealer_id: str = DEALER,
    booking_id: str | None = None,
    at: datetime | None = None,
    event_id: str | None = None,
) -> ServiceCompleted:
    return _build(
        ServiceCompleted,
        at,
        event_id,
        customer_id=customer_id,
        vin=vin,
        odometer_km=odometer_km,
        dealer_id=dealer_id,
        booking_id=booking_id,
    )


# --- telematics ---------------------------------------------------------------------


def telematics_reading(
    *,
    vin: str = VIN,
    odometer_km: float = 12_000.0,
    at: datetime | None = None,
    event_id: str | None = None,
    **optional: Any,
) -> TelematicsReading:
    return _build(TelematicsReading, at, event_id, vin=vin, odometer_km=odometer_km, **optional)


# --- identity -----------------------------------------------------------------------


def customer_identified(
    *,
    customer_id: str = CUSTOMER,
    anonymous_id: str = VISITOR,
    at: datetime | None = None,
    event_id: str | None = None,
) -> CustomerIdentified:
    return _build(
        CustomerIdentified, at, event_id, customer_id=customer_id, anonymous_id=anonymous_id
    )


def vehicle_linked(
    *,
    customer_id: str = CUSTOMER,
    vin: str = VIN,
    model_code: str = MODEL,
    at: datetime | None = None,
    event_id: str | None = None,
    **optional: Any,
) -> VehicleLinked:
    return _build(
        VehicleLinked,
        at,
        event_id,
        customer_id=customer_id,
        vin=vin,
        model_code=model_code,
        **optional,
    )


def consent_updated(
    *,
    customer_id: str = CUSTOMER,
    channel: str = "email",
    granted: bool = True,
    at: datetime | None = None,
    event_id: str | None = None,
) -> ConsentUpdated:
    return _build(
        ConsentUpdated, at, event_id, customer_id=customer_id, channel=channel, granted=granted
    )


def customer_updated(
    *,
    customer_id: str = CUSTOMER,
    at: datetime | None = None,
    event_id: str | None = None,
    **fields: Any,
) -> CustomerUpdated:
    return _build(CustomerUpdated, at, event_id, customer_id=customer_id, **fields)


def customer_erased(
    *, customer_id: str = CUSTOMER, at: datetime | None = None, event_id: str | None = None
) -> CustomerErased:
    return _build(CustomerErased, at, event_id, customer_id=customer_id)


# --- the shell, emulated --------------------------------------------------------------


def load(event: InputEvent, store: Mapping[EntityKey, State], settings: Settings) -> Working:
    """Deep copies of every entity `event` needs, routed in rounds like the worker does.

    Raises `Unroutable` like `keys_for`.
    """
    salt = settings.erasure_salt.get_secret_value()
    working: Working = {}
    for _ in range(10):
        missing = [key for key in keys_for(event, working, salt) if key not in working]
        if not missing:
            return working
        for key in missing:
            working[key] = copy.deepcopy(store.get(key))
    raise AssertionError(f"routing of {event.type} did not settle in 10 rounds")


def write_back(
    working: Working, applied: Applied, store: Store, only: Iterable[EntityKey] | None = None
) -> None:
    """Store what `apply` changed (None deletes); `only` simulates a crash mid-write."""
    allowed = set(working) if only is None else set(only)
    for key in applied.changed & allowed:
        state = working[key]
        if state is None:
            store.pop(key, None)
        else:
            store[key] = state


def step(event: InputEvent, store: Store, settings: Settings = SETTINGS) -> Applied | None:
    """Route, load, apply and write back one event; None when it is unroutable.

    Also checks what every shell relies on: apply changes only loaded keys, and reports
    every key it changed (an unreported change would never be written).
    """
    try:
        working = load(event, store, settings)
    except Unroutable:
        return None
    before = copy.deepcopy(working)
    applied = apply(event, working, settings)
    assert applied.changed <= set(before), f"{event.type} changed unloaded keys"
    assert set(working) == set(before), f"{event.type} added unrouted keys"
    for key in set(working) - applied.changed:
        assert working[key] == before[key], f"{event.type} changed {key} without reporting it"
    write_back(working, applied, store)
    return applied


def run(
    events: Iterable[InputEvent], store: Store | None = None, settings: Settings = SETTINGS
) -> Store:
    """Apply `events` in the order given to `store` (a new one by default) and return it."""
    store = {} if store is None else store
    for event in events:
        step(event, store, settings)
    return store

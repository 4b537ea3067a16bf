"""Which entities an event reads and changes.

Routing runs in rounds: the first answer names what the event alone tells (its
customer or visitor with the erasure tombstone that would forbid it, its vehicle);
once those are loaded, a further answer may name what their state points to (the
customer an anonymous visitor was stitched to, a car's previous owner, the visitors
and vehicles of a customer being erased). The shell loads until the answer names
nothing new.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from pitlane.domain import entities
from pitlane.domain.entities import EntityKey, is_junk_id
from pitlane.domain.events import (
    EVENT_TYPES,
    BookingCancelled,
    ConfiguratorEvent,
    CustomerErased,
    CustomerEvent,
    CustomerIdentified,
    InputEvent,
    ServiceBooked,
    ServiceCompleted,
    TelematicsReading,
    VehicleLinked,
)
from pitlane.domain.profile import State

States = Mapping[EntityKey, State | None]


CONFIGURATOR_EVENT_TYPES = frozenset(
    name for name, cls in EVENT_TYPES.items() if issubclass(cls, ConfiguratorEvent)
)

STATE_DEPENDENT_ROUTES = CONFIGURATOR_EVENT_TYPES | frozenset(
    {
        "booking.cancelled",
        "identity.vehicle_linked",
        "identity.customer_erased",
    }
)
"""Event types whose full set of keys may depend on state already loaded."""


def routes_through_state(event: InputEvent, first: Sequence[EntityKey]) -> bool:
    """Whether the loaded state of `first`, the keys `keys_for` named for `event` from
    the event alone, may name more. A configurator event routed by its customer id
    goes to that customer whatever is loaded; one routed by a visitor's id may go on
    to the customer the visitor was stitched to."""
    return event.type in STATE_DEPENDENT_ROUTES and not (
        event.type in CONFIGURATOR_EVENT_TYPES and first[0].kind == "customer"
    )


ROUTES_LOST_BY_APPLYING = frozenset(
    {"booking.cancelled", "identity.vehicle_linked", "identity.customer_erased"}
)
"""Event types that reach entities through state the event itself then changes: a
cancellation finds the car through the booking it closes, a resale finds the previous
owner on the car it re-links, an erasure finds visitors and cars in the profile it
deletes (and writes the visitors' tombstones it names through it). Once the first
entity has applied the event, a redelivery cannot find the others, so they must be
written first (`write_phases`)."""

Route = tuple[Collection[EntityKey], Collection[EntityKey]]
"""(the entities an event names by itself, those it reached through their state)."""


class RoutesInACycle(Exception):
    """Two events of a batch each reach the other's entities; no write order suits both."""


def write_phases(routes: Iterable[Route]) -> dict[EntityKey, int]:
    """The order a write split across Redis Cluster slots must follow (lowest first;
    keys not named are phase 0): every entity reached through another's state is
    written before that other, so a crash between the two leaves the route intact for
    the redelivery. Raises `RoutesInACycle` when no such order exists.
    """
    edges = list(routes)
    phases: dict[EntityKey, int] = {}
    for _ in range(len(edges) + 1):
        moved = False
        for sources, reached in edges:
            after = max((phases.get(k, 0) for k in reached), default=-1) + 1
            for key in sources:
                if phases.get(key, 0) < after:
                    phases[key] = after
                    moved = True
        if not moved:
            return phases
    raise RoutesInACycle(f"routes {edges} cannot all be written in order")


class Unroutable(ValueError):
    """An event that names no one pitlane may store state for (junk identifiers only)."""


def customer_keys(customer_id: str, salt: str) -> list[EntityKey]:
    """A customer's profile and the erasure tombstone that would forbid it."""
    return [entities.customer(customer_id), entities.erased_marker(customer_id, salt)]


def visitor_keys(anonymous_id: str, salt: str) -> list[EntityKey]:
    """A visitor's profile and the tombstone its customer's erasure left, which would
    forbid it: the visitor's own profile is gone then, and with it whom it belonged to.
    """
    return [
        entities.anonymous(anonymous_id),
        entities.erased_marker(anonymous_id, salt, "anonymous"),
    ]


def configurator_owner(event: ConfiguratorEvent, states: States, salt: str) -> list[EntityKey]:
    """The profile a configurator event belongs to: the customer, else the visitor.

    A visitor already stitched to a customer is followed to that customer, so clicks
    after login and clicks before it end up in the same profile. A visitor's route
    starts with its profile and its tombstone (`visitor_keys`).
    """
    if not is_junk_id(event.customer_id):
        assert event.customer_id is not None
        return customer_keys(event.customer_id, salt)
    if is_junk_id(event.anonymous_id):
        raise Unroutable(
            f"{event.type}: neither customer_id {event.customer_id!r} nor "
            f"anonymous_id {event.anonymous_id!r} identifies anyone"
        )
    assert event.anonymous_id is not None
    keys = visitor_keys(event.anonymous_id, salt)
    state = states.get(keys[0])
    if state is not None and state["stitched_to"] is not None:
        keys.extend(customer_keys(state["stitched_to"], salt))
    return keys


def keys_for(event: InputEvent, states: States, salt: str) -> list[EntityKey]:
    """Every entity `event` needs, as far as the loaded `states` tell.

    Raises `Unroutable` for an event whose only identifiers are junk.
    """
    if isinstance(event, ConfiguratorEvent):
        return configurator_owner(event, states, salt)
    if isinstance(event, TelematicsReading):
        return [entities.vehicle(event.vin)]
    assert isinstance(event, CustomerEvent)
    if is_junk_id(event.customer_id):
        raise Unroutable(f"{event.type}: customer_id {event.customer_id!r} identifies no one")
    keys = customer_keys(event.customer_id, salt)
    profile = states.get(keys[0])
    if isinstance(event, ServiceBooked | ServiceCompleted):
        keys.append(entities.vehicle(event.vin))
    elif isinstance(event, BookingCancelled):
        booking = profile["bookings"].get(event.booking_id) if profile else None
        if booking is not None and booking.get("vin"):
            keys.append(entities.vehicle(booking["vin"]))
    elif isinstance(event, CustomerIdentified):
        if not is_junk_id(event.anonymous_id):
            keys.extend(visitor_keys(event.anonymous_id, salt))
    elif isinstance(event, VehicleLinked):
        car = entities.vehicle(event.vin)
        keys.append(car)
        car_state = states.get(car)
        if car_state is not None and car_state["owner"] not in (None, event.customer_id):
            keys.append(entities.customer(car_state["owner"]))
    elif isinstance(event, CustomerErased) and profile is not None:
        for anonymous_id in profile["anon_ids"]:
            keys.extend(visitor_keys(anonymous_id, salt))
        keys.extend(entities.vehicle(v) for v in profile["vehicles"])
    return keys

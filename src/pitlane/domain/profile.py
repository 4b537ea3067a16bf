"""The shapes of stored state: customer and anonymous profiles, vehicles, tombstones.

State is plain JSON-ready data (dicts, lists, strings, numbers) so that a batch can be
decoded, changed and encoded with no conversion layer in the hot path. Times are UTC
epoch seconds. Every value that can be set by more than one event carries a version
`[occurred_at, event_id]`; the larger version wins, which makes the outcome independent
of arrival order.
"""

from __future__ import annotations

from typing import Any

State = dict[str, Any]
Version = list[Any]  # [occurred_at_epoch_s, event_id]

SINGLE_CHOICE_CATEGORIES = frozenset({"color", "wheels", "engine", "trim", "interior"})
"""Categories where a new pick replaces the previous one (a car has one colour)."""


def new_profile(kind: str, entity_id: str) -> State:
    """An empty customer or anonymous profile."""
    return {
        "kind": kind,
        "id": entity_id,
        "seen": [],
        "first": None,
        "last": None,
        "attrs": {},
        "consent": {},
        "interest": {},
        "sessions": {},
        "saved": None,
        "conv": {},
        "bookings": {},
        "closed": [],
        "vehicles": {},
        "anon_ids": [],
        "stitched_to": None,
        "conflicts": [],
        "contacts": [],
    }


def new_vehicle(vin: str) -> State:
    """An empty vehicle: known by its VIN before anyone links it."""
    return {
        "kind": "vehicle",
        "id": vin,
        "seen": [],
        "model": None,
        "mv": None,
        "market": None,
        "registered_on": None,
        "plan": None,
        "owner": None,
        "owner_since": None,
        "owners": [],
        "service": None,
        "odo": None,
        "odo_at": None,
        "rate": None,
        "anchor": None,
        "ind": None,
        "oil": None,
        "soh": None,
        "fuel": None,
        "dtc": [],
        "booking": None,
        "closed": [],
        "eids": [],
        "due_fired": None,
    }


def new_erased_marker(at: float) -> State:
    """The tombstone of an erased customer, or of a visitor stitched to them: no id,
    only when."""
    return {"kind": "erased", "at": at}


def newer(candidate: Version, current: Version | None) -> bool:
    """True when `candidate` should replace `current` (later time, then larger id)."""
    return current is None or (candidate[0], candidate[1]) > (current[0], current[1])


def copy_state(state: State) -> State:
    """A deep copy of `state`, sharing nothing with it.

    State is JSON data (dicts, lists and immutable scalars), so only dicts and lists
    need copying: several times faster than `copy.deepcopy`, which looks up how to
    copy every object it meets and remembers each one.
    """
    copied: State = _copy_json(state)
    return copied


def _copy_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy_json(item) for item in value]
    return value

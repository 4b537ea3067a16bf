"""What pitlane keeps state about, and how those things are named.

An entity is the unit of atomic state: one Redis key, one hash tag in a Redis
Cluster. Events are routed to the entities they change; an event that touches
several (an identification, a resale) changes each one idempotently on its own, so a
crash between two of them is repaired by redelivery.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from functools import lru_cache, partial
from typing import Literal, NamedTuple

EntityKind = Literal["customer", "anonymous", "vehicle", "erased"]


class EntityKey(NamedTuple):
    """Kind and id of one entity; hashable, cheap, and usable as a dict key."""

    kind: EntityKind
    id: str


_key: Callable[[tuple[EntityKind, str]], EntityKey] = partial(tuple.__new__, EntityKey)
"""`EntityKey` built without its generated `__new__`, a Python frame per key: the
handler builds about ten keys per event."""


def customer(customer_id: str) -> EntityKey:
    """Key of a known customer's profile."""
    return _key(("customer", customer_id))


def anonymous(anonymous_id: str) -> EntityKey:
    """Key of a web or device visitor's profile before (and after) login."""
    return _key(("anonymous", anonymous_id))


def vehicle(vin: str) -> EntityKey:
    """Key of a vehicle's state."""
    return _key(("vehicle", vin))


@lru_cache(maxsize=4_096)  # a batch's ids, each looked up several times; 65,536 held 26 MB
def erased_marker(
    entity_id: str, salt: str, kind: Literal["customer", "anonymous"] = "customer"
) -> EntityKey:
    """Key of the tombstone an erased customer leaves behind, or (`kind="anonymous"`)
    each visitor stitched to them leaves.

    Only a salted hash of the id survives erasure, so the marker keeps late events and
    replays from rebuilding the profile without keeping the id itself. What is hashed
    differs in the byte after the salt (0 for a customer, as it always was, 1 for a
    visitor), so a visitor's tombstone never stands for a customer whatever the ids.
    """
    scope = "\x00" if kind == "customer" else "\x01anonymous\x00"
    digest = hashlib.sha256(f"{salt}{scope}{entity_id}".encode()).hexdigest()
    return _key(("erased", digest[:32]))


def event_tag(event_id: str) -> str:
    """A short, stable stand-in for an event id: 11 characters, 64 bits of hash.

    Profiles remember recent events (for idempotence) and version their fields by
    event; full ids would make up most of a profile's bytes. At 64 bits a collision
    between the few dozen events one entity remembers is about as likely as none.
    """
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


_JUNK_IDS = frozenset({"", "null", "none", "undefined", "anonymous", "nan", "-1", "unknown"})


def is_junk_id(value: str | None) -> bool:
    """True for identifiers that trackers emit when they know nobody.

    Merging on such an id would weld unrelated people into one profile, so these never
    stitch or route: empty, `null`, `anonymous`, `0` and any run of zeros (also a zero
    UUID), `-1`, and a few siblings of those.
    """
    if value is None:
        return True
    text = value.strip().lower()
    if text in _JUNK_IDS:
        return True
    return not text.strip("-0") and "0" in text  # zeros and dashes only, some zero

"""Trigger rules: when a customer is to be contacted, read from stored state alone.

Each rule module looks at one kind of entity (a customer profile, a vehicle) at a time
`now` the caller passes in and answers two questions: is a trigger due now (a
`Firing`), and when must the entity be looked at again if nothing else happens (its
`next_check`). Rules know nothing about consent, caps or publishing; `decide` adds
those. They mark the episode they fired for in the entity itself, so a rule fires
once per episode however often it is asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Firing:
    """A trigger whose moment has come, as its rule sees it.

    `subject` and `episode` name what the trigger is about and which occurrence of it
    (a customer's configurator session, a vehicle's service cycle); together with the
    type they make the trigger id. `due_at` is the moment the rule became true by the
    passage of time alone (an abandonment deadline, a service date coming within
    reach), or None when an event made it true; an event-time clock reports it as the
    firing time so that a replay fires at the same moment.
    """

    type: str
    subject: str
    episode: str
    context: dict[str, Any]
    caused_by: list[str]
    due_at: float | None


def utc(epoch_s: float) -> datetime:
    """An epoch time as an aware UTC datetime."""
    return datetime.fromtimestamp(epoch_s, UTC)


def event_ids(entries: list[list[Any]]) -> list[str]:
    """The ids of remembered `[occurred_at, event_id]` entries, oldest first."""
    return [str(event_id) for _, event_id in entries]

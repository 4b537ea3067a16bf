"""Deciding: which triggers fire now for the entities an event batch or a deadline touched.

The shell calls `decide` twice over: after applying a batch (with the entities it
changed) and when a deadline it armed comes due (with those entities). Both calls
read eligibility from the state as it is at that moment, never from what was true
when a deadline was armed, so a conversion or new activity in between simply wins.
A trigger that fires is delivered or held back by the contact policy, and either way
its episode is marked fired in the state, which is what makes it fire exactly once:
the shell writes `changed` back atomically together with (or before) publishing.

Pure like the rest of the domain: time comes in as `now` (UTC epoch seconds: the
wall clock, or the event-time watermark in event-clock mode), nothing is read or
written outside the `states` mapping, which `decide` changes in place.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field

from pitlane.domain import contact_policy, entities
from pitlane.domain.entities import EntityKey
from pitlane.domain.outputs import SuppressedTrigger, Trigger
from pitlane.domain.profile import State
from pitlane.domain.triggers import Firing, abandoned_configuration, service_due, utc
from pitlane.settings import Settings

_TRIGGER_IDS = uuid.uuid5(uuid.NAMESPACE_URL, "urn:pitlane:trigger")
"""Namespace of trigger ids; changing it changes every id ever published."""


def trigger_id(type: str, subject: str, episode: str) -> str:
    """The id of the trigger of `type` about `subject` for `episode`, as a UUID string.

    A name-based UUID (version 5) of the three, so the same trigger re-emitted after a
    crash or a replay has the same id, and consumers can deduplicate on it. Subjects
    are a customer id (abandoned configuration) or a VIN (service due); episodes a
    session id or a service cycle.
    """
    return str(uuid.uuid5(_TRIGGER_IDS, f"{type}\x00{subject}\x00{episode}"))


@dataclass
class Decisions:
    """What `decide` concluded, for the shell to publish, store and schedule.

    `deadlines` has an entry for every touched customer and vehicle: the time (epoch
    seconds, always later than `now`) `decide` must be called for it again if nothing
    happens before, or None when nothing is pending (drop any armed deadline).
    `changed` are the entities whose state `decide` modified (episode markers, contact
    history); they must be written.
    """

    triggers: list[Trigger] = field(default_factory=list)
    suppressed: list[SuppressedTrigger] = field(default_factory=list)
    deadlines: dict[EntityKey, float | None] = field(default_factory=dict)
    changed: set[EntityKey] = field(default_factory=set)


def decision_keys(
    states: Mapping[EntityKey, State | None], touched: Iterable[EntityKey]
) -> list[EntityKey]:
    """Entities to load, beyond `touched`, before calling `decide` for `touched`.

    A vehicle's trigger goes to its current owner, whose profile holds the consent and
    contact history; a customer's own triggers need nothing more.
    """
    owners = []
    for key in touched:
        car = states.get(key) if key.kind == "vehicle" else None
        if car is not None and car["owner"] is not None:
            owners.append(entities.customer(car["owner"]))
    return [key for key in dict.fromkeys(owners) if key not in states]


def decide(
    states: MutableMapping[EntityKey, State | None],
    touched: Iterable[EntityKey],
    now: float,
    settings: Settings,
    event_clock: bool,
) -> Decisions:
    """Fire what is due at `now` for the `touched` customers and vehicles.

    `states` must hold every touched key and every key `decision_keys` names (a
    missing owner profile raises `KeyError` rather than silently losing a trigger).
    Entities are taken in sorted order, so the contact policy sees a customer's
    triggers in the same order on every run. `fired_at` is `now`, except in event-clock
    mode for a trigger that came due by time alone, which fires at that moment.
    """
    run = _Run(states, now, settings, event_clock, Decisions())
    for key in sorted(set(touched)):
        if key.kind == "customer":
            run.out.deadlines[key] = run.abandonment(key)
        elif key.kind == "vehicle":
            run.out.deadlines[key] = run.service_due(key)
    return run.out


@dataclass
class _Run:
    """One `decide` call: its inputs, and the decisions it accumulates."""

    states: MutableMapping[EntityKey, State | None]
    now: float
    settings: Settings
    event_clock: bool
    out: Decisions

    def reachable(self, customer_id: str) -> State | None:
        """The customer's profile, unless they were erased (or never existed)."""
        profile = self.states[entities.customer(customer_id)]
        salt = self.settings.erasure_salt.get_secret_value()
        if self.states.get(entities.erased_marker(customer_id, salt)) is not None:
            return None
        return profile

    def abandonment(self, key: EntityKey) -> float | None:
        """Fire the customer's due reminder, if any; returns the customer's next deadline."""
        profile = self.reachable(key.id)
        if profile is None:
            return None
        firing = abandoned_configuration.evaluate(profile, self.now, self.settings)
        if firing is not None:
            fired = self.emit(key, profile, firing)
            abandoned_configuration.mark_fired(profile, firing.episode, fired)
            self.out.changed.add(key)
        return abandoned_configuration.next_check(profile, self.settings)

    def service_due(self, key: EntityKey) -> float | None:
        """Fire the vehicle's due reminder to its owner, if any; returns its next deadline."""
        car = self.states[key]
        if car is None or car["owner"] is None:
            return None
        profile = self.reachable(car["owner"])
        if profile is None:
            return None
        seen = service_due.outlook(car, self.settings)
        firing = service_due.evaluate(car, seen, self.now, self.settings)
        if firing is not None:
            self.emit(entities.customer(car["owner"]), profile, firing)
            service_due.mark_fired(car, firing.episode)
            self.out.changed.add(key)
        return service_due.next_check(car, seen, self.now, self.settings)

    def emit(self, profile_key: EntityKey, profile: State, firing: Firing) -> str:
        """Publish `firing` as a trigger or a held-back one; returns its id."""
        at = firing.due_at if self.event_clock and firing.due_at is not None else self.now
        fired = trigger_id(firing.type, firing.subject, firing.episode)
        verdict = contact_policy.evaluate(profile, firing.type, at, self.settings, fired)
        trigger = Trigger(
            trigger_id=fired,
            type=firing.type,
            customer_id=profile["id"],
            fired_at=utc(at),
            channels=verdict.channels,
            context=firing.context,
            caused_by=firing.caused_by,
        )
        if verdict.reason is None:
            contact_policy.record(profile, firing.type, fired, at, self.settings)
            self.out.triggers.append(trigger)
            self.out.changed.add(profile_key)
        else:
            self.out.suppressed.append(
                SuppressedTrigger(trigger=trigger, reason=verdict.reason, detail=verdict.detail)
            )
        return fired

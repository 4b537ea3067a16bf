"""State transitions: how one validated event changes the entities it touches.

`apply` is pure: it reads no clock and does no I/O; it changes the `states` mapping it
is handed (the caller owns that batch-local copy) and reports what it did. Each entity
remembers the ids of the events it has applied, so a redelivered event changes
nothing, also when it touches several entities and only some of them saw it before.
Every field that several events can set is versioned, so the result does not depend
on the order events of one customer arrive in.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from pydantic import TypeAdapter

from pitlane.domain import decay, dedupe, entities
from pitlane.domain.dedupe import Position
from pitlane.domain.entities import EntityKey, event_tag, is_junk_id
from pitlane.domain.events import (
    BookingCancelled,
    ConfigurationSaved,
    ConfiguratorEvent,
    ConsentUpdated,
    CustomerErased,
    CustomerIdentified,
    CustomerUpdated,
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
)
from pitlane.domain.profile import (
    SINGLE_CHOICE_CATEGORIES,
    State,
    Version,
    copy_state,
    new_erased_marker,
    new_profile,
    new_vehicle,
    newer,
)
from pitlane.domain.routing import configurator_owner, visitor_keys
from pitlane.settings import Settings

DAY_S = 86_400.0
CLOSED_KEPT = 20
OWNERS_KEPT = 5
SESSION_EVENT_IDS_KEPT = 6
"""Newest event ids a session keeps: the `caused_by` of its abandonment trigger."""
VEHICLE_EVENT_IDS_KEPT = 5
"""Newest event ids a vehicle keeps: the `caused_by` of its service-due trigger."""

INTEREST_WEIGHTS = {
    "configurator.option_selected": 1.0,
    "configurator.configuration_saved": 3.0,
    "configurator.quote_requested": 5.0,
}
"""How strongly an action signals interest in the categories it involves."""


class Applied(Protocol):
    """What applying one event did, for metrics and logs (the state is in `states`)."""

    @property
    def changed(self) -> set[EntityKey]:
        """The entities whose state the event changed (created, updated or deleted)."""

    @property
    def notes(self) -> list[str]:
        """What was dropped or kept, and why."""


@dataclass(slots=True)
class _Step:
    """One event being applied; returned as its `Applied` (one object less per event)."""

    event: InputEvent
    at: float
    tag: str
    version: Version
    states: MutableMapping[EntityKey, State | None]
    settings: Settings
    position: Position | None
    changed: set[EntityKey] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)

    def fresh(self, key: EntityKey, state: State) -> State | None:
        """`state` (the entity's, loaded or new) if this event is new to it, else None
        (a redelivery). Marks the event as seen by it."""
        if dedupe.already_applied(state, self.tag):
            return None
        dedupe.remember(state, self.tag, self.position, self.settings.dedupe_ids)
        self.changed.add(key)
        return state

    def profile(self, key: EntityKey) -> State | None:
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = new_profile(key.kind, key.id)
        return self.fresh(key, state)

    def vehicle(self, vin: str) -> State | None:
        key = entities.vehicle(vin)
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = new_vehicle(vin)
        car = self.fresh(key, state)
        if car is not None:
            car["eids"] = newest_event_ids(
                [*car.get("eids", []), [self.at, self.event.event_id]], VEHICLE_EVENT_IDS_KEPT
            )
        return car

    def is_erased(self, customer_id: str) -> bool:
        """True (and noted) when the customer was erased: the event must not rebuild them."""
        salt = self.settings.erasure_salt.get_secret_value()
        return self._dropped_by(entities.erased_marker(customer_id, salt), "customer")

    def is_erased_visitor(self, anonymous_id: str) -> bool:
        """True (and noted) when the visitor's customer was erased: whoever the event
        names, it must not rebuild the visitor's profile."""
        salt = self.settings.erasure_salt.get_secret_value()
        return self._dropped_by(entities.erased_marker(anonymous_id, salt, "anonymous"), "visitor")

    def _dropped_by(self, marker: EntityKey, whom: str) -> bool:
        if self.states.get(marker) is None:
            return False
        self.notes.append(f"dropped: {whom} erased")
        return True

    def customer(self, customer_id: str) -> State | None:
        """The customer's profile, unless they were erased or already saw the event."""
        if self.is_erased(customer_id):
            return None
        return self.profile(entities.customer(customer_id))


def apply(
    event: InputEvent,
    states: MutableMapping[EntityKey, State | None],
    settings: Settings,
    position: Position | None = None,
) -> Applied:
    """Apply `event`, read at `position` of an input partition if it was, to the
    loaded `states` (every key `routing.keys_for` names).

    Keys mapped to None afterwards are to be deleted.
    """
    at = event.occurred_at.timestamp()
    tag = event_tag(event.event_id)
    step = _Step(event, at, tag, [at, tag], states, settings, position)
    _HANDLERS[event.type](step)
    return step


# --- configurator -----------------------------------------------------------------


def _touch(profile: State, at: float) -> None:
    profile["first"] = at if profile["first"] is None else min(profile["first"], at)
    profile["last"] = at if profile["last"] is None else max(profile["last"], at)


def _session(profile: State, step: _Step, session_id: str) -> dict[str, Any]:
    sessions: dict[str, dict[str, Any]] = profile["sessions"]
    session = sessions.get(session_id)
    if session is None:
        session = {
            "model": None,
            "mv": None,
            "market": None,
            "dealer": None,
            "dv": None,
            "started": step.at,
            "last": step.at,
            "n": 0,
            "opts": {},
            "cfg": None,
            "quote": None,
            "eids": [],
            "fired": None,
            "cats": {},
            "acts": [],
            "credited": [],
        }
        sessions[session_id] = session
        _keep_newest_sessions(sessions, step.settings.sessions_kept)
    session["started"] = min(session["started"], step.at)
    session["last"] = max(session["last"], step.at)
    session["eids"] = newest_event_ids(
        [*session.get("eids", []), [step.at, step.event.event_id]], SESSION_EVENT_IDS_KEPT
    )
    return session


def newest_event_ids(entries: list[list[Any]], kept: int) -> list[list[Any]]:
    """The `kept` newest `[occurred_at, event_id]` entries, oldest first, without repeats.

    Sorting by event time keeps the result the same whatever order events (or merged
    histories) arrive in, so a trigger's `caused_by` does not depend on delivery order.
    """
    unique = {(at, event_id) for at, event_id in entries}
    return [[at, event_id] for at, event_id in sorted(unique)[-kept:]]


def _keep_newest_sessions(sessions: dict[str, dict[str, Any]], kept: int) -> None:
    if len(sessions) <= kept:
        return
    by_age = sorted(sessions, key=lambda sid: (sessions[sid]["last"], sid))
    for sid in by_age[: len(sessions) - kept]:
        del sessions[sid]


def _set_model(session: dict[str, Any], model_code: str, version: Version) -> None:
    if newer(version, session["mv"]):
        session["model"], session["mv"] = model_code, version


def _set_dealer(session: dict[str, Any], dealer_id: str | None, version: Version) -> None:
    if dealer_id and newer(version, session["dv"]):
        session["dealer"], session["dv"] = dealer_id, version


def _interest(profile: State, category: str, weight: float, at: float, settings: Settings) -> None:
    half_life = settings.interest_half_life_days * DAY_S
    interest: dict[str, list[float]] = profile["interest"]
    interest[category] = decay.add(interest.get(category), weight, at, half_life)


def _credit_actions(profile: State, session: dict[str, Any], settings: Settings) -> None:
    """Credit each save or quote to every category picked before it, once per pair.

    Deciding by event times (not by what the session held when the save arrived) keeps
    interest the same whatever order the clicks and the save are delivered in.
    """
    credited: list[str] = session["credited"]
    for category, first_pick in session["cats"].items():
        for event_id, at, weight in session["acts"]:
            pair = f"{category}|{event_id}"
            if first_pick <= at and pair not in credited:
                credited.append(pair)
                _interest(profile, category, weight, at, settings)
    credited.sort()


def _configurator(step: _Step) -> None:
    event = step.event
    assert isinstance(event, ConfiguratorEvent)
    salt = step.settings.erasure_salt.get_secret_value()
    keys = configurator_owner(event, step.states, salt)
    if keys[0].kind == "anonymous" and step.is_erased_visitor(keys[0].id):
        return
    known = [key for key in keys if key.kind == "customer"]
    profile = step.customer(known[0].id) if known else step.profile(keys[0])
    if profile is None:
        return
    _touch(profile, step.at)
    session = _session(profile, step, event.session_id)
    if isinstance(event, SessionStarted):
        _set_model(session, event.model_code, step.version)
        _set_dealer(session, event.dealer_id, step.version)
        if event.market and newer(step.version, session.get("mkv")):
            session["market"], session["mkv"] = event.market, step.version
    elif isinstance(event, OptionSelected):
        _set_model(session, event.model_code, step.version)
        session["n"] += 1
        _choose_option(session, event, step.version)
        cats: dict[str, float] = session["cats"]
        cats[event.category] = min(cats.get(event.category, step.at), step.at)
        _interest(profile, event.category, INTEREST_WEIGHTS[event.type], step.at, step.settings)
        _credit_actions(profile, session, step.settings)
    elif isinstance(event, ConfigurationSaved):
        _set_model(session, event.model_code, step.version)
        _set_dealer(session, event.dealer_id, step.version)
        saved = {
            "id": event.configuration_id,
            "session": event.session_id,
            "model": event.model_code,
            "options": list(event.options),
            "price": event.total_price,
            "cur": event.currency,
            "dealer": event.dealer_id,
            "v": step.version,
        }
        if session["cfg"] is None or newer(step.version, session["cfg"]["v"]):
            session["cfg"] = saved
        if profile["saved"] is None or newer(step.version, profile["saved"]["v"]):
            profile["saved"] = saved
        session["acts"] = sorted(
            [*session["acts"], [step.tag, step.at, INTEREST_WEIGHTS[event.type]]]
        )
        _credit_actions(profile, session, step.settings)
    elif isinstance(event, QuoteRequested):
        _set_dealer(session, event.dealer_id, step.version)
        session["quote"] = max(session["quote"] or step.at, step.at)
        _convert(profile, "quote", step.at)
        session["acts"] = sorted(
            [*session["acts"], [step.tag, step.at, INTEREST_WEIGHTS[event.type]]]
        )
        _credit_actions(profile, session, step.settings)


def _choose_option(session: dict[str, Any], event: OptionSelected, version: Version) -> None:
    chosen: dict[str, dict[str, Any]] = session["opts"].setdefault(event.category, {})
    entry = {"label": event.option_label, "price": event.price_delta, "v": version}
    current = chosen.get(event.option_code)
    if current is not None and not newer(version, current["v"]):
        return
    if event.category in SINGLE_CHOICE_CATEGORIES:
        latest = max((c["v"] for c in chosen.values()), default=None, key=_vkey)
        if latest is not None and not newer(version, latest):
            return
        chosen.clear()
    chosen[event.option_code] = entry


def _vkey(version: Version) -> tuple[float, str]:
    return (version[0], version[1])


def _convert(profile: State, kind: str, at: float) -> None:
    conv: dict[str, float] = profile["conv"]
    conv[kind] = max(conv.get(kind, at), at)


# --- bookings -----------------------------------------------------------------------


def _close(state: State, booking_id: str) -> None:
    closed: list[str] = state["closed"]
    if booking_id not in closed:
        closed.append(booking_id)
        del closed[:-CLOSED_KEPT]


def _test_drive_booked(step: _Step) -> None:
    event = step.event
    assert isinstance(event, TestDriveBooked)
    profile = step.customer(event.customer_id)
    if profile is None:
        return
    _convert(profile, "test_drive", step.at)
    _open_booking(
        profile,
        event.booking_id,
        {
            "kind": "test_drive",
            "at": event.scheduled_at.timestamp(),
            "model": event.model_code,
            "dealer": event.dealer_id,
        },
        step.version,
    )


def _open_booking(
    profile: State, booking_id: str, booking: dict[str, Any], version: Version
) -> None:
    """Record a booking unless it was closed already or a newer version is stored.

    A rebooking reuses the id; the newest by event time wins, as on the vehicle.
    """
    current = profile["bookings"].get(booking_id)
    if booking_id in profile["closed"] or (
        current is not None and not newer(version, current.get("v"))
    ):
        return
    profile["bookings"][booking_id] = {**booking, "v": version}


def _service_booked(step: _Step) -> None:
    event = step.event
    assert isinstance(event, ServiceBooked)
    if step.is_erased(event.customer_id):
        return
    profile = step.customer(event.customer_id)
    stored = step.states.get(entities.customer(event.customer_id))
    closed = stored is not None and event.booking_id in stored["closed"]
    scheduled = event.scheduled_at.timestamp()
    if profile is not None:
        _open_booking(
            profile,
            event.booking_id,
            {
                "kind": "service",
                "at": scheduled,
                "vin": event.vin,
                "dealer": event.dealer_id,
                "services": list(event.services or []),
            },
            step.version,
        )
    car = step.vehicle(event.vin)
    serviced_since = car is not None and (
        car["service"] is not None and car["service"]["at"] + DAY_S >= scheduled
    )
    if (
        car is not None
        and not closed
        and not serviced_since
        and event.booking_id not in car["closed"]
    ):
        current = car["booking"]
        if current is None or newer(step.version, current["v"]):
            car["booking"] = {
                "id": event.booking_id,
                "at": event.scheduled_at.timestamp(),
                "dealer": event.dealer_id,
                "v": step.version,
            }


def _booking_cancelled(step: _Step) -> None:
    event = step.event
    assert isinstance(event, BookingCancelled)
    profile = step.customer(event.customer_id)
    if profile is None:
        return
    booking = profile["bookings"].pop(event.booking_id, None)
    _close(profile, event.booking_id)
    if booking is not None and booking.get("vin"):
        car = step.vehicle(booking["vin"])
        if car is not None:
            _release_booking(car, event.booking_id)


def _release_booking(car: State, booking_id: str) -> None:
    _close(car, booking_id)
    if car["booking"] is not None and car["booking"]["id"] == booking_id:
        car["booking"] = None


def _order_placed(step: _Step) -> None:
    event = step.event
    assert isinstance(event, OrderPlaced)
    profile = step.customer(event.customer_id)
    if profile is not None:
        _convert(profile, "order", step.at)


def _service_completed(step: _Step) -> None:
    event = step.event
    assert isinstance(event, ServiceCompleted)
    profile = step.customer(event.customer_id)
    if profile is not None and event.booking_id:
        profile["bookings"].pop(event.booking_id, None)
        _close(profile, event.booking_id)
    car = step.vehicle(event.vin)
    if car is None:
        return
    service = car["service"]
    if service is None or newer(step.version, service["v"]):
        car["service"] = {
            "km": event.odometer_km,
            "at": step.at,
            "dealer": event.dealer_id,
            "v": step.version,
        }
    if event.booking_id:
        _release_booking(car, event.booking_id)
    elif car["booking"] is not None and car["booking"]["at"] <= step.at + DAY_S:
        car["booking"] = None
    _odometer(car, event.odometer_km, step.at, step.settings)


# --- telematics ---------------------------------------------------------------------


def _odometer(car: State, km: float, at: float, settings: Settings) -> bool:
    """Move the odometer forward (never back); True when this is the newest sample."""
    car["odo"] = km if car["odo"] is None else max(car["odo"], km)
    if car["odo_at"] is not None and at <= car["odo_at"]:
        return False
    car["odo_at"] = at
    anchor = car["anchor"]
    if anchor is None or km < anchor[0]:
        car["anchor"] = [km, at]
        return True
    span_days = (at - anchor[1]) / DAY_S
    if span_days * 24 >= settings.mileage_min_span_h:
        sample = (km - anchor[0]) / span_days
        rate = car["rate"]
        alpha = settings.mileage_smoothing
        car["rate"] = sample if rate is None else alpha * sample + (1 - alpha) * rate
        car["anchor"] = [km, at]
    return True


def _telematics(step: _Step) -> None:
    event = step.event
    assert isinstance(event, TelematicsReading)
    car = step.vehicle(event.vin)
    if car is None:
        return
    if not _odometer(car, event.odometer_km, step.at, step.settings):
        step.notes.append("late reading: odometer kept")
        return
    if event.service_remaining_km is not None or event.service_remaining_days is not None:
        car["ind"] = {
            "km": event.service_remaining_km,
            "days": event.service_remaining_days,
            "at": step.at,
        }
    for name, value in (
        ("oil", event.oil_life_pct),
        ("soh", event.battery_soh_pct),
        ("fuel", event.fuel_level_pct),
    ):
        if value is not None:
            car[name] = value
    if event.dtc_codes is not None:
        car["dtc"] = sorted(set(event.dtc_codes))


# --- identity -----------------------------------------------------------------------


def _customer_identified(step: _Step) -> None:
    event = step.event
    assert isinstance(event, CustomerIdentified)
    if is_junk_id(event.anonymous_id):
        step.notes.append(f"identity: junk anonymous_id {event.anonymous_id!r} ignored")
        return
    if step.is_erased(event.customer_id) or step.is_erased_visitor(event.anonymous_id):
        return  # an erased customer's visitor stays theirs: no profile, no conflict record
    visitor_key = entities.anonymous(event.anonymous_id)
    visitor_before = step.states.get(visitor_key)
    owner = visitor_before["stitched_to"] if visitor_before is not None else None
    if owner not in (None, event.customer_id):
        visitor = step.profile(visitor_key)
        if visitor is not None:
            visitor["conflicts"].append([event.customer_id, step.at])
            del visitor["conflicts"][:-OWNERS_KEPT]
        step.notes.append(
            f"identity conflict: {event.anonymous_id!r} stays with its first customer"
        )
        return
    visitor = step.profile(visitor_key)
    if visitor is not None:
        visitor["stitched_to"] = event.customer_id
    profile = step.customer(event.customer_id)
    if profile is None:
        return
    if event.anonymous_id in profile["anon_ids"]:
        return  # logged in again on the same device: its history is merged already
    profile["anon_ids"] = sorted([*profile["anon_ids"], event.anonymous_id])
    source = step.states.get(visitor_key)
    if source is not None:
        merge_profile(profile, source, step.settings)


def merge_profile(target: State, source: State, settings: Settings) -> None:
    """Fold an anonymous visitor's history into the customer it turned out to be.

    The merge gives the same result as if the visitor's events had been applied to the
    customer directly, which keeps state independent of whether a click arrived before
    or after the login that identified it. Nothing of `source` is shared with
    `target`: both stay independently changeable within one batch.
    """
    source = copy_state(source)
    dedupe.merge(target, source, settings.dedupe_ids)
    for bound, pick in (("first", min), ("last", max)):
        values = [v for v in (target[bound], source[bound]) if v is not None]
        target[bound] = pick(values) if values else None
    half_life = settings.interest_half_life_days * DAY_S
    for category, score in source["interest"].items():
        target["interest"][category] = decay.merge(
            target["interest"].get(category), score, half_life
        )
    for kind, at in source["conv"].items():
        target["conv"][kind] = max(target["conv"].get(kind, at), at)
    if source["saved"] is not None and (
        target["saved"] is None or newer(source["saved"]["v"], target["saved"]["v"])
    ):
        target["saved"] = source["saved"]
    for session_id, theirs in source["sessions"].items():
        ours = target["sessions"].get(session_id)
        merged = theirs if ours is None else _merge_session(ours, theirs)
        target["sessions"][session_id] = merged
        _credit_actions(target, merged, settings)
    _keep_newest_sessions(target["sessions"], settings.sessions_kept)


def _merge_session(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    merged = dict(ours)
    merged["started"] = min(ours["started"], theirs["started"])
    merged["last"] = max(ours["last"], theirs["last"])
    merged["n"] = ours["n"] + theirs["n"]
    for value, version in (("model", "mv"), ("dealer", "dv"), ("market", "mkv")):
        if theirs.get(version) is not None and newer(theirs[version], ours.get(version)):
            merged[value], merged[version] = theirs[value], theirs[version]
    if theirs["cfg"] is not None and (
        ours["cfg"] is None or newer(theirs["cfg"]["v"], ours["cfg"]["v"])
    ):
        merged["cfg"] = theirs["cfg"]
    quotes = [q for q in (ours["quote"], theirs["quote"]) if q is not None]
    merged["quote"] = max(quotes) if quotes else None
    merged["eids"] = newest_event_ids(
        [*ours.get("eids", []), *theirs.get("eids", [])], SESSION_EVENT_IDS_KEPT
    )
    merged["fired"] = ours.get("fired") or theirs.get("fired")
    merged["cats"] = dict(ours["cats"])
    for category, first_pick in theirs["cats"].items():
        merged["cats"][category] = min(merged["cats"].get(category, first_pick), first_pick)
    acts = {act[0]: act for act in [*ours["acts"], *theirs["acts"]]}
    merged["acts"] = [acts[event_id] for event_id in sorted(acts)]
    merged["credited"] = sorted({*ours["credited"], *theirs["credited"]})
    opts: dict[str, dict[str, Any]] = {c: dict(o) for c, o in ours["opts"].items()}
    for category, chosen in theirs["opts"].items():
        mine = opts.setdefault(category, {})
        for code, entry in chosen.items():
            if code not in mine or newer(entry["v"], mine[code]["v"]):
                mine[code] = entry
        if category in SINGLE_CHOICE_CATEGORIES and len(mine) > 1:
            code = max(mine, key=lambda c: _vkey(mine[c]["v"]))
            opts[category] = {code: mine[code]}
    merged["opts"] = opts
    return merged


def _vehicle_linked(step: _Step) -> None:
    event = step.event
    assert isinstance(event, VehicleLinked)
    if step.is_erased(event.customer_id):
        return
    car = step.vehicle(event.vin)
    if car is not None and newer(step.version, car["owner_since"]):
        previous = car["owner"]
        if previous is not None and previous != event.customer_id:
            _end_ownership(step, previous, event.vin)
            for link in car["owners"]:
                if link[0] == previous and link[2] is None:
                    link[2] = step.at
        if previous != event.customer_id:
            car["owners"].append([event.customer_id, step.at, None])
            car["owners"].sort(key=lambda link: link[1])
            del car["owners"][:-OWNERS_KEPT]
        car["owner"], car["owner_since"] = event.customer_id, step.version
        car["model"] = event.model_code
        if event.first_registered_on is not None:
            car["registered_on"] = event.first_registered_on.isoformat()
        if event.market is not None:
            car["market"] = event.market
        if event.service_interval_km is not None or event.service_interval_months is not None:
            car["plan"] = {
                "km": event.service_interval_km or step.settings.service_interval_km,
                "months": event.service_interval_months or step.settings.service_interval_months,
            }
    current = step.states.get(entities.vehicle(event.vin))
    profile = step.customer(event.customer_id)
    if profile is not None and current is not None and current["owner"] == event.customer_id:
        profile["vehicles"][event.vin] = step.at


def _end_ownership(step: _Step, previous_owner: str, vin: str) -> None:
    key = entities.customer(previous_owner)
    if step.states.get(key) is None:
        return
    profile = step.profile(key)
    if profile is not None:
        profile["vehicles"].pop(vin, None)


def _consent_updated(step: _Step) -> None:
    event = step.event
    assert isinstance(event, ConsentUpdated)
    profile = step.customer(event.customer_id)
    if profile is None:
        return
    current = profile["consent"].get(event.channel)
    if current is None or newer(step.version, current[1:]):
        profile["consent"][event.channel] = [event.granted, *step.version]


_CUSTOMER_UPDATED: Final = TypeAdapter(CustomerUpdated)
"""Dumps the facts of a `CustomerUpdated` as they are kept: dates as ISO text."""


def _customer_updated(step: _Step) -> None:
    event = step.event
    assert isinstance(event, CustomerUpdated)
    profile = step.customer(event.customer_id)
    if profile is None:
        return
    values = _CUSTOMER_UPDATED.dump_python(
        event,
        include={"market", "time_zone", "city", "language", "preferred_dealer_id", "birth_date"},
        exclude_none=True,
        mode="json",
    )
    for name, value in values.items():
        current = profile["attrs"].get(name)
        if current is None or newer(step.version, current[1:]):
            profile["attrs"][name] = [value, *step.version]


def _customer_erased(step: _Step) -> None:
    """Delete the customer and their visitors, and leave a tombstone for each of them
    (whether or not the visitor's own profile is still there) so that no replay,
    redelivery or later event rebuilds any of them."""
    event = step.event
    assert isinstance(event, CustomerErased)
    salt = step.settings.erasure_salt.get_secret_value()
    key = entities.customer(event.customer_id)
    profile = step.states.get(key)
    if profile is not None:
        for anonymous_id in profile["anon_ids"]:
            visitor, tombstone = visitor_keys(anonymous_id, salt)
            step.states[visitor] = None
            step.changed.add(visitor)
            _leave_tombstone(step, tombstone)
        for vin in profile["vehicles"]:
            car = step.states.get(entities.vehicle(vin))
            if car is not None:
                _forget_owner(car, event.customer_id)
                step.changed.add(entities.vehicle(vin))
    step.states[key] = None
    step.changed.add(key)
    _leave_tombstone(step, entities.erased_marker(event.customer_id, salt))


def _leave_tombstone(step: _Step, marker: EntityKey) -> None:
    if step.states.get(marker) is None:
        step.states[marker] = new_erased_marker(step.at)
        step.changed.add(marker)


def _forget_owner(car: State, customer_id: str) -> None:
    if car["owner"] == customer_id:
        car["owner"] = None
    car["owners"] = [link for link in car["owners"] if link[0] != customer_id]


_HANDLERS: dict[str, Callable[[_Step], None]] = {
    "configurator.session_started": _configurator,
    "configurator.option_selected": _configurator,
    "configurator.configuration_saved": _configurator,
    "configurator.quote_requested": _configurator,
    "booking.test_drive_booked": _test_drive_booked,
    "booking.service_booked": _service_booked,
    "booking.cancelled": _booking_cancelled,
    "booking.order_placed": _order_placed,
    "booking.service_completed": _service_completed,
    "telematics.reading": _telematics,
    "identity.customer_identified": _customer_identified,
    "identity.vehicle_linked": _vehicle_linked,
    "identity.consent_updated": _consent_updated,
    "identity.customer_updated": _customer_updated,
    "identity.customer_erased": _customer_erased,
}

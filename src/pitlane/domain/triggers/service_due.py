"""Service due: a vehicle nearing the end of its service cycle, told to its current owner.

A cycle runs from the last completed service (its odometer and time), else from the
first registration at 0 km, for the vehicle's plan (its own, else the operator's
default distance and months). The service is due, for the first of these reasons that
holds, when:

1. `distance`: the plan's remaining distance is at most `service_due_km`;
2. `vehicle_indicator`: the car's own service indicator (a reading taken in this
   cycle) says at most `service_due_km`, or at most `service_due_days` once the
   reading's age is taken off;
3. `time`: the plan's date is at most `service_due_days` away;
4. `predicted`: at the car's rolling daily mileage, the remaining distance runs out
   within `service_due_days`.

It fires once per cycle (the episode), never while a service booking for the car is
open (a cancellation lets it fire), and only to a current owner: a car nobody owns
fires when an owner is linked, if it is still due then. Rules 2 to 4 also come true
with no new event as days pass; `next_check` says when, so the caller can arm a
deadline.
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any, NamedTuple

from pitlane.domain.apply import DAY_S
from pitlane.domain.outputs import ServiceDueContext, ServiceDueReason
from pitlane.domain.profile import State
from pitlane.domain.triggers import Firing, event_ids, utc
from pitlane.settings import Settings

TYPE = "service_due"
INITIAL_CYCLE = "initial"
"""Episode of the first cycle, which has no completed service to name it."""


class Cycle(NamedTuple):
    """The current service cycle: where and when it started, and the plan it runs to.

    `id` is the episode: `service:<event id of the completed service>`, or
    `INITIAL_CYCLE`. `started_at` is None when neither a service nor the registration
    date is known, which leaves only the distance-based rules. (This and `Outlook` are
    NamedTuples, built for every vehicle decided: a frozen dataclass's `__init__`
    calls `object.__setattr__` for every field.)
    """

    id: str
    started_km: float
    started_at: float | None
    plan_km: float
    plan_months: int


class Outlook(NamedTuple):
    """Where a vehicle stands in its cycle; every estimate is None when unknown.

    Times are epoch seconds: `indicator_at` is when the car's indicator runs out of
    days, `plan_at` when the plan's months do, `predicted_at` when the daily mileage
    uses up the plan's remaining distance.
    """

    cycle: Cycle
    remaining_km: float | None
    indicator_km: float | None
    indicator_at: float | None
    plan_at: float | None
    predicted_at: float | None

    def dated_rules(self, settings: Settings) -> list[tuple[ServiceDueReason, float]]:
        """The rules that come true as time passes, in rule order, with the moment each does."""
        window = settings.service_due_days * DAY_S
        dates: list[tuple[ServiceDueReason, float | None]] = [
            ("vehicle_indicator", self.indicator_at),
            ("time", self.plan_at),
            ("predicted", self.predicted_at),
        ]
        return [(reason, at - window) for reason, at in dates if at is not None]


def cycle(car: State, settings: Settings) -> Cycle:
    """The vehicle's current service cycle."""
    plan = car["plan"] or {
        "km": settings.service_interval_km,
        "months": settings.service_interval_months,
    }
    service = car["service"]
    if service is not None:
        return Cycle(
            f"service:{service['v'][1]}", service["km"], service["at"], plan["km"], plan["months"]
        )
    registered = car["registered_on"]
    return Cycle(
        INITIAL_CYCLE,
        0.0,
        None if registered is None else _midnight(registered),
        plan["km"],
        plan["months"],
    )


@lru_cache(maxsize=4_096)
def _midnight(day: str) -> float:
    """The start (UTC) of an ISO date, in epoch seconds; cached like `add_months`."""
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC).timestamp()


def outlook(car: State, settings: Settings) -> Outlook:
    """Every estimate the rules need, from the vehicle's state alone."""
    current = cycle(car, settings)
    remaining = None
    if car["odo"] is not None:
        remaining = current.started_km + current.plan_km - car["odo"]
    predicted_at = None
    if remaining is not None and car["rate"] and car["odo_at"] is not None:
        predicted_at = car["odo_at"] + remaining / car["rate"] * DAY_S
    indicator = car["ind"]
    if indicator is not None and current.started_at is not None:
        # A reading from before the last service still counts down the old cycle.
        indicator = indicator if indicator["at"] > current.started_at else None
    indicator_at = None
    if indicator is not None and indicator["days"] is not None:
        indicator_at = indicator["at"] + indicator["days"] * DAY_S
    return Outlook(
        cycle=current,
        remaining_km=remaining,
        indicator_km=None if indicator is None else indicator["km"],
        indicator_at=indicator_at,
        plan_at=None
        if current.started_at is None
        else add_months(current.started_at, current.plan_months),
        predicted_at=predicted_at,
    )


@lru_cache(maxsize=4_096)
def add_months(epoch_s: float, months: int) -> float:
    """`months` calendar months after `epoch_s` (UTC), on the month's last day if shorter.

    Cached: cars registered on one day share a cycle start, and so its end.
    """
    start = datetime.fromtimestamp(epoch_s, UTC)
    index = start.month - 1 + months
    year, month = start.year + index // 12, index % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return start.replace(year=year, month=month, day=day).timestamp()


def _can_fire(car: State, current: Cycle) -> bool:
    """An owner to tell, no open service booking, and nothing fired yet in this cycle."""
    return (
        car["owner"] is not None and car["booking"] is None and car.get("due_fired") != current.id
    )


def _reason(
    seen: Outlook, now: float, settings: Settings
) -> tuple[ServiceDueReason, float | None] | None:
    """The first rule that holds at `now`, and the moment it came true by time (if it did)."""
    if seen.remaining_km is not None and seen.remaining_km <= settings.service_due_km:
        return "distance", None
    if seen.indicator_km is not None and seen.indicator_km <= settings.service_due_km:
        return "vehicle_indicator", None
    for reason, since in seen.dated_rules(settings):
        if since <= now:
            return reason, since
    return None


def evaluate(car: State, seen: Outlook, now: float, settings: Settings) -> Firing | None:
    """The service reminder due at `now`, or None; `seen` is the car's `outlook`."""
    if not _can_fire(car, seen.cycle):
        return None
    found = _reason(seen, now, settings)
    if found is None:
        return None
    reason, since = found
    remembered: list[list[Any]] = car.get("eids", [])
    last_event_at = remembered[-1][0] if remembered else None
    by_time = since is not None and (last_event_at is None or since > last_event_at)
    return Firing(
        type=TYPE,
        subject=car["id"],
        episode=seen.cycle.id,
        context=_context(car, seen, reason),
        caused_by=event_ids(remembered),
        due_at=since if by_time else None,
    )


def next_check(car: State, seen: Outlook, now: float, settings: Settings) -> float | None:
    """The earliest time after `now` at which a dated rule comes true with no new event.

    None when there is none, or when the car cannot fire anyway (no owner, an open
    booking, already fired this cycle): the event that changes that re-examines it.
    `seen` is the car's `outlook`, which firing (`mark_fired`) does not change.
    """
    if not _can_fire(car, seen.cycle):
        return None
    upcoming = [since for _, since in seen.dated_rules(settings) if since > now]
    return min(upcoming, default=None)


def mark_fired(car: State, episode: str) -> None:
    """Close the cycle's episode: no second reminder until the next completed service."""
    car["due_fired"] = episode


def _context(car: State, seen: Outlook, reason: ServiceDueReason) -> dict[str, Any]:
    remaining = seen.remaining_km
    if reason == "vehicle_indicator" and seen.indicator_km is not None:
        remaining = seen.indicator_km
    dates = [at for at in (seen.indicator_at, seen.plan_at, seen.predicted_at) if at is not None]
    service = car["service"]
    context = ServiceDueContext.model_validate(
        {
            "vin": car["id"],
            "model_code": car["model"],
            # No reading yet means the car is where its cycle started, as far as we know.
            "odometer_km": seen.cycle.started_km if car["odo"] is None else car["odo"],
            "remaining_km": remaining,
            "due_date": utc(min(dates)).date() if dates else None,
            "reason": reason,
            "dealer_id": None if service is None else service["dealer"],
        }
    )
    return context.model_dump(mode="json")

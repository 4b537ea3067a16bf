"""A worker shell in miniature for trigger tests: events in, triggers out, no broker.

`Shell` does what the real worker does around the pure core, one event per batch:
route with `keys_for` in rounds, load, `apply`, load `decision_keys`, `decide`, write
back what either changed, and keep one deadline per entity. State is stored as JSON
bytes, like Redis holds it, so a test also catches state that does not survive
encoding or that aliases between entities. `advance` is the deadline sweep.

Event builders give every event a fresh id; build a scenario's events once and feed
the same list to two shells to compare runs.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import TypeAdapter

from pitlane.domain.apply import apply
from pitlane.domain.decide import Decisions, decide, decision_keys
from pitlane.domain.entities import EntityKey
from pitlane.domain.events import InputEvent
from pitlane.domain.outputs import SuppressedTrigger, Trigger
from pitlane.domain.profile import State
from pitlane.domain.routing import keys_for
from pitlane.settings import Settings

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
CUSTOMER = "C1"
VISITOR = "anon-7f3a9c2d"
VIN = "WVWZZZE1ZPP012345"
MODEL = "ID4-PRO"
DEALER = "DE-MUC-003"
SALT = "test-salt"

_EVENTS: TypeAdapter[InputEvent] = TypeAdapter(InputEvent)
_ids = itertools.count(1)


def make_settings(**overrides: Any) -> Settings:
    """Settings with every field explicit, so no PITLANE_* variable leaks into a test."""
    defaults = {name: field.default for name, field in Settings.model_fields.items()}
    return Settings(**{**defaults, "erasure_salt": SALT, **overrides})


def hours(n: float) -> datetime:
    return T0 + timedelta(hours=n)


def days(n: float) -> datetime:
    return T0 + timedelta(days=n)


def event(type_: str, at: datetime, **fields: Any) -> InputEvent:
    """A validated event of `type_` at `at` with a fresh id (unless `event_id` is given)."""
    body = {"event_id": f"evt-{next(_ids):07d}", "type": type_, "occurred_at": at, **fields}
    return _EVENTS.validate_python(body)


def configure(
    at: datetime,
    options: Iterable[tuple[str, str]],
    *,
    session_id: str = "S1",
    saved: str | None = None,
    **who: str,
) -> list[InputEvent]:
    """A configurator session: started at `at`, one option per minute, maybe saved.

    `who` is customer_id= or anonymous_id= (the customer by default).
    """
    who = who or {"customer_id": CUSTOMER}
    common = {"session_id": session_id, "model_code": MODEL, **who}
    events = [event("configurator.session_started", at, dealer_id=DEALER, **common)]
    chosen = list(options)
    for minute, (category, code) in enumerate(chosen, start=1):
        events.append(
            event(
                "configurator.option_selected",
                at + timedelta(minutes=minute),
                category=category,
                option_code=code,
                option_label=f"label of {code}",
                **common,
            )
        )
    if saved is not None:
        events.append(
            event(
                "configurator.configuration_saved",
                at + timedelta(minutes=len(chosen) + 1),
                configuration_id=saved,
                options=[code for _, code in chosen],
                total_price=52_840.0,
                currency="EUR",
                **common,
            )
        )
    return events


FOUR_OPTIONS = [("color", "P8P8"), ("wheels", "PJ3"), ("package", "WP1"), ("accessory", "AC1")]


def consent(at: datetime, channel: str = "email", customer_id: str = CUSTOMER) -> InputEvent:
    return event(
        "identity.consent_updated", at, customer_id=customer_id, channel=channel, granted=True
    )


class Shell:
    """The worker around the pure core; collects what it publishes."""

    def __init__(self, settings: Settings | None = None, *, event_clock: bool = False) -> None:
        self.settings = settings or make_settings()
        self.event_clock = event_clock
        self.salt = self.settings.erasure_salt.get_secret_value()
        self.store: dict[EntityKey, bytes] = {}
        self.deadlines: dict[EntityKey, float] = {}
        self.clock = float("-inf")
        self.triggers: list[Trigger] = []
        self.suppressed: list[SuppressedTrigger] = []

    @property
    def fired(self) -> list[Trigger]:
        """Every trigger that fired, delivered or held back."""
        return [*self.triggers, *(held.trigger for held in self.suppressed)]

    def state(self, key: EntityKey) -> State | None:
        raw = self.store.get(key)
        return None if raw is None else orjson.loads(raw)

    def send(self, *events: InputEvent) -> Decisions:
        """Apply each event at its own time (sweeping deadlines due before it first).

        Returns the decisions taken after the last one.
        """
        decisions = Decisions()
        for one in events:
            decisions = self._send_one(one)
        return decisions

    def _send_one(self, ev: InputEvent) -> Decisions:
        at = ev.occurred_at.timestamp()
        self.advance(at)
        working: dict[EntityKey, State | None] = {}
        while missing := [k for k in keys_for(ev, working, self.salt) if k not in working]:
            self._load(working, missing)
        applied = apply(ev, working, self.settings)
        return self._decide(working, applied.changed, applied.changed)

    def advance(self, to: datetime | float) -> Decisions:
        """Move the clock to `to` and sweep once: decide for every entity due by then."""
        self.clock = max(self.clock, to if isinstance(to, float) else to.timestamp())
        due = sorted(key for key, at in self.deadlines.items() if at <= self.clock)
        if not due:
            return Decisions()
        working: dict[EntityKey, State | None] = {}
        self._load(working, due)
        return self._decide(working, due, set())

    def recheck(self, keys: Iterable[EntityKey]) -> Decisions:
        """Decide for `keys` at the current clock, due or not (a redundant sweep)."""
        working: dict[EntityKey, State | None] = {}
        keys = list(keys)
        self._load(working, keys)
        return self._decide(working, keys, set())

    def _decide(
        self,
        working: dict[EntityKey, State | None],
        touched: Iterable[EntityKey],
        changed: set[EntityKey],
    ) -> Decisions:
        touched = list(touched)
        self._load(working, decision_keys(working, touched))
        before = copy.deepcopy(working)
        decisions = decide(working, touched, self.clock, self.settings, self.event_clock)
        for key in set(working) - decisions.changed:
            # The worker writes back only what apply and decide report changed: an
            # unreported change would be lost.
            assert working[key] == before[key], f"decide changed {key} without reporting it"
        for key in changed | decisions.changed:
            state = working[key]
            if state is None:
                self.store.pop(key, None)
            else:
                self.store[key] = orjson.dumps(state)
        for key, deadline in decisions.deadlines.items():
            assert deadline is None or deadline > self.clock, "a deadline the sweep would loop on"
            if deadline is None:
                self.deadlines.pop(key, None)
            else:
                self.deadlines[key] = deadline
        self.triggers += decisions.triggers
        self.suppressed += decisions.suppressed
        return decisions

    def _load(self, working: dict[EntityKey, State | None], keys: Iterable[EntityKey]) -> None:
        for key in keys:
            working.setdefault(key, self.state(key))

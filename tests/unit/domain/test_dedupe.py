"""Redelivery: an event read again from Kafka changes nothing, however many come back."""

from __future__ import annotations

import copy

import builders as b
from builders import VISITOR, Store, hours

from pitlane.domain import dedupe, entities
from pitlane.domain.apply import apply
from pitlane.domain.dedupe import Position
from pitlane.domain.events import InputEvent

SMALL_WINDOW = b.make_settings(dedupe_ids=4)
PART = "configurator.events:3"
C1 = entities.customer("C1")


def step_at(event: InputEvent, position: Position | None, store: Store) -> bool:
    """Route, apply at `position` and write back, like the worker; True if anything changed."""
    working = b.load(event, store, SMALL_WINDOW)
    applied = apply(event, working, SMALL_WINDOW, position)
    b.write_back(working, applied, store)
    return bool(applied.changed)


def clicks(count: int, **fields: object) -> list[InputEvent]:
    return [
        b.option_selected(code=f"ACC-{i}", category="accessory", at=hours(i / 60), **fields)
        for i in range(count)
    ]


def test_a_redelivered_burst_longer_than_the_id_window_changes_nothing() -> None:
    burst = clicks(10, customer_id="C1")
    store: Store = {}
    for offset, click in enumerate(burst):
        step_at(click, (PART, offset), store)
    before = copy.deepcopy(store)

    changed = [step_at(click, (PART, offset), store) for offset, click in enumerate(burst)]

    assert not any(changed)
    assert store == before
    assert store[C1]["sessions"]["S1"]["n"] == 10


def test_without_positions_only_the_id_window_protects() -> None:
    """Why positions matter: the same burst read with no position is applied twice
    once it outgrows the window (each re-applied event pushes the next one out)."""
    burst = clicks(10, customer_id="C1")
    store: Store = {}
    for click in [*burst, *burst]:
        step_at(click, None, store)

    assert store[C1]["sessions"]["S1"]["n"] == 20


def test_an_upstream_duplicate_at_a_new_offset_is_recognised_by_its_id() -> None:
    click = clicks(1, customer_id="C1")[0]
    store: Store = {}
    step_at(click, (PART, 7), store)

    assert not step_at(click, (PART, 8), store)


def test_settle_forgets_committed_events_and_keeps_the_rest() -> None:
    state = {"seen": [], "pend": {PART: {"a": 4, "b": 5, "c": 6}, "other:0": {"d": 1}}}

    dedupe.settle(state, {PART: 5, "telematics.events:1": 100})

    assert state["pend"] == {PART: {"b": 5, "c": 6}, "other:0": {"d": 1}}


def test_settling_everything_leaves_no_pending_field() -> None:
    state = {"seen": ["a"], "pend": {PART: {"a": 4}}}

    dedupe.settle(state, {PART: 5})

    assert state == {"seen": ["a"]}


def test_settled_events_are_still_recognised_by_the_id_window() -> None:
    click = clicks(1, customer_id="C1")[0]
    store: Store = {}
    step_at(click, (PART, 0), store)
    dedupe.settle(store[C1], {PART: 1})

    assert "pend" not in store[C1]
    assert not step_at(click, (PART, 0), store)


def test_a_visitors_pending_events_are_recognised_on_the_customer_it_becomes() -> None:
    visits = clicks(6, anonymous_id=VISITOR)
    store: Store = {}
    for offset, click in enumerate(visits):
        step_at(click, (PART, offset), store)
    step_at(b.customer_identified(at=hours(1)), ("identity.events:0", 0), store)
    before = copy.deepcopy(store)

    # Redelivered after the login, the clicks route to the customer now.
    changed = [step_at(click, (PART, offset), store) for offset, click in enumerate(visits)]

    assert not any(changed)
    assert store == before
    assert store[C1]["sessions"]["S1"]["n"] == 6

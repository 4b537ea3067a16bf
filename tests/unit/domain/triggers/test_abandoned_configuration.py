"""Abandoned configuration: one reminder per engaged session the customer walked away from."""

from __future__ import annotations

import copy
from datetime import timedelta

from trigger_shell import (
    CUSTOMER,
    DEALER,
    FOUR_OPTIONS,
    MODEL,
    VISITOR,
    Shell,
    configure,
    consent,
    days,
    event,
    hours,
    make_settings,
)

from pitlane.domain import entities
from pitlane.domain.decide import decide
from pitlane.domain.triggers import abandoned_configuration

C1 = entities.customer(CUSTOMER)
WINDOW = timedelta(seconds=make_settings().abandonment_window_s)
LAST_CLICK = hours(1) + timedelta(minutes=len(FOUR_OPTIONS))
"""Last activity of `configure(hours(1), FOUR_OPTIONS)`."""


def engaged(shell: Shell) -> None:
    shell.send(consent(hours(0)), *configure(hours(1), FOUR_OPTIONS))


def test_four_options_then_quiet_fires_once_after_the_window() -> None:
    shell = Shell()
    shell.send(consent(hours(0)))
    session = configure(hours(1), FOUR_OPTIONS)

    decisions = shell.send(*session)
    assert decisions.deadlines[C1] == (LAST_CLICK + WINDOW).timestamp()
    assert shell.advance(LAST_CLICK + WINDOW - timedelta(seconds=1)).triggers == []

    shell.advance(LAST_CLICK + WINDOW)

    [trigger] = shell.triggers
    assert trigger.type == "abandoned_configuration"
    assert trigger.customer_id == CUSTOMER
    assert trigger.channels == ["email"]
    assert trigger.fired_at == LAST_CLICK + WINDOW
    assert trigger.caused_by == [e.event_id for e in session]
    assert trigger.context == {
        "session_id": "S1",
        "configuration_id": None,
        "model_code": MODEL,
        "options": {
            "accessory": [{"code": "AC1", "label": "label of AC1"}],
            "color": [{"code": "P8P8", "label": "label of P8P8"}],
            "package": [{"code": "WP1", "label": "label of WP1"}],
            "wheels": [{"code": "PJ3", "label": "label of PJ3"}],
        },
        "total_price": None,
        "currency": None,
        "top_interest_category": "accessory",
        "dealer_id": DEALER,
        "last_activity_at": "2026-11-02T09:04:00Z",
    }
    assert shell.deadlines == {}


def test_deciding_again_later_fires_nothing_more() -> None:
    shell = Shell()
    engaged(shell)
    shell.advance(LAST_CLICK + WINDOW)

    shell.advance(days(30))
    shell.send(event("identity.customer_updated", days(31), customer_id=CUSTOMER, city="Ulm"))

    assert len(shell.triggers) == 1
    assert shell.suppressed == []


def test_a_repeated_decision_on_unsaved_state_gives_the_same_trigger_id() -> None:
    # A crash between publishing and writing state makes the shell decide again.
    shell = Shell()
    engaged(shell)
    states = {C1: shell.state(C1)}
    at = (LAST_CLICK + WINDOW).timestamp()

    first = decide(copy.deepcopy(states), [C1], at, shell.settings, event_clock=False)
    again = decide(copy.deepcopy(states), [C1], at + 60, shell.settings, event_clock=False)

    assert [t.trigger_id for t in first.triggers] == [t.trigger_id for t in again.triggers]
    assert len(first.triggers) == 1


def test_test_drive_booked_within_the_window_cancels_it() -> None:
    shell = Shell()
    engaged(shell)

    decisions = shell.send(
        event(
            "booking.test_drive_booked",
            hours(5),
            customer_id=CUSTOMER,
            booking_id="TD-1",
            model_code=MODEL,
            dealer_id=DEALER,
            scheduled_at=days(3),
        )
    )
    shell.advance(days(10))

    assert decisions.deadlines[C1] is None
    assert shell.fired == []


def test_a_conversion_before_the_session_started_does_not_cancel_it() -> None:
    shell = Shell()
    shell.send(
        event(
            "booking.order_placed", hours(0), customer_id=CUSTOMER, order_id="O1", model_code=MODEL
        )
    )
    engaged(shell)

    shell.advance(LAST_CLICK + WINDOW)

    assert len(shell.triggers) == 1


def test_activity_before_the_deadline_moves_it() -> None:
    shell = Shell()
    engaged(shell)
    resumed = hours(20)

    decisions = shell.send(
        event(
            "configurator.option_selected",
            resumed,
            customer_id=CUSTOMER,
            session_id="S1",
            model_code=MODEL,
            category="comfort",
            option_code="HS1",
        )
    )
    shell.advance(LAST_CLICK + WINDOW)
    assert shell.triggers == []

    shell.advance(resumed + WINDOW)

    assert decisions.deadlines[C1] == (resumed + WINDOW).timestamp()
    [trigger] = shell.triggers
    assert trigger.fired_at == resumed + WINDOW
    assert trigger.context["last_activity_at"] == "2026-11-03T04:00:00Z"


def test_two_options_without_a_save_are_not_engaged() -> None:
    shell = Shell()

    decisions = shell.send(consent(hours(0)), *configure(hours(1), FOUR_OPTIONS[:2]))
    shell.advance(days(10))

    assert decisions.deadlines[C1] is None
    assert shell.fired == []


def test_anonymous_saved_configuration_identified_later_fires_for_the_customer() -> None:
    shell = Shell()
    shell.send(consent(hours(0)))
    visit = configure(hours(1), FOUR_OPTIONS[:1], saved="CFG-9", anonymous_id=VISITOR)
    shell.send(*visit)
    last_click = visit[-1].occurred_at

    decisions = shell.send(
        event(
            "identity.customer_identified",
            hours(2),
            customer_id=CUSTOMER,
            anonymous_id=VISITOR,
        )
    )
    shell.advance(last_click + WINDOW)

    assert decisions.deadlines[C1] == (last_click + WINDOW).timestamp()
    [trigger] = shell.triggers
    assert trigger.customer_id == CUSTOMER
    assert trigger.caused_by == [e.event_id for e in visit]
    assert trigger.context["configuration_id"] == "CFG-9"
    assert (trigger.context["total_price"], trigger.context["currency"]) == (52_840.0, "EUR")


def test_anonymous_session_never_identified_fires_nothing() -> None:
    shell = Shell()

    shell.send(*configure(hours(1), FOUR_OPTIONS, saved="CFG-9", anonymous_id=VISITOR))
    shell.advance(days(30))

    assert shell.deadlines == {}
    assert shell.fired == []


def test_an_erased_customer_gets_nothing() -> None:
    shell = Shell()
    engaged(shell)

    decisions = shell.send(event("identity.customer_erased", hours(3), customer_id=CUSTOMER))
    shell.advance(days(30))

    assert decisions.deadlines[C1] is None
    assert shell.fired == []


def test_only_the_latest_engaged_session_is_reminded_about() -> None:
    # A customer who moved on to another configuration gets one reminder, not two.
    shell = Shell()
    engaged(shell)
    shell.send(*configure(hours(3), FOUR_OPTIONS, session_id="S2"))

    shell.advance(days(30))

    [trigger] = shell.triggers
    assert trigger.context["session_id"] == "S2"
    assert shell.suppressed == []


def test_activity_in_another_session_postpones_the_deadline() -> None:
    # Still clicking around in the configurator is not abandoning it.
    shell = Shell()
    engaged(shell)

    decisions = shell.send(
        *configure(hours(10), [("color", "P0"), ("trim", "T1")], session_id="S2")
    )

    assert decisions.deadlines[C1] == (hours(10) + timedelta(minutes=2) + WINDOW).timestamp()


def test_the_dealer_falls_back_to_the_preferred_one() -> None:
    shell = Shell()
    shell.send(
        consent(hours(0)),
        event(
            "identity.customer_updated", hours(0), customer_id=CUSTOMER, preferred_dealer_id="D9"
        ),
        *[
            event(
                "configurator.option_selected",
                hours(1),
                customer_id=CUSTOMER,
                session_id="S1",
                model_code=MODEL,
                category="package",
                option_code=f"WP{n}",
            )
            for n in range(3)
        ],
    )

    shell.advance(days(2))

    [trigger] = shell.triggers
    assert trigger.context["dealer_id"] == "D9"


def test_anonymous_profiles_never_have_anything_pending() -> None:
    shell = Shell()
    shell.send(*configure(hours(1), FOUR_OPTIONS, anonymous_id=VISITOR))

    visitor = shell.state(entities.anonymous(VISITOR))

    assert visitor is not None
    assert abandoned_configuration.pending(visitor, shell.settings) is None

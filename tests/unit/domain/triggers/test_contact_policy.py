"""Contact policy: consent, the contact cap, the cooldown and the control group."""

from __future__ import annotations

from datetime import timedelta

import pytest
from trigger_shell import (
    CUSTOMER,
    FOUR_OPTIONS,
    Shell,
    configure,
    consent,
    days,
    event,
    hours,
    make_settings,
)

from pitlane.domain import contact_policy, entities
from pitlane.domain.profile import State, new_profile

DAY_S = 86_400.0


def profile(*contacts: list[object], channels: tuple[str, ...] = ("email",)) -> State:
    state = new_profile("customer", CUSTOMER)
    state["consent"] = {channel: [True, 0.0, "evt"] for channel in channels}
    state["contacts"] = [list(c) for c in contacts]
    return state


def abandon_sessions(shell: Shell, starts: list[float]) -> None:
    """One engaged session per start day, each left alone long enough to fire."""
    for n, start in enumerate(starts, start=1):
        shell.send(*configure(days(start), FOUR_OPTIONS, session_id=f"S{n}"))
        shell.advance(days(start + 1.1))


def test_no_consented_channel_suppresses_it_once() -> None:
    shell = Shell()
    shell.send(*configure(hours(1), FOUR_OPTIONS))

    shell.advance(days(2))
    shell.advance(days(20))

    assert shell.triggers == []
    [held] = shell.suppressed
    assert held.reason == "no_consent"
    assert held.trigger.channels == []
    assert held.trigger.type == "abandoned_configuration"


def test_withdrawn_consent_counts_as_none() -> None:
    shell = Shell()
    shell.send(
        consent(hours(0)),
        event(
            "identity.consent_updated",
            hours(0.5),
            customer_id=CUSTOMER,
            channel="email",
            granted=False,
        ),
        *configure(hours(1), FOUR_OPTIONS),
    )

    shell.advance(days(2))

    assert [held.reason for held in shell.suppressed] == ["no_consent"]


def test_the_fourth_trigger_in_seven_days_hits_the_contact_cap() -> None:
    shell = Shell(make_settings(cooldown_s=0))
    shell.send(consent(hours(0)))

    abandon_sessions(shell, [0, 1.5, 3, 4.5])

    assert len(shell.triggers) == 3
    [held] = shell.suppressed
    assert held.reason == "contact_cap"
    assert held.trigger.context["session_id"] == "S4"


def test_the_cap_window_rolls() -> None:
    shell = Shell(make_settings(cooldown_s=0))
    shell.send(consent(hours(0)))

    abandon_sessions(shell, [0, 1.5, 3, 7])

    assert len(shell.triggers) == 4
    assert shell.suppressed == []


def test_the_same_type_within_the_cooldown_is_held_back() -> None:
    shell = Shell()
    shell.send(consent(hours(0)))

    abandon_sessions(shell, [0, 2, 9])

    assert [t.context["session_id"] for t in shell.triggers] == ["S1", "S3"]
    [held] = shell.suppressed
    assert held.reason == "cooldown"
    assert held.trigger.context["session_id"] == "S2"


def test_the_control_group_is_held_back() -> None:
    shell = Shell(make_settings(control_group_pct=100))
    shell.send(consent(hours(0)), *configure(hours(1), FOUR_OPTIONS))

    shell.advance(days(2))

    assert [held.reason for held in shell.suppressed] == ["control_group"]


def test_channels_are_the_consented_ones_in_contract_order() -> None:
    state = profile(channels=("push", "email", "dealer_call"))
    state["consent"]["sms"] = [False, 0.0, "evt"]

    verdict = contact_policy.evaluate(state, "service_due", 0.0, make_settings())

    assert verdict == contact_policy.Verdict(["email", "push", "dealer_call"])


def test_the_cap_counts_every_type_and_the_cooldown_only_its_own() -> None:
    settings = make_settings(contact_cap=2)
    now = 10 * DAY_S
    state = profile(["a", "t1", now - DAY_S], ["b", "t2", now - 2 * DAY_S])

    assert contact_policy.evaluate(state, "c", now, settings).reason == "contact_cap"
    state["contacts"].pop()
    assert contact_policy.evaluate(state, "a", now, settings).reason == "cooldown"
    assert contact_policy.evaluate(state, "c", now, settings).reason is None


def test_a_trigger_is_not_held_back_by_its_own_recorded_delivery() -> None:
    settings = make_settings(contact_cap=1)
    state = profile()
    contact_policy.record(state, "a", "t1", 100.0, settings)

    assert contact_policy.evaluate(state, "a", 150.0, settings, "t1").reason is None
    assert contact_policy.evaluate(state, "a", 150.0, settings, "t2").reason == "contact_cap"


def test_recording_the_same_trigger_twice_changes_nothing() -> None:
    settings = make_settings()
    state = profile()

    contact_policy.record(state, "a", "t1", 100.0, settings)
    once = [list(c) for c in state["contacts"]]
    contact_policy.record(state, "a", "t1", 200.0, settings)

    assert state["contacts"] == once == [["a", "t1", 100.0]]


def test_history_is_kept_only_as_far_back_as_a_rule_looks() -> None:
    settings = make_settings(contact_cap_window_s=7 * DAY_S, cooldown_s=10 * DAY_S)
    state = profile(["a", "old", 0.0], ["a", "kept", 5 * DAY_S])

    contact_policy.record(state, "b", "new", 12 * DAY_S, settings)

    assert [c[1] for c in state["contacts"]] == ["kept", "new"]


@pytest.mark.parametrize("pct", [0, 100])
def test_the_control_group_bounds(pct: float) -> None:
    members = [contact_policy.in_control_group(f"C{n}", "service_due", pct) for n in range(200)]

    assert all(members) is (pct == 100)
    assert any(members) is (pct == 100)


def test_the_control_group_is_stable_and_about_the_right_size() -> None:
    members = {f"C{n}" for n in range(2_000) if contact_policy.in_control_group(f"C{n}", "x", 10)}

    assert 150 <= len(members) <= 250
    assert members == {
        f"C{n}" for n in range(2_000) if contact_policy.in_control_group(f"C{n}", "x", 10)
    }


def test_suppressed_triggers_do_not_count_as_contacts() -> None:
    shell = Shell(make_settings(control_group_pct=100))
    shell.send(consent(hours(0)), *configure(hours(1), FOUR_OPTIONS))
    shell.advance(hours(1) + timedelta(days=2))

    state = shell.state(entities.customer(CUSTOMER))

    assert state is not None
    assert state["contacts"] == []

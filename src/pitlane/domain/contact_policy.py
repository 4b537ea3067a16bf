"""Contact policy: whether a trigger that fired may reach the customer, and on which channels.

Checked in the contract's order, the first failing rule being the reason a trigger is
held back: consent (no consented channel), the contact cap (at most `contact_cap`
delivered triggers per rolling `contact_cap_window_s`, all types together), the
per-type cooldown, and last an optional control group. Only delivered triggers count
as contacts; a held-back one never reached anyone.

The profile keeps the history this needs in `profile["contacts"]`: `[type, trigger_id,
at]` entries of delivered triggers, oldest first, no older than the longer of the cap
window and the cooldown, so it stays small.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, get_args

from pitlane.domain.events import Channel
from pitlane.domain.outputs import SuppressionReason
from pitlane.domain.profile import State
from pitlane.settings import Settings

CHANNELS: tuple[Channel, ...] = get_args(Channel)
"""Every contact channel, in the contract's order (the order triggers list them in)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The channels a trigger may use, and why it is held back (None: deliver it)."""

    channels: list[Channel]
    reason: SuppressionReason | None = None
    detail: str | None = None


def consented_channels(profile: State) -> list[Channel]:
    """Channels whose latest consent update granted contact."""
    consent: dict[str, list[Any]] = profile["consent"]
    return [channel for channel in CHANNELS if channel in consent and consent[channel][0] is True]


def evaluate(
    profile: State, trigger_type: str, at: float, settings: Settings, trigger_id: str = ""
) -> Verdict:
    """May a `trigger_type` trigger reach this customer at `at`?

    The trigger's own delivery, if the profile records it (a decision taken again after
    a write that landed on the profile but not on the entity that marks the episode,
    on a Redis Cluster), is no earlier contact: the same trigger gets the same verdict.
    """
    channels = consented_channels(profile)
    if not channels:
        return Verdict(channels, "no_consent", "no channel is consented to")
    contacts = [c for c in profile.get("contacts", []) if c[1] != trigger_id]
    recent = [c for c in contacts if c[2] > at - settings.contact_cap_window_s]
    if len(recent) >= settings.contact_cap:
        return Verdict(
            channels,
            "contact_cap",
            f"{len(recent)} triggers delivered in the last {settings.contact_cap_window_s:g} s",
        )
    same_type = [c for c in contacts if c[0] == trigger_type and c[2] > at - settings.cooldown_s]
    if same_type:
        return Verdict(channels, "cooldown", f"{trigger_type} {same_type[-1][1]} was delivered")
    if in_control_group(profile["id"], trigger_type, settings.control_group_pct):
        return Verdict(channels, "control_group", f"held back for {settings.control_group_pct:g} %")
    return Verdict(channels)


def in_control_group(customer_id: str, trigger_type: str, pct: float) -> bool:
    """True for a stable `pct` percent of customers, drawn anew for each trigger type.

    A hash rather than a random draw, so the same customer stays in (or out of) the
    group across triggers, restarts and replays.
    """
    digest = hashlib.sha256(f"{trigger_type}\x00{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100 < pct


def record(
    profile: State, trigger_type: str, trigger_id: str, at: float, settings: Settings
) -> None:
    """Remember a delivered trigger; recording the same `trigger_id` again changes nothing.

    Entries older than any rule looks back (cap window, cooldown) are dropped.
    """
    contacts: list[list[Any]] = profile.get("contacts", [])
    if any(c[1] == trigger_id for c in contacts):
        return
    contacts = sorted([*contacts, [trigger_type, trigger_id, at]], key=lambda c: (c[2], c[1]))
    horizon = contacts[-1][2] - max(settings.contact_cap_window_s, settings.cooldown_s)
    profile["contacts"] = [c for c in contacts if c[2] > horizon]

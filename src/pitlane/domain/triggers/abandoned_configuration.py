"""Abandoned configuration: an engaged configurator session the customer walked away from.

The contract's rule: an identified customer with an engaged session (enough option
selections, or a saved configuration) and neither configurator activity nor a
conversion for the abandonment window after their last activity. One reminder per
session (the episode), about the customer's most recent engaged session only: an
older session they moved on from is superseded, not reminded about as well.

Anonymous profiles never fire (there is no one to reach); their sessions count once
identification has merged them into the customer. Everything is read from the profile
as it is at `now`, so a conversion or new activity that arrived after a deadline was
armed still cancels or postpones the trigger.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pitlane.domain import decay
from pitlane.domain.apply import DAY_S
from pitlane.domain.outputs import AbandonedConfigurationContext
from pitlane.domain.profile import State
from pitlane.domain.triggers import Firing, event_ids, utc
from pitlane.domain.view import selected_options
from pitlane.settings import Settings

TYPE = "abandoned_configuration"


@dataclass(frozen=True, slots=True)
class Pending:
    """The session a reminder is pending for, and when it fires if nothing changes."""

    session_id: str
    deadline: float


def pending(profile: State, settings: Settings) -> Pending | None:
    """The episode that fires at its deadline unless something changes, else None.

    The deadline runs from the customer's last configurator activity in any session
    (`profile["last"]`): someone still clicking around has not abandoned anything yet.
    """
    if profile["kind"] != "customer" or profile["last"] is None:
        return None
    sessions: dict[str, dict[str, Any]] = profile["sessions"]
    engaged = [
        (session["last"], session_id)
        for session_id, session in sessions.items()
        if session["n"] >= settings.engaged_min_options or session["cfg"] is not None
    ]
    if not engaged:
        return None
    _, session_id = max(engaged)
    session = sessions[session_id]
    if session.get("fired") is not None or _converted(profile, session):
        return None
    return Pending(session_id, profile["last"] + settings.abandonment_window_s)


def _converted(profile: State, session: dict[str, Any]) -> bool:
    """True when a quote, test drive or order at or after the session's start cancels it.

    Profiles keep the latest time of each kind of conversion, which is all this needs.
    """
    times = [session["quote"], *profile["conv"].values()]
    return any(at is not None and at >= session["started"] for at in times)


def next_check(profile: State, settings: Settings) -> float | None:
    """When to look at the profile again if nothing happens: the pending deadline."""
    found = pending(profile, settings)
    return None if found is None else found.deadline


def evaluate(profile: State, now: float, settings: Settings) -> Firing | None:
    """The reminder due at `now`, or None (nothing engaged, converted, fired, or too early)."""
    found = pending(profile, settings)
    if found is None or now < found.deadline:
        return None
    session = profile["sessions"][found.session_id]
    return Firing(
        type=TYPE,
        subject=profile["id"],
        episode=found.session_id,
        context=_context(profile, found.session_id, session, now, settings),
        caused_by=event_ids(session.get("eids", [])),
        due_at=found.deadline,
    )


def mark_fired(profile: State, session_id: str, trigger_id: str) -> None:
    """Close the session's episode: it never fires again, whatever happens to it."""
    profile["sessions"][session_id]["fired"] = trigger_id


def _context(
    profile: State, session_id: str, session: dict[str, Any], now: float, settings: Settings
) -> dict[str, Any]:
    saved = session["cfg"] or {}
    preferred = profile["attrs"].get("preferred_dealer_id")
    context = AbandonedConfigurationContext.model_validate(
        {
            "session_id": session_id,
            "configuration_id": saved.get("id"),
            "model_code": session["model"],
            "options": selected_options(session),
            "total_price": saved.get("price"),
            "currency": saved.get("cur"),
            "top_interest_category": top_interest(profile, now, settings),
            "dealer_id": session["dealer"] or (preferred[0] if preferred else None),
            "last_activity_at": utc(session["last"]),
        }
    )
    return context.model_dump(mode="json")


def top_interest(profile: State, now: float, settings: Settings) -> str | None:
    """The category with the highest decayed interest at `now` (ties: alphabetical)."""
    half_life = settings.interest_half_life_days * DAY_S
    scores = [
        (-decay.value_at(score, now, half_life), category)
        for category, score in profile["interest"].items()
    ]
    return min(scores)[1] if scores else None

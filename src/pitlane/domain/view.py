"""The 360-degree view a dealer asks for: one customer, readable, in one document.

Built from stored state alone (profile and the vehicles it owns), at a time the caller
passes in, so the same state always gives the same view.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pitlane.domain import decay
from pitlane.domain.apply import DAY_S
from pitlane.domain.profile import State
from pitlane.settings import Settings


def iso(epoch_s: float | None) -> str | None:
    """An epoch time as RFC 3339 UTC text."""
    if epoch_s is None:
        return None
    return datetime.fromtimestamp(epoch_s, UTC).isoformat().replace("+00:00", "Z")


def customer_view(
    profile: State, vehicles: dict[str, State | None], now: datetime, settings: Settings
) -> dict[str, Any]:
    """The dealer's view of `profile`; `vehicles` are the states of its VINs."""
    at = now.timestamp()
    half_life = settings.interest_half_life_days * DAY_S
    interests = {
        category: round(decay.value_at(score, at, half_life), 3)
        for category, score in profile["interest"].items()
    }
    sessions = sorted(profile["sessions"].items(), key=lambda item: -item[1]["last"])
    return {
        "customer_id": profile["id"],
        "anonymous_ids": list(profile["anon_ids"]),
        "attributes": {name: value[0] for name, value in sorted(profile["attrs"].items())},
        "consent": {
            channel: {"granted": value[0], "updated_at": iso(value[1])}
            for channel, value in sorted(profile["consent"].items())
        },
        "interests": dict(sorted(interests.items(), key=lambda item: (-item[1], item[0]))),
        "last_configuration": _saved(profile["saved"]),
        "sessions": [_session(session_id, s) for session_id, s in sessions],
        "conversions": {kind: iso(at) for kind, at in sorted(profile["conv"].items())},
        "open_bookings": [
            {"booking_id": booking_id, **booking, "at": iso(booking["at"])}
            for booking_id, booking in sorted(profile["bookings"].items())
        ],
        "vehicles": [
            _vehicle(vin, vehicles.get(vin), since)
            for vin, since in sorted(profile["vehicles"].items())
        ],
        "first_seen_at": iso(profile["first"]),
        "last_activity_at": iso(profile["last"]),
    }


def _saved(saved: dict[str, Any] | None) -> dict[str, Any] | None:
    if saved is None:
        return None
    return {
        "configuration_id": saved["id"],
        "session_id": saved["session"],
        "model_code": saved["model"],
        "options": saved["options"],
        "total_price": saved["price"],
        "currency": saved["cur"],
        "dealer_id": saved["dealer"],
        "saved_at": iso(saved["v"][0]),
    }


def selected_options(session: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """A session's chosen options grouped by category, in a stable order."""
    return {
        category: [
            {"code": code, "label": entry["label"], "price_delta": entry["price"]}
            for code, entry in sorted(chosen.items())
        ]
        for category, chosen in sorted(session["opts"].items())
    }


def _session(session_id: str, session: dict[str, Any]) -> dict[str, Any]:
    return {
        "session_id": session_id,
        "model_code": session["model"],
        "dealer_id": session["dealer"],
        "market": session.get("market"),
        "option_selections": session["n"],
        "options": selected_options(session),
        "configuration": _saved(session["cfg"]),
        "quote_requested_at": iso(session["quote"]),
        "started_at": iso(session["started"]),
        "last_activity_at": iso(session["last"]),
    }


def _vehicle(vin: str, car: State | None, since: float) -> dict[str, Any]:
    if car is None:
        return {"vin": vin, "owner_since": iso(since)}
    service = car["service"]
    return {
        "vin": vin,
        "model_code": car["model"],
        "owner_since": iso(since),
        "registered_on": car["registered_on"],
        "service_plan": car["plan"],
        "odometer_km": car["odo"],
        "odometer_at": iso(car["odo_at"]),
        "daily_km": None if car["rate"] is None else round(car["rate"], 1),
        "last_service": None
        if service is None
        else {
            "odometer_km": service["km"],
            "at": iso(service["at"]),
            "dealer_id": service["dealer"],
        },
        "service_indicator": car["ind"],
        "trouble_codes": car["dtc"],
        "open_service_booking": None
        if car["booking"] is None
        else {
            "booking_id": car["booking"]["id"],
            "at": iso(car["booking"]["at"]),
            "dealer_id": car["booking"]["dealer"],
        },
    }

"""How pitlane shows things to a person in a terminal (rich renderables)."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text


def profile_panel(view: dict[str, Any]) -> Panel:
    """One customer's 360-degree view as a panel a dealer can read at a glance."""
    parts: list[RenderableType] = []
    attrs = view["attributes"]
    who = ", ".join(f"{k}={v}" for k, v in attrs.items()) or "no attributes yet"
    parts.append(Text(who, style="dim"))
    if view["anonymous_ids"]:
        parts.append(Text("stitched visitor ids: " + ", ".join(view["anonymous_ids"])))
    consent = ", ".join(
        f"{ch}:{'yes' if c['granted'] else 'no'}" for ch, c in view["consent"].items()
    )
    parts.append(Text(f"consent: {consent or 'none recorded'}"))
    if view["interests"]:
        top = ", ".join(f"{k} {v:.2f}" for k, v in list(view["interests"].items())[:4])
        parts.append(Text(f"interests: {top}"))
    saved = view["last_configuration"]
    if saved:
        parts.append(
            Text(
                f"last configuration: {saved['model_code']} {saved['configuration_id']} "
                f"{saved['total_price']:,.0f} {saved['currency']} "
                f"({len(saved['options'])} options)",
                style="bold",
            )
        )
    if view["sessions"]:
        sessions = Table("session", "model", "picks", "options by category", "last activity")
        for s in view["sessions"][:3]:
            options = "; ".join(
                f"{cat}: " + ", ".join(o["label"] or o["code"] for o in opts)
                for cat, opts in s["options"].items()
            )
            sessions.add_row(
                s["session_id"],
                s["model_code"] or "?",
                str(s["option_selections"]),
                options or "-",
                s["last_activity_at"],
            )
        parts.append(sessions)
    if view["conversions"]:
        parts.append(
            Text("conversions: " + ", ".join(f"{k} {v}" for k, v in view["conversions"].items()))
        )
    if view["open_bookings"]:
        parts.append(
            Text(
                "open bookings: "
                + ", ".join(
                    f"{b['booking_id']} ({b['kind']}, {b['at']})" for b in view["open_bookings"]
                )
            )
        )
    if view["vehicles"]:
        cars = Table("vin", "model", "odometer km", "km/day", "last service", "codes")
        for car in view["vehicles"]:
            service = car.get("last_service")
            cars.add_row(
                car["vin"],
                car.get("model_code") or "?",
                _number(car.get("odometer_km")),
                _number(car.get("daily_km")),
                f"{service['odometer_km']:,.0f} km" if service else "-",
                ", ".join(car.get("trouble_codes") or []) or "-",
            )
        parts.append(cars)
    return Panel(Group(*parts), title=f"customer {view['customer_id']}", expand=False)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def counters_table(title: str, counts: dict[str, int]) -> Table:
    """A two-column table of named counts, largest first."""
    table = Table(title=title)
    table.add_column("what")
    table.add_column("count", justify="right")
    for name, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        table.add_row(name, f"{count:,}")
    return table

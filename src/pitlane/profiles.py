"""Customer look-up for dealers: the 360-degree view straight from Redis."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pitlane.adapters.redis_store import RedisStore
from pitlane.domain import entities
from pitlane.domain.view import customer_view
from pitlane.settings import Settings


async def lookup_customer(
    store: RedisStore, customer_id: str, now: datetime, settings: Settings
) -> dict[str, Any] | None:
    """The customer's view, or None for an id pitlane holds nothing about."""
    loaded = await store.load([entities.customer(customer_id)])
    profile = loaded[entities.customer(customer_id)].state
    if profile is None:
        return None
    vins = sorted(profile["vehicles"])
    cars = await store.load([entities.vehicle(vin) for vin in vins])
    vehicles = {vin: cars[entities.vehicle(vin)].state for vin in vins}
    return customer_view(profile, vehicles, now, settings)

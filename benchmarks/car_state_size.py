"""What a connected car's state takes in Redis once it has reported for a while.

`pitlane bench` measures entities after one simulated hour, in which a car reports two
or three times; a car that reports every minute keeps growing until its remembered
event ids are full (`PITLANE_DEDUPE_IDS`, 32), and docs/scaling.md sizes Redis with
that steady state.

    python benchmarks/car_state_size.py [--minutes 1440] [--copies 10000]

Applies a link and one reading a minute to one car with the domain code, every offset
committed, stores the resulting state `--copies` times in the embedded stack's Redis
(the first redis-server on the PATH), and prints one JSON object: the stored value's
bytes, `MEMORY USAGE` of one key, and `used_memory` growth per key.
"""

from __future__ import annotations

import argparse
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import redis

from pitlane.adapters.redis_store import encode, redis_key
from pitlane.domain.apply import apply
from pitlane.domain.dedupe import settle
from pitlane.domain.entities import EntityKey, vehicle
from pitlane.domain.events import decode_event
from pitlane.domain.profile import State
from pitlane.domain.routing import keys_for
from pitlane.settings import Settings
from pitlane.stack.embedded import EmbeddedStack

VIN = "WVWZZZE1ZPP000001"
START = datetime(2026, 11, 1, tzinfo=UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=1_440, help="readings, one a minute")
    parser.add_argument("--copies", type=int, default=10_000, help="keys stored to measure")
    args = parser.parse_args()
    state = car_after(args.minutes, Settings())
    value = encode(1, state)
    with EmbeddedStack() as stack:
        client = redis.Redis.from_url(stack.redis_url)
        before = int(client.info("memory")["used_memory"])
        with client.pipeline(transaction=False) as pipe:
            for index in range(args.copies):
                pipe.set(redis_key(vehicle(f"{VIN[:11]}{index:06d}")), value)
            pipe.execute()
        grown = int(client.info("memory")["used_memory"]) - before
        usage = client.memory_usage(redis_key(vehicle(f"{VIN[:11]}{0:06d}")))
        server = client.info("server")["redis_version"]
    print(
        json.dumps(
            {
                "readings": args.minutes,
                "remembered_event_ids": len(state["seen"]),
                "value_bytes": len(value),
                "memory_usage_bytes": usage,
                "used_memory_per_key": round(grown / args.copies),
                "redis_version": server,
            }
        )
    )


def car_after(minutes: int, settings: Settings) -> State:
    """The car's state after its owner linked it and it reported once a minute."""
    states: dict[EntityKey, State | None] = {}
    salt = settings.erasure_salt.get_secret_value()
    link = {
        "type": "identity.vehicle_linked",
        "customer_id": "C0000001",
        "vin": VIN,
        "model_code": "ID4-PRO",
        "first_registered_on": "2024-03-01",
        "market": "DE",
    }
    _apply(link, "identity.events", START, 0, states, settings, salt)
    odometer_km = 12_000.0
    for minute in range(1, minutes + 1):
        odometer_km += 0.8
        reading = {
            "type": "telematics.reading",
            "vin": VIN,
            "odometer_km": round(odometer_km, 1),
            "service_remaining_km": round(15_000 - (odometer_km - 12_000), 1),
            "oil_life_pct": 80.0,
            "battery_soh_pct": 97.0,
            "dtc_codes": [],
        }
        at = START + timedelta(minutes=minute)
        _apply(reading, "telematics.events", at, minute, states, settings, salt)
    car = states[vehicle(VIN)]
    assert car is not None
    settle(car, {"identity.events:0": 1, "telematics.events:0": minutes + 1})
    return car


def _apply(
    body: dict[str, Any],
    topic: str,
    at: datetime,
    offset: int,
    states: dict[EntityKey, State | None],
    settings: Settings,
    salt: str,
) -> None:
    raw = orjson.dumps({**body, "event_id": str(uuid.uuid4()), "occurred_at": at.isoformat()})
    event = decode_event(raw, topic)
    # Unknown entities are new: route until every key the event names is present.
    while missing := [k for k in keys_for(event, states, salt) if k not in states]:
        states.update(dict.fromkeys(missing))
    apply(event, states, settings, (f"{topic}:0", offset))


if __name__ == "__main__":
    main()

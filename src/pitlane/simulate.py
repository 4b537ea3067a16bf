"""Upstream producer simulator: believable, reproducible input traffic for pitlane.

Demos, benchmarks and integration tests need the traffic the car maker's systems
would send: configurator visitors who browse anonymously and log in later, customers
who save a configuration and walk away or book a test drive, connected cars whose
odometers creep towards their next service, workshops that book and complete
services, consent changes, resales, erasures, and the noise real producers add
(junk identifiers, redelivered messages, malformed bytes).

`generate` is pure: the same `Scenario` gives byte-identical messages, because every
random choice comes from one `random.Random(seed)` and every event time is an offset
from `Scenario.start` (the clock is never read). `publish` and `record` are the
only parts that do I/O: `publish` sends whatever `generate` produced to Kafka,
`record` writes its events to a JSONL file that `pitlane replay` publishes later.
"""

from __future__ import annotations

import os
import random
import time
from bisect import bisect
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import accumulate
from pathlib import Path
from typing import Final, Generic, Literal, TypeVar, get_args

import orjson
from kafka import KafkaProducer

from pitlane.domain.events import (
    EVENT_TYPES,
    INPUT_TOPIC_OF_TYPE,
    Channel,
    OptionCategory,
    event_fields,
)

__all__ = [
    "MalformedKind",
    "PublishFailed",
    "PublishReport",
    "RecordReport",
    "Scenario",
    "SimulatedMessage",
    "generate",
    "publish",
    "record",
]

_T = TypeVar("_T")
_Json = dict[str, object]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND_MS: Final = 1_000
_MINUTE_MS: Final = 60 * _SECOND_MS
_HOUR_MS: Final = 60 * _MINUTE_MS
_DAY_MS: Final = 24 * _HOUR_MS
_DAYS_PER_MONTH: Final = 30.44

# How often each behaviour occurs. Chosen so that a few hundred customers already show
# every path the rules care about, while the bulk stays ordinary traffic.
_SESSIONS_PER_CUSTOMER: Final = ((0, 45), (1, 43), (2, 12))  # (sessions, weight)
_OPTIONS_PER_SESSION: Final = tuple(enumerate((10, 9, 9, 14, 15, 14, 12, 9, 8)))
_ANONYMOUS_FIRST: Final = 0.6  # of customers with sessions: browse before logging in
_LOGIN_PLANS: Final = (("in_session", 55), ("later", 25), ("never", 20))
_CONVERSION_IF_SAVED: Final = 0.45
_CONVERSION_IF_NOT_SAVED: Final = 0.07
_PROFILE_SHARE: Final = 0.8  # customers whose CRM sends a profile
_CONSENT_SHARE: Final[dict[Channel, float]] = {
    "email": 0.9,
    "sms": 0.35,
    "push": 0.5,
    "dealer_call": 0.3,
}
_CONSENT_GRANTED: Final = 0.9
_CONSENT_REVOKED_LATER: Final = 0.06
_JUNK_LOGIN: Final = 0.015
_SHARED_DEVICE_LOGIN: Final = 0.005
_ERASED: Final = 0.003  # exact share, so that every few hundred customers have one
_RESOLD: Final = 0.03
_FIRST_CYCLE: Final = 0.35  # cars never serviced yet
_NEAR_DUE: Final = 0.2  # cars close to their service by the plan
_DUE_BY_TIME: Final = 0.4  # of near-due cars in their first cycle: due by age, not distance
_BOOKS_SERVICE_WHEN_DUE: Final = 0.55
_BOOKS_SERVICE_OTHERWISE: Final = 0.04
_REPORTS_SERVICE_INDICATOR: Final = 0.7
_DUPLICATED: Final = 0.003

_JUNK_ANONYMOUS_IDS: Final = (
    "null",
    "0",
    "anonymous",
    "-1",
    "undefined",
    "00000000-0000-0000-0000-000000000000",
)
_DTC_CODES: Final = ("P0420", "P0171", "P0300", "P0128", "P0442", "P0455", "U0100", "C1234")

MalformedKind = Literal[
    "invalid_json",
    "json_array",
    "unknown_type",
    "missing_field",
    "naive_timestamp",
    "wrong_category",
    "wrong_topic",
]
_MALFORMED_KINDS: Final[tuple[MalformedKind, ...]] = get_args(MalformedKind)


@dataclass(frozen=True, slots=True)
class _Model:
    code: str
    base_price: int
    electric: bool
    wmi: str  # VIN positions 1-3: manufacturer
    descriptor: str  # VIN positions 4-8: model line
    weight: int  # share of configurator sessions and fleet


@dataclass(frozen=True, slots=True)
class _Option:
    code: str
    label: str
    price_delta: int


@dataclass(frozen=True, slots=True)
class _Market:
    code: str
    time_zone: str
    language: str
    cities: tuple[str, ...]
    weight: int
    dealers: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        dealers = tuple(
            f"{self.code}-{city[:3].upper()}-{n:02d}" for city in self.cities for n in (1, 2)
        )
        object.__setattr__(self, "dealers", dealers)


_MODELS: Final = (
    _Model("ID4-PRO", 46_990, True, "WVG", "ZZZE2", 16),
    _Model("GOLF-GTI", 44_250, False, "WVW", "ZZZCD", 18),
    _Model("TAYCAN-4S", 118_500, True, "WP0", "ZZZY1", 4),
    _Model("MODEL-Y-LR", 49_990, True, "XP7", "YGCEL", 15),
    _Model("I4-EDRIVE40", 61_600, True, "WBY", "71AW0", 8),
    _Model("XC60-B5", 57_750, False, "YV1", "UZK1V", 10),
    _Model("CLIO-TCE90", 19_990, False, "VF1", "RJA00", 14),
    _Model("OCTAVIA-RS", 45_400, False, "TMB", "AG7NX", 15),
)

_EXCLUSIVE: Final[frozenset[OptionCategory]] = frozenset(
    {"color", "wheels", "engine", "trim", "interior"}
)
"""Categories where a new pick replaces the previous one (one paint, one set of wheels)."""

_OPTIONS: Final[dict[OptionCategory, tuple[_Option, ...]]] = {  # engines: _ENGINES
    "color": (
        _Option("PAINT-WHITE", "Glacier White", 0),
        _Option("PAINT-BLACK", "Deep Black Pearl", 850),
        _Option("PAINT-BLUE", "Lapis Blue Metallic", 950),
        _Option("PAINT-RED", "Kings Red Metallic", 950),
        _Option("PAINT-GREY", "Moonstone Grey", 750),
    ),
    "wheels": (
        _Option("WHL-18-AERO", "18-inch aero wheels", 0),
        _Option("WHL-19-SPORT", "19-inch sport alloys", 1_200),
        _Option("WHL-20-DIAMOND", "20-inch diamond-cut alloys", 2_100),
        _Option("WHL-21-FORGED", "21-inch forged wheels", 3_900),
    ),
    "trim": (
        _Option("TRIM-LIFE", "Life", 0),
        _Option("TRIM-STYLE", "Style", 3_100),
        _Option("TRIM-SPORT", "Sport Line", 4_200),
        _Option("TRIM-EXCL", "Exclusive", 6_800),
    ),
    "interior": (
        _Option("INT-CLOTH", "Cloth seats", 0),
        _Option("INT-VEGAN", "Vegan leather", 1_450),
        _Option("INT-NAPPA", "Nappa leather", 2_900),
        _Option("INT-WOOD", "Open-pore wood inlays", 650),
    ),
    "package": (
        _Option("PKG-WINTER", "Winter package", 890),
        _Option("PKG-TECH", "Technology package", 2_400),
        _Option("PKG-DRIVER", "Driver assistance package", 1_950),
        _Option("PKG-TOW", "Towing package", 1_100),
    ),
    "accessory": (
        _Option("ACC-ROOFBOX", "Roof box 460 l", 690),
        _Option("ACC-BIKE", "Rear bike carrier", 790),
        _Option("ACC-MATS", "All-weather floor mats", 140),
        _Option("ACC-CHARGER", "11 kW home charger", 990),
    ),
    "safety": (
        _Option("SAF-HUD", "Head-up display", 980),
        _Option("SAF-360", "360-degree camera", 750),
        _Option("SAF-NIGHT", "Night vision assist", 2_200),
        _Option("SAF-MATRIX", "Matrix LED headlights", 1_350),
    ),
    "comfort": (
        _Option("COM-HEATSEAT", "Heated front seats", 450),
        _Option("COM-MASSAGE", "Massage seats", 1_250),
        _Option("COM-AIRSUS", "Adaptive air suspension", 2_300),
        _Option("COM-PANO", "Panoramic glass roof", 1_400),
        _Option("COM-KEYLESS", "Keyless entry", 420),
    ),
    "other": (
        _Option("OTH-WARRANTY5", "Extended warranty, 5 years", 1_190),
        _Option("OTH-SERVICEPLAN", "Prepaid service plan", 890),
        _Option("OTH-PICKUP", "Factory pick-up", 590),
    ),
}
_ENGINES: Final[dict[bool, tuple[_Option, ...]]] = {
    True: (
        _Option("EV-STD", "Standard range battery", 0),
        _Option("EV-LR", "Long range battery", 5_500),
        _Option("EV-AWD", "Dual-motor all-wheel drive", 4_200),
    ),
    False: (
        _Option("ENG-1.5-PETROL", "1.5 petrol, 150 hp", 0),
        _Option("ENG-2.0-PETROL", "2.0 petrol, 245 hp", 3_200),
        _Option("ENG-2.0-DIESEL", "2.0 diesel, 150 hp", 2_400),
        _Option("ENG-PHEV", "Plug-in hybrid, 204 hp", 5_900),
    ),
}
_CATEGORY_WEIGHTS: Final[dict[OptionCategory, int]] = {
    "color": 20,
    "wheels": 16,
    "engine": 9,
    "trim": 10,
    "interior": 10,
    "package": 11,
    "accessory": 7,
    "safety": 8,
    "comfort": 7,
    "other": 2,
}

_MARKETS: Final = (
    _Market("DE", "Europe/Berlin", "de", ("Berlin", "Munich", "Hamburg", "Cologne"), 30),
    _Market("FR", "Europe/Paris", "fr", ("Paris", "Lyon", "Marseille"), 15),
    _Market("GB", "Europe/London", "en", ("London", "Manchester", "Birmingham"), 14),
    _Market("IT", "Europe/Rome", "it", ("Milan", "Rome", "Turin"), 11),
    _Market("ES", "Europe/Madrid", "es", ("Madrid", "Barcelona", "Valencia"), 10),
    _Market("NL", "Europe/Amsterdam", "nl", ("Amsterdam", "Rotterdam", "Utrecht"), 8),
    _Market("SE", "Europe/Stockholm", "sv", ("Stockholm", "Gothenburg", "Malmo"), 6),
    _Market("AT", "Europe/Vienna", "de-AT", ("Vienna", "Graz", "Linz"), 6),
)

_SERVICE_ITEMS: Final[dict[bool, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    # electric -> (always, sometimes)
    True: (("inspection", "hv_battery_check"), ("cabin_filter", "brake_fluid", "software_update")),
    False: (("oil_change", "inspection"), ("brake_fluid", "cabin_filter", "spark_plugs", "wipers")),
}

_VIN_CHARS: Final = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"  # no I, O or Q
_VIN_VALUES: Final = dict(
    zip("ABCDEFGHJKLMNPRSTUVWXYZ", (*range(1, 9), *range(1, 6), 7, 9, *range(2, 10)), strict=True)
) | {str(d): d for d in range(10)}
_VIN_WEIGHTS: Final = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
_VIN_YEARS: Final = "ABCDEFGHJKLMNPRSTVWXY"  # model-year codes for 2010..2030


@dataclass(frozen=True)
class Scenario:
    """What to simulate; equal scenarios produce byte-identical message streams.

    `start` is the event-time origin and every `occurred_at` lies in
    `[start, start + span]`; appointment times (`scheduled_at`) may lie beyond.
    `vehicles` defaults to 40 % of `customers`. The topic names default to the
    contract's; `pitlane.domain.events.decode_event` only accepts events on those.
    """

    customers: int
    start: datetime
    vehicles: int | None = None
    seed: int = 0
    span: timedelta = timedelta(hours=1)
    malformed_ratio: float = 0.002
    configurator_topic: str = "configurator.events"
    booking_topic: str = "booking.events"
    telematics_topic: str = "telematics.events"
    identity_topic: str = "identity.events"

    def __post_init__(self) -> None:
        if self.customers < 0 or (self.vehicles is not None and self.vehicles < 0):
            raise ValueError("customers and vehicles must not be negative")
        if self.fleet_size and not self.customers:
            raise ValueError("vehicles need customers to own them")
        if self.start.tzinfo is None or self.start.utcoffset() is None:
            raise ValueError(f"start must be timezone-aware, got {self.start!r}")
        if self.span <= timedelta(0):
            raise ValueError(f"span must be positive, got {self.span}")
        if not 0 <= self.malformed_ratio < 1:
            raise ValueError(f"malformed_ratio must be in [0, 1), got {self.malformed_ratio}")

    @property
    def fleet_size(self) -> int:
        """Number of connected vehicles: `vehicles`, else 40 % of `customers`."""
        return int(self.customers * 0.4) if self.vehicles is None else self.vehicles

    @property
    def input_topics(self) -> tuple[str, str, str, str]:
        """The four input topics, in contract order."""
        return (
            self.configurator_topic,
            self.booking_topic,
            self.telematics_topic,
            self.identity_topic,
        )


@dataclass(frozen=True, slots=True)
class SimulatedMessage:
    """One Kafka record as an upstream producer would send it.

    `malformed` marks the records made to be rejected to the dead-letter topic, so a
    caller can count what the pipeline should accept without decoding.
    """

    topic: str
    key: bytes | None
    value: bytes
    malformed: bool = False


@dataclass(frozen=True)
class PublishReport:
    """What `publish` handed to Kafka and had acknowledged."""

    total: int
    per_topic: dict[str, int]
    malformed: int


@dataclass(frozen=True)
class RecordReport:
    """What `record` wrote, and how many malformed messages it left out."""

    written: int
    per_topic: dict[str, int]
    left_out: int


class PublishFailed(RuntimeError):
    """Kafka did not acknowledge some messages; the run is incomplete."""


def generate(scenario: Scenario) -> Iterator[SimulatedMessage]:
    """Yield the scenario's messages in event-time order.

    Events of one key (customer, anonymous visitor or vehicle) come with
    non-decreasing `occurred_at`; a duplicate follows its original. The whole run is
    built before the first message is yielded (about half a kilobyte per message),
    because a global time order needs every story.
    """
    for _, topic, key, value, malformed in _Generator(scenario).run():
        yield SimulatedMessage(topic, key, value, malformed)


_PROGRESS_EVERY: Final = 1_000


def publish(
    bootstrap_servers: list[str],
    messages: Iterable[SimulatedMessage],
    on_sent: Callable[[int], None] | None = None,
    pace: float | None = None,
) -> PublishReport:
    """Send `messages` to Kafka in order and wait until every one is acknowledged.

    `on_sent(n)` is called with the number of messages sent since its last call, every
    thousand messages and once more after the final flush, so a progress bar reaches
    its end only when Kafka has acknowledged everything. `pace` caps the rate
    in messages per second (None: as fast as the broker takes them). Raises
    `PublishFailed` if any send failed; the producer is closed in every case.
    """
    if pace is not None and pace <= 0:
        raise ValueError(f"pace must be positive, got {pace}")
    per_topic: Counter[str] = Counter()
    malformed = 0
    failures: list[BaseException] = []
    producer = KafkaProducer(
        bootstrap_servers=bootstrap_servers,
        acks="all",
        linger_ms=5,
        batch_size=512 * 1024,
        compression_type=None,
    )
    try:
        started = time.monotonic()
        sent = unreported = 0
        for message in messages:
            future = producer.send(message.topic, key=message.key, value=message.value)
            future.add_errback(failures.append)
            per_topic[message.topic] += 1
            malformed += message.malformed
            sent += 1
            unreported += 1
            if on_sent is not None and unreported == _PROGRESS_EVERY:
                on_sent(unreported)
                unreported = 0
            if pace is not None:
                ahead = started + sent / pace - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        producer.flush()
        if failures:
            raise PublishFailed(
                f"{len(failures)} of {sent} messages failed; first: {failures[0]!r}"
            )
        if on_sent is not None and unreported:
            on_sent(unreported)
    finally:
        producer.close()
    return PublishReport(total=sent, per_topic=dict(per_topic), malformed=malformed)


_CONTRACT_TOPICS: Final = frozenset(INPUT_TOPIC_OF_TYPE.values())


def record(messages: Iterable[SimulatedMessage], path: Path) -> RecordReport:
    """Write the events of `messages` to `path` for `pitlane replay`, one per line, in order.

    Each line is exactly the bytes of a message's value. A JSONL line carries no topic
    or key: a replay takes the topic from the event's type and the key from its ids,
    which gives back the message's own topic and key, because the simulator keys and
    routes by the contract. A replay of the file therefore publishes the same messages,
    in the same order, as `publish` would have, except the malformed ones: those are
    left out and counted, because no line could carry them as they were (a replay
    rejects bytes that are not an event of a known type and would send an event made
    to arrive on the wrong topic to its right one). The valid messages do not depend on
    `Scenario.malformed_ratio`, so the file is also what a run without malformed
    messages publishes.

    Raises ValueError, writing nothing, for a message on a topic other than the
    contract's input topics (a scenario with its own topic names), which a replay
    would send elsewhere. The file is written in full or not at all: a partial
    recording never takes its place.
    """
    per_topic: Counter[str] = Counter()
    left_out = 0
    partial = path.with_name(f"{path.name}.partial")
    try:
        with partial.open("wb") as handle:
            for message in messages:
                if message.malformed:
                    left_out += 1
                    continue
                if message.topic not in _CONTRACT_TOPICS:
                    raise ValueError(
                        f"cannot record a message on topic {message.topic!r}: a replay "
                        f"sends events to the contract's topics only"
                    )
                handle.write(message.value)
                handle.write(b"\n")
                per_topic[message.topic] += 1
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return RecordReport(
        written=sum(per_topic.values()), per_topic=dict(per_topic), left_out=left_out
    )


def _customer_id(index: int) -> str:
    return f"C{index:07d}"


@lru_cache(maxsize=65_536)
def _second_text(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.")


def _vin(model: _Model, year: int, index: int) -> str:
    """A 17-character VIN with a valid check digit, unique per `index` below 33 million."""
    plant = _VIN_CHARS[(index // 1_000_000) % len(_VIN_CHARS)]
    year_code = _VIN_YEARS[min(max(year - 2010, 0), len(_VIN_YEARS) - 1)]
    body = f"{model.wmi}{model.descriptor}0{year_code}{plant}{index % 1_000_000:06d}"
    total = sum(_VIN_VALUES[c] * w for c, w in zip(body, _VIN_WEIGHTS, strict=True)) % 11
    return f"{body[:8]}{'X' if total == 10 else total}{body[9:]}"


@dataclass(slots=True)
class _Visitor:
    """Who a configurator session is attributed to; login fills in `customer_id`."""

    customer_id: str | None
    anonymous_id: str | None


@dataclass(slots=True)
class _Session:
    """What a finished configurator session left behind, for its conversions."""

    model: _Model
    session_id: str
    dealer_id: str | None
    configuration_id: str | None
    ended_at: int
    logged_in_at: int | None


class _Rng(random.Random):
    """`random.Random` that also draws the ids, so they too follow from the seed alone."""

    def uuid4(self) -> str:
        """A random (version 4) UUID drawn from this generator, never from the OS."""
        bits = self.getrandbits(128) & _UUID_RANDOM_BITS | _UUID_V4_BITS
        h = f"{bits:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def token(self, prefix: str) -> str:
        """A short random id such as `cfg-3f2a9c0d11b84e57`."""
        return f"{prefix}-{self.getrandbits(64):016x}"


_UUID_V4_BITS: Final = (0x4 << 76) | (0x2 << 62)  # version 4, RFC 4122 variant
_UUID_RANDOM_BITS: Final = ((1 << 128) - 1) ^ (0xF << 76) ^ (0x3 << 62)


class _Picker(Generic[_T]):
    """A weighted choice whose cumulative weights are summed once, not on every pick."""

    __slots__ = ("_cum", "_items", "_total")

    def __init__(self, pairs: Sequence[tuple[_T, float]]) -> None:
        self._items = [item for item, _ in pairs]
        self._cum = list(accumulate(weight for _, weight in pairs))
        self._total = self._cum[-1]

    def __call__(self, rng: random.Random) -> _T:
        return self._items[bisect(self._cum, rng.random() * self._total)]


_PICK_MODEL: Final = _Picker([(m, m.weight) for m in _MODELS])
_PICK_MARKET: Final = _Picker([(m, m.weight) for m in _MARKETS])
_PICK_CATEGORY: Final = _Picker(list(_CATEGORY_WEIGHTS.items()))
_PICK_SESSIONS: Final = _Picker(_SESSIONS_PER_CUSTOMER)
_PICK_OPTION_COUNT: Final = _Picker(_OPTIONS_PER_SESSION)
_PICK_LOGIN_PLAN: Final = _Picker(_LOGIN_PLANS)


_Record = tuple[int, str, bytes, bytes, bool]
"""A message on the timeline: time (ms after start), topic, key, value, malformed.

Plain tuples of atoms rather than `SimulatedMessage`s: the garbage collector stops
tracking such tuples, instead of rescanning every message of a large run.
"""


class _Generator:
    """Builds one scenario's timeline; times are milliseconds after `Scenario.start`."""

    def __init__(self, scenario: Scenario) -> None:
        self._s = scenario
        self._rng = _Rng(scenario.seed)
        self._start = scenario.start.astimezone(UTC)
        # Whole milliseconds since the epoch, rounded up so no event precedes `start`.
        millis, rest = divmod(self._start - _EPOCH, timedelta(milliseconds=1))
        self._origin_ms: int = millis + (rest > timedelta(0))
        self._end = max(1, round(scenario.span / timedelta(milliseconds=1)))
        self._timeline: list[_Record] = []
        self._option_events: list[int] = []  # timeline positions, to mutate into bad categories
        erased = self._rng.sample(range(scenario.customers), round(scenario.customers * _ERASED))
        self._erased_last_seen = {_customer_id(i).encode(): 0 for i in sorted(erased)}
        self._markets = [_PICK_MARKET(self._rng) for _ in range(scenario.customers)]
        self._last_login: tuple[str, str] | None = None  # (customer_id, anonymous_id)

    def run(self) -> list[_Record]:
        for index in range(self._s.customers):
            self._customer(index)
        for index in range(self._s.fleet_size):
            self._vehicle(index)
        self._erasures()
        self._duplicates()
        self._malformed()
        self._timeline.sort(key=lambda item: item[0])  # stable: a story keeps its order
        return self._timeline

    # -- helpers --------------------------------------------------------------------

    def _timestamp(self, t: int) -> str:
        seconds, millis = divmod(self._origin_ms + t, 1000)
        return f"{_second_text(seconds)}{millis:03d}Z"

    def _between(self, low: int, high: int) -> int:
        """A time in [low, high], both clamped to the end of the span."""
        low, high = min(low, self._end), min(high, self._end)
        return low if high <= low else self._rng.randint(low, high)

    def _after(self, t: int, low: int, high: int) -> int:
        """`t` plus a gap of `low`..`high` ms, shortened to fit before the end of the span.

        Shortening rather than clamping keeps stories that start late from piling up on
        the very last millisecond.
        """
        high = min(high, self._end - t)
        return t + self._rng.randint(min(low, high), high) if high > 0 else t

    def _slot(self, t: int, min_days: int, max_days: int) -> str:
        """An appointment on a half-hour slot between 08:00 and 17:30 UTC, days after `t`."""
        day = (self._origin_ms + t) // _DAY_MS + self._rng.randint(min_days, max_days)
        minute = 30 * self._rng.randint(16, 35)
        return self._timestamp(day * _DAY_MS + minute * _MINUTE_MS - self._origin_ms)

    def _emit(self, t: int, topic: str, key: str, type_: str, fields: _Json) -> None:
        body: _Json = {
            "event_id": self._rng.uuid4(),
            "type": type_,
            "occurred_at": self._timestamp(t),
        }
        body.update(fields)
        key_bytes = key.encode()
        # orjson over-allocates its output and shrinks it in place; keeping hundreds of
        # thousands of those alive fragments the heap and makes every dump 4x slower.
        # A compact copy lets the next dump reuse the buffer just freed.
        value = bytes(memoryview(orjson.dumps(body)))
        self._timeline.append((t, topic, key_bytes, value, False))
        if key_bytes in self._erased_last_seen:
            self._erased_last_seen[key_bytes] = max(self._erased_last_seen[key_bytes], t)

    def _configurator(self, t: int, visitor: _Visitor, type_: str, fields: _Json) -> None:
        ids: _Json = {}
        if visitor.customer_id is not None:
            ids["customer_id"] = visitor.customer_id
        if visitor.anonymous_id is not None:
            ids["anonymous_id"] = visitor.anonymous_id
        key = visitor.customer_id or visitor.anonymous_id
        assert key is not None, "a configurator visitor has at least one id"
        self._emit(t, self._s.configurator_topic, key, type_, ids | fields)

    def _booking(self, t: int, customer_id: str, type_: str, fields: _Json) -> None:
        self._emit(
            t, self._s.booking_topic, customer_id, type_, {"customer_id": customer_id} | fields
        )

    def _identity(self, t: int, customer_id: str, type_: str, fields: _Json) -> None:
        self._emit(
            t, self._s.identity_topic, customer_id, type_, {"customer_id": customer_id} | fields
        )

    # -- customers ------------------------------------------------------------------

    def _customer(self, index: int) -> None:
        """One customer's story: registration, consent, configurator sessions, conversions.

        Most customers with sessions browse anonymously first. They log in during the
        session (before or after it becomes engaged, as chance puts it), later (so an
        abandoned anonymous session joins the profile afterwards), or never here.
        """
        rng = self._rng
        customer_id = _customer_id(index)
        market = self._markets[index]
        sessions = _PICK_SESSIONS(rng)
        visitor = _Visitor(customer_id=None, anonymous_id=None)
        if sessions and rng.random() < _ANONYMOUS_FIRST:
            visitor.anonymous_id = f"anon-{rng.uuid4()}"
            plan = _PICK_LOGIN_PLAN(rng)
            start = rng.randint(0, self._end * 7 // 10)
            login_as = customer_id if plan == "in_session" else None
            session = self._session(start, visitor, market, login_as)
            self._convert(session, visitor, market)
            registered_at = session.logged_in_at
            if plan == "later":
                registered_at = self._after(session.ended_at, _MINUTE_MS, 6 * _HOUR_MS)
                self._login(registered_at, visitor, customer_id)
            elif plan == "never":  # known from a dealer visit instead
                registered_at = rng.randint(0, self._end)
            assert registered_at is not None, "an in-session login happens in the session"
            self._register(registered_at, customer_id, market)
            t = session.ended_at
            sessions -= 1
        else:
            t = rng.randint(0, self._end // 2)
            self._register(t, customer_id, market)
            visitor.customer_id = customer_id
        for _ in range(sessions):
            session = self._session(self._between(t, self._end), visitor, market, None)
            self._convert(session, visitor, market)
            t = session.ended_at

    def _login(self, t: int, visitor: _Visitor, customer_id: str) -> None:
        assert visitor.anonymous_id is not None, "only an anonymous visitor logs in"
        login: _Json = {"anonymous_id": visitor.anonymous_id}
        self._identity(t, customer_id, "identity.customer_identified", login)
        visitor.customer_id = customer_id
        self._last_login = (customer_id, visitor.anonymous_id)

    def _register(self, t: int, customer_id: str, market: _Market) -> None:
        """Profile and consent as the CRM sends them once a customer is known."""
        rng = self._rng
        if rng.random() < _PROFILE_SHARE:
            profile: _Json = {
                "market": market.code,
                "time_zone": market.time_zone,
                "city": rng.choice(market.cities),
                "language": market.language,
            }
            if rng.random() < 0.6:
                profile["preferred_dealer_id"] = rng.choice(market.dealers)
            if rng.random() < 0.4:
                birth = rng.randint(1950, 2004)
                profile["birth_date"] = f"{birth}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            self._identity(
                self._after(t, 0, 5 * _SECOND_MS), customer_id, "identity.customer_updated", profile
            )
        granted: list[Channel] = []
        for channel, share in _CONSENT_SHARE.items():
            if rng.random() < share:
                allowed = rng.random() < _CONSENT_GRANTED
                consent: _Json = {"channel": channel, "granted": allowed}
                self._identity(
                    self._after(t, 0, 10 * _SECOND_MS),
                    customer_id,
                    "identity.consent_updated",
                    consent,
                )
                if allowed:
                    granted.append(channel)
        if granted and rng.random() < _CONSENT_REVOKED_LATER:
            revoked: _Json = {"channel": rng.choice(granted), "granted": False}
            self._identity(
                self._between(t + _MINUTE_MS, self._end),
                customer_id,
                "identity.consent_updated",
                revoked,
            )
        if rng.random() < _JUNK_LOGIN:
            junk: _Json = {"anonymous_id": rng.choice(_JUNK_ANONYMOUS_IDS)}
            self._identity(
                self._after(t, 0, _MINUTE_MS), customer_id, "identity.customer_identified", junk
            )
        if self._last_login is not None and rng.random() < _SHARED_DEVICE_LOGIN:
            owner, anonymous_id = self._last_login
            if owner != customer_id:
                # A family computer: the id already belongs to someone else and stays there.
                self._identity(
                    self._after(t, 0, _MINUTE_MS),
                    customer_id,
                    "identity.customer_identified",
                    {"anonymous_id": anonymous_id},
                )

    def _session(
        self, t: int, visitor: _Visitor, market: _Market, login_as: str | None
    ) -> _Session:
        """A configurator visit: start, 0-8 option picks, perhaps a save, perhaps a login.

        With `login_as`, the visitor logs in after a uniformly chosen number of actions,
        so some log in before the session is engaged and some after.
        """
        rng = self._rng
        model = _PICK_MODEL(rng)
        session_id = rng.token("ses")
        dealer_id = rng.choice(market.dealers) if rng.random() < 0.4 else None
        picks = _PICK_OPTION_COUNT(rng)
        saves = rng.random() < 0.12 + 0.08 * picks
        login_after = rng.randint(0, picks + saves)
        logged_in_at: int | None = None

        started: _Json = {"session_id": session_id, "model_code": model.code, "market": market.code}
        if dealer_id is not None:
            started["dealer_id"] = dealer_id
        self._configurator(t, visitor, "configurator.session_started", started)
        chosen: dict[str, _Option] = {}  # by category, or by code where options add up
        configuration_id = None
        for done in range(picks + saves + 1):
            if login_as is not None and done == login_after:
                t = self._after(t, 4 * _SECOND_MS, 60 * _SECOND_MS)
                self._login(t, visitor, login_as)
                logged_in_at = t
            if done == picks + saves:
                break
            t = self._after(t, 4 * _SECOND_MS, 90 * _SECOND_MS)
            if done < picks:
                category = _PICK_CATEGORY(rng)
                option = rng.choice(
                    _ENGINES[model.electric] if category == "engine" else _OPTIONS[category]
                )
                chosen[category if category in _EXCLUSIVE else option.code] = option
                self._option_events.append(len(self._timeline))
                picked: _Json = {
                    "session_id": session_id,
                    "model_code": model.code,
                    "category": category,
                    "option_code": option.code,
                    "option_label": option.label,
                    "price_delta": option.price_delta,
                }
                self._configurator(t, visitor, "configurator.option_selected", picked)
            else:
                configuration_id = rng.token("cfg")
                saved: _Json = {
                    "session_id": session_id,
                    "configuration_id": configuration_id,
                    "model_code": model.code,
                    "options": [option.code for option in chosen.values()],
                    "total_price": model.base_price + sum(o.price_delta for o in chosen.values()),
                    "currency": "EUR",
                }
                if dealer_id is not None:
                    saved["dealer_id"] = dealer_id
                self._configurator(t, visitor, "configurator.configuration_saved", saved)
        return _Session(model, session_id, dealer_id, configuration_id, t, logged_in_at)

    def _convert(self, session: _Session, visitor: _Visitor, market: _Market) -> None:
        """Quote, test drive or order after a session; without one it counts as abandoned."""
        rng = self._rng
        saved = session.configuration_id is not None
        if rng.random() >= (_CONVERSION_IF_SAVED if saved else _CONVERSION_IF_NOT_SAVED):
            return
        t = session.ended_at
        customer_id = visitor.customer_id
        dealer_id = session.dealer_id or rng.choice(market.dealers)
        quoted = saved and (customer_id is None or rng.random() < 0.65)
        if quoted:
            t = self._after(t, 5 * _SECOND_MS, 2 * _MINUTE_MS)
            quote: _Json = {
                "session_id": session.session_id,
                "configuration_id": session.configuration_id,
                "dealer_id": dealer_id,
            }
            self._configurator(t, visitor, "configurator.quote_requested", quote)
        if customer_id is None:
            return
        if not quoted or rng.random() < 0.4:
            t = self._after(t, 10 * _MINUTE_MS, 3 * _DAY_MS)
            drive: _Json = {
                "booking_id": rng.token("bk"),
                "model_code": session.model.code,
                "dealer_id": dealer_id,
                "scheduled_at": self._slot(t, 1, 10),
            }
            self._booking(t, customer_id, "booking.test_drive_booked", drive)
        if saved and rng.random() < 0.2:
            t = self._after(t, _HOUR_MS, 5 * _DAY_MS)
            order: _Json = {
                "order_id": rng.token("ord"),
                "model_code": session.model.code,
                "configuration_id": session.configuration_id,
                "dealer_id": dealer_id,
            }
            self._booking(t, customer_id, "booking.order_placed", order)

    # -- vehicles -------------------------------------------------------------------

    def _vehicle(self, index: int) -> None:
        """A connected car: ownership, service history, readings, workshop visits, resale."""
        rng = self._rng
        customers = self._s.customers
        owner = rng.randrange(customers)
        market = self._markets[owner]
        model = _PICK_MODEL(rng)
        electric = model.electric
        interval_km, interval_months = (
            (30_000, 24) if electric or rng.random() < 0.25 else (15_000, 12)
        )
        cycle_days = interval_months * _DAYS_PER_MONTH
        daily_km = rng.uniform(20, 120)

        # Where the car stands in its current service cycle. Cars not near due stay clear
        # of every threshold, including the 30-day prediction from their daily mileage.
        first_cycle = rng.random() < _FIRST_CYCLE
        near_due = rng.random() < _NEAR_DUE
        if near_due and first_cycle and rng.random() < _DUE_BY_TIME:
            days_since = cycle_days - rng.uniform(1, 30)
            km_since = min(days_since * daily_km, interval_km * rng.uniform(0.4, 0.8))
        elif near_due:
            km_since = interval_km - rng.uniform(200, 1_500)
            days_since = min(km_since / daily_km, cycle_days - 45)
        else:
            days_since = rng.uniform(5, cycle_days - 60)
            km_since = min(days_since * daily_km, interval_km - 30 * daily_km - 3_000)
        cycles = 0 if first_cycle else rng.randint(1, 5)
        last_service_km = round(cycles * interval_km * rng.uniform(0.85, 1.0), 1)
        age_days = days_since + cycles * cycle_days * rng.uniform(0.75, 1.0)
        registered = self._start - timedelta(days=age_days)
        vin = _vin(model, registered.year, index)

        owner_id = _customer_id(owner)
        linked_at = rng.randint(0, self._end // 10)
        link: _Json = {
            "vin": vin,
            "model_code": model.code,
            "first_registered_on": registered.date().isoformat(),
            "service_interval_km": interval_km,
            "service_interval_months": interval_months,
            "market": market.code,
        }
        self._identity(linked_at, owner_id, "identity.vehicle_linked", link)
        if cycles:
            # The dealer system backfills the last service when the car is linked, so the
            # plan counts from there rather than from 0 km at registration. The record
            # arrives now but tells of the past: its occurred_at is the day of the service.
            history: _Json = {
                "occurred_at": self._timestamp(round(-days_since * _DAY_MS)),
                "vin": vin,
                "odometer_km": last_service_km,
                "dealer_id": rng.choice(market.dealers),
                "services": self._services(electric),
            }
            self._booking(
                self._after(linked_at, _SECOND_MS, _MINUTE_MS),
                owner_id,
                "booking.service_completed",
                history,
            )

        bookable_from = linked_at + 1
        if customers > 1 and rng.random() < _RESOLD:
            resold_at = self._between(linked_at + 1, (linked_at + self._end) // 2)
            owner = (owner + 1 + rng.randrange(customers - 1)) % customers
            owner_id = _customer_id(owner)
            market = self._markets[owner]
            resale = link | {"market": market.code}
            self._identity(resold_at, owner_id, "identity.vehicle_linked", resale)
            bookable_from = resold_at + 1

        visit = None
        if rng.random() < (_BOOKS_SERVICE_WHEN_DUE if near_due else _BOOKS_SERVICE_OTHERWISE):
            visit = self._service_visit(bookable_from, owner_id, vin, market, electric)
        checkpoints: list[tuple[int, str | None]] = [
            (self._between(linked_at + 1, self._end), None) for _ in range(rng.randint(3, 9))
        ]
        if visit is not None:
            checkpoints.append(visit)
        checkpoints.sort(key=lambda checkpoint: checkpoint[0])

        reports_service = rng.random() < _REPORTS_SERVICE_INDICATOR
        battery_soh = round(rng.uniform(84, 99.5), 1)
        fuel_pct = rng.uniform(10, 100)
        odometer = last_service_km + km_since
        cycle_started_day = -days_since  # in days after `start`
        previous = linked_at
        for t, completed_booking in checkpoints:
            driven = daily_km * (t - previous) / _DAY_MS * rng.uniform(0.6, 1.4)
            odometer += driven
            previous = t
            if completed_booking is not None:
                completion: _Json = {
                    "vin": vin,
                    "odometer_km": round(odometer, 1),
                    "dealer_id": rng.choice(market.dealers),
                    "booking_id": completed_booking,
                    "services": self._services(electric),
                }
                self._booking(t, owner_id, "booking.service_completed", completion)
                last_service_km = odometer
                cycle_started_day = t / _DAY_MS
                continue
            reading: _Json = {"vin": vin, "odometer_km": round(odometer, 1)}
            if reports_service:
                reading["service_remaining_km"] = round(interval_km - (odometer - last_service_km))
                reading["service_remaining_days"] = round(
                    cycle_days - (t / _DAY_MS - cycle_started_day), 1
                )
            if electric:
                reading["battery_soh_pct"] = battery_soh
            else:
                oil_left = 1 - (odometer - last_service_km) / interval_km
                reading["oil_life_pct"] = round(min(max(oil_left * 100, 0), 100), 1)
                fuel_pct -= driven * 0.15  # about 650 km on a full tank
                if fuel_pct < 12:
                    fuel_pct = rng.uniform(85, 100)
                reading["fuel_level_pct"] = round(fuel_pct, 1)
            faults = rng.random()
            if faults < 0.015:
                reading["dtc_codes"] = rng.sample(_DTC_CODES, rng.randint(1, 2))
            elif faults < 0.25:
                reading["dtc_codes"] = []
            self._emit(t, self._s.telematics_topic, vin, "telematics.reading", reading)

    def _services(self, electric: bool) -> list[str]:
        always, sometimes = _SERVICE_ITEMS[electric]
        return [*always, *(item for item in sometimes if self._rng.random() < 0.3)]

    def _service_visit(
        self, earliest: int, customer_id: str, vin: str, market: _Market, electric: bool
    ) -> tuple[int, str] | None:
        """Book a service; some are cancelled, some left open, some completed.

        Returns when and under which booking the service is completed, for the vehicle's
        timeline to emit with the odometer of that moment; None if it is not.
        """
        rng = self._rng
        booked_at = self._between(earliest, self._end)
        booking_id = rng.token("bk")
        outcome = rng.random()
        completed_at = self._between(booked_at + _MINUTE_MS, self._end)
        completes = outcome < 0.45 and completed_at - booked_at >= _MINUTE_MS
        if completes:
            # Completed within the run, so the appointment lies between booking and completion.
            slot = self._timestamp(booked_at + (completed_at - booked_at) * 3 // 4)
        else:
            slot = self._slot(booked_at, 2, 21)
        booking: _Json = {
            "booking_id": booking_id,
            "vin": vin,
            "dealer_id": rng.choice(market.dealers),
            "scheduled_at": slot,
            "services": self._services(electric),
        }
        self._booking(booked_at, customer_id, "booking.service_booked", booking)
        if completes:
            return completed_at, booking_id
        if outcome < 0.65:
            self._booking(
                completed_at, customer_id, "booking.cancelled", {"booking_id": booking_id}
            )
        return None

    # -- noise ----------------------------------------------------------------------

    def _erasures(self) -> None:
        """Erase the chosen customers after their last event; their cars keep reporting."""
        for key, last_seen in self._erased_last_seen.items():
            erased_at = self._after(last_seen, _MINUTE_MS, _HOUR_MS)
            self._identity(erased_at, key.decode(), "identity.customer_erased", {})

    def _duplicates(self) -> None:
        """Re-send a few messages unchanged, as a producer retrying after a timeout does."""
        count = round(len(self._timeline) * _DUPLICATED)
        for position in self._rng.sample(range(len(self._timeline)), count):
            self._timeline.append(self._timeline[position])

    def _malformed(self) -> None:
        """Add `malformed_ratio` of the output as rejects, cycling through every kind.

        Each reject is a mutation of a real event at that event's time and key, so it
        looks like what a buggy producer sends rather than random bytes.
        """
        ratio = self._s.malformed_ratio
        count = round(len(self._timeline) * ratio / (1 - ratio))
        kinds = [k for k in _MALFORMED_KINDS if k != "wrong_category" or self._option_events]
        first = self._rng.randrange(len(kinds))
        valid = len(self._timeline)
        for n in range(count):
            kind = kinds[(first + n) % len(kinds)]
            if kind == "wrong_category":
                position = self._rng.choice(self._option_events)
            else:
                position = self._rng.randrange(valid)
            t, topic, key, value, _ = self._timeline[position]
            bad_topic, bad_value = self._mutate(kind, topic, value)
            self._timeline.append((t, bad_topic, key, bad_value, True))

    def _mutate(self, kind: MalformedKind, topic: str, value: bytes) -> tuple[str, bytes]:
        """A broken copy of an event: the topic and value a buggy producer would send."""
        rng = self._rng
        body = orjson.loads(value)
        body["event_id"] = rng.uuid4()
        if kind == "invalid_json":
            whole = orjson.dumps(body)
            return topic, whole[: rng.randrange(1, len(whole) - 1)]  # an unclosed object
        if kind == "json_array":
            return topic, orjson.dumps([body])
        if kind == "wrong_topic":
            return rng.choice([other for other in self._s.input_topics if other != topic]), value
        if kind == "unknown_type":
            body["type"] = body["type"].replace(".", ".legacy_", 1)
        elif kind == "missing_field":
            fields = event_fields(EVENT_TYPES[body["type"]])
            del body[rng.choice([name for name, info in fields.items() if info.is_required()])]
        elif kind == "naive_timestamp":
            body["occurred_at"] = body["occurred_at"].removesuffix("Z")
        else:  # wrong_category
            body["category"] = rng.choice(("paint", "Colour", "rims", ""))
        return topic, orjson.dumps(body)

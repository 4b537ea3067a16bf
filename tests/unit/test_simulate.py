"""The simulator must be trustworthy input: contract-exact, reproducible and varied.

Benchmarks and integration tests compare runs of the same scenario and count on the
simulator to exercise every rule, so these tests pin determinism, the wire contract
(through the project's own decoder) and the presence of every behaviour.
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, get_args

import orjson
import pytest
from typer.testing import CliRunner

from pitlane import simulate
from pitlane.cli import app
from pitlane.domain.entities import is_junk_id
from pitlane.domain.events import (
    EVENT_TYPES,
    INPUT_TOPIC_OF_TYPE,
    ConfigurationSaved,
    ConsentUpdated,
    CustomerErased,
    CustomerIdentified,
    InputEvent,
    InvalidEvent,
    OptionCategory,
    OptionSelected,
    OrderPlaced,
    QuoteRequested,
    ServiceBooked,
    ServiceCompleted,
    TelematicsReading,
    TestDriveBooked,
    VehicleLinked,
    decode_event,
    event_fields,
)
from pitlane.replay import plan
from pitlane.simulate import (
    PublishFailed,
    Scenario,
    SimulatedMessage,
    generate,
    publish,
    record,
)

START = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
SPAN = timedelta(days=2)
SCENARIO = Scenario(customers=600, start=START, seed=11, span=SPAN)
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@dataclass(frozen=True)
class Decoded:
    """One generated message with its decoded event, for the valid ones."""

    message: SimulatedMessage
    event: InputEvent


@dataclass
class Run:
    messages: list[SimulatedMessage]
    valid: list[Decoded] = field(default_factory=list)
    rejected: list[SimulatedMessage] = field(default_factory=list)

    def of(self, kind: type[Any]) -> list[Any]:
        return [d.event for d in self.valid if isinstance(d.event, kind)]


@pytest.fixture(scope="module")
def run() -> Run:
    result = Run(list(generate(SCENARIO)))
    for message in result.messages:
        try:
            result.valid.append(Decoded(message, decode_event(message.value, message.topic)))
        except InvalidEvent:
            result.rejected.append(message)
    return result


def test_same_scenario_gives_the_same_bytes(run: Run) -> None:
    assert list(generate(SCENARIO)) == run.messages


def test_another_seed_gives_other_messages(run: Run) -> None:
    other = list(generate(Scenario(customers=600, start=START, seed=12, span=SPAN)))
    assert [m.value for m in other[:50]] != [m.value for m in run.messages[:50]]


def test_every_message_is_decoded_exactly_when_it_is_not_marked_malformed(run: Run) -> None:
    assert [d.message for d in run.valid if d.message.malformed] == []
    assert [m for m in run.rejected if not m.malformed] == []
    assert len(run.rejected) == pytest.approx(len(run.messages) * 0.002, abs=2)


def test_keys_follow_the_contract(run: Run) -> None:
    for decoded in run.valid:
        event, key = decoded.event, decoded.message.key
        if isinstance(event, TelematicsReading):
            assert key == event.vin.encode()
        elif decoded.message.topic == "configurator.events":
            assert key == (event.customer_id or event.anonymous_id or "").encode()
        else:
            assert key == (event.customer_id or "").encode()


def _backfill(event: InputEvent) -> bool:
    """A dealer system's record of a service done before the span (sent on linking)."""
    return isinstance(event, ServiceCompleted) and event.booking_id is None


def test_event_times_are_utc_milliseconds_within_the_span(run: Run) -> None:
    for decoded in run.valid:
        assert TIMESTAMP.fullmatch(orjson.loads(decoded.message.value)["occurred_at"])
        if _backfill(decoded.event):
            assert decoded.event.occurred_at < START
        else:
            assert START <= decoded.event.occurred_at <= START + SPAN


def test_backfilled_services_tell_of_the_past(run: Run) -> None:
    assert any(_backfill(decoded.event) for decoded in run.valid)


def test_event_time_never_goes_back_for_a_key(run: Run) -> None:
    last_seen: dict[bytes | None, datetime] = {}
    for decoded in run.valid:
        if _backfill(decoded.event):
            continue
        key = decoded.message.key
        assert decoded.event.occurred_at >= last_seen.get(key, START)
        last_seen[key] = decoded.event.occurred_at


def test_event_ids_repeat_only_in_exact_duplicates(run: Run) -> None:
    by_id: defaultdict[str, set[SimulatedMessage]] = defaultdict(set)
    for decoded in run.valid:
        by_id[decoded.event.event_id].add(decoded.message)
    assert all(len(copies) == 1 for copies in by_id.values())
    duplicates = len(run.valid) - len(by_id)
    assert 0 < duplicates < len(run.valid) * 0.01


def test_every_kind_of_malformed_message_is_sent(run: Run) -> None:
    def kind(message: SimulatedMessage) -> str:
        try:
            body = orjson.loads(message.value)
        except orjson.JSONDecodeError:
            return "invalid_json"
        if isinstance(body, list):
            return "json_array"
        if body.get("type") not in EVENT_TYPES:
            return "unknown_type"
        if INPUT_TOPIC_OF_TYPE[body["type"]] != message.topic:
            return "wrong_topic"
        if "occurred_at" in body and not body["occurred_at"].endswith("Z"):
            return "naive_timestamp"
        if body.get("category", "color") not in get_args(OptionCategory):
            return "wrong_category"
        required = {
            n for n, f in event_fields(EVENT_TYPES[body["type"]]).items() if f.is_required()
        }
        assert not required <= body.keys(), f"nothing wrong with {body}"
        return "missing_field"

    assert Counter(map(kind, run.rejected)).keys() == set(get_args(simulate.MalformedKind))


def test_configurations_are_abandoned_and_converted(run: Run) -> None:
    quoted = {e.session_id for e in run.of(QuoteRequested)}
    ordered = {e.configuration_id for e in run.of(OrderPlaced)}
    drivers = {e.customer_id for e in run.of(TestDriveBooked)}
    saved = run.of(ConfigurationSaved)
    abandoned = [
        e
        for e in saved
        if e.session_id not in quoted
        and e.configuration_id not in ordered
        and e.customer_id not in drivers
    ]
    assert quoted
    assert ordered
    assert drivers
    assert 0.3 < len(abandoned) / len(saved) < 0.8


def test_saved_price_is_the_model_price_plus_the_chosen_options(run: Run) -> None:
    deltas = {(e.option_code, e.model_code): e.price_delta for e in run.of(OptionSelected)}
    base_prices: defaultdict[str, set[float]] = defaultdict(set)
    for saved in run.of(ConfigurationSaved):
        assert saved.currency == "EUR"
        if all((code, saved.model_code) in deltas for code in saved.options):
            options = sum(deltas[code, saved.model_code] or 0 for code in saved.options)
            base_prices[saved.model_code].add(saved.total_price - options)
    assert base_prices
    assert all(len(prices) == 1 for prices in base_prices.values())


def test_anonymous_sessions_are_stitched_before_and_after_they_are_engaged(run: Run) -> None:
    logins = {e.anonymous_id: e.occurred_at for e in run.of(CustomerIdentified)}
    picks_before_login: Counter[str] = Counter()
    for pick in run.of(OptionSelected):
        login = logins.get(pick.anonymous_id or "")
        if login is not None and pick.occurred_at < login:
            picks_before_login[pick.session_id] += 1
    assert any(n < 3 for n in picks_before_login.values())
    assert any(n >= 3 for n in picks_before_login.values())


def test_junk_and_taken_anonymous_ids_are_sent_to_exercise_the_guards(run: Run) -> None:
    logins = run.of(CustomerIdentified)
    assert any(is_junk_id(e.anonymous_id) for e in logins)
    owners = defaultdict(set)
    for login in logins:
        if not is_junk_id(login.anonymous_id):
            owners[login.anonymous_id].add(login.customer_id)
    assert any(len(customers) > 1 for customers in owners.values())


def test_consent_is_granted_and_later_withdrawn(run: Run) -> None:
    history: defaultdict[tuple[str, str], list[bool]] = defaultdict(list)
    for consent in run.of(ConsentUpdated):
        history[consent.customer_id, consent.channel].append(consent.granted)
    assert {channel for _, channel in history} == {"email", "sms", "push", "dealer_call"}
    assert any(changes == [True, False] for changes in history.values())


def test_vehicles_are_valid_linked_before_reporting_and_some_resold(run: Run) -> None:
    owners: defaultdict[str, list[str]] = defaultdict(list)
    linked_at: dict[str, datetime] = {}
    for link in run.of(VehicleLinked):
        assert is_valid_vin(link.vin), link.vin
        assert link.service_interval_km in (15_000, 30_000)
        assert link.service_interval_months in (12, 24)
        assert isinstance(link.first_registered_on, date)
        owners[link.vin].append(link.customer_id)
        linked_at.setdefault(link.vin, link.occurred_at)
    assert len(owners) == SCENARIO.fleet_size
    assert any(len(set(chain)) == 2 for chain in owners.values())
    assert all(linked_at[e.vin] < e.occurred_at for e in run.of(TelematicsReading))


def test_odometers_only_go_up(run: Run) -> None:
    odometers: defaultdict[str, list[float]] = defaultdict(list)
    for decoded in run.valid:
        if isinstance(decoded.event, TelematicsReading | ServiceCompleted):
            odometers[decoded.event.vin].append(decoded.event.odometer_km)
    assert odometers
    assert all(values == sorted(values) for values in odometers.values())


def test_daily_mileage_is_believable(run: Run) -> None:
    readings: defaultdict[str, list[TelematicsReading]] = defaultdict(list)
    for reading in run.of(TelematicsReading):
        readings[reading.vin].append(reading)
    for series in readings.values():
        first, last = series[0], series[-1]
        days = (last.occurred_at - first.occurred_at) / timedelta(days=1)
        if days > 0.5:
            assert 20 * 0.6 <= (last.odometer_km - first.odometer_km) / days <= 120 * 1.4


def test_some_cars_are_near_their_service_and_get_serviced(run: Run) -> None:
    readings = run.of(TelematicsReading)
    assert any((r.service_remaining_km or 99_999) <= 1_500 for r in readings)
    assert any((r.service_remaining_days or 999) <= 30 for r in readings)
    assert any(r.dtc_codes for r in readings)
    booked = {e.booking_id for e in run.of(ServiceBooked)}
    completed = {e.booking_id for e in run.of(ServiceCompleted)}
    assert booked & completed
    assert booked - completed
    assert all(e.scheduled_at > e.occurred_at for e in run.of(ServiceBooked))
    assert all(e.scheduled_at > e.occurred_at for e in run.of(TestDriveBooked))


def test_erased_customers_send_nothing_afterwards(run: Run) -> None:
    erased = {e.customer_id: e.occurred_at for e in run.of(CustomerErased)}
    assert erased
    for decoded in run.valid:
        erased_at = erased.get(decoded.event.customer_id or "")
        if erased_at is not None and not isinstance(decoded.event, CustomerErased):
            assert decoded.event.occurred_at < erased_at


def test_a_scenario_needs_an_aware_start() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Scenario(customers=1, start=datetime(2026, 11, 22))  # noqa: DTZ001


def test_vehicles_default_to_two_fifths_of_the_customers() -> None:
    assert Scenario(customers=1_000, start=START).fleet_size == 400
    assert Scenario(customers=1_000, start=START, vehicles=7).fleet_size == 7


def is_valid_vin(vin: str) -> bool:
    """ISO 3779 characters and the North American check digit in position 9."""
    values = dict(zip("ABCDEFGHJKLMNPRSTUVWXYZ", "12345678123457923456789", strict=True))
    weights = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
    if not re.fullmatch(r"[A-HJ-NPR-Z0-9]{17}", vin):
        return False
    total = sum(int(values.get(c, c)) * w for c, w in zip(vin, weights, strict=True)) % 11
    return vin[8] == ("X" if total == 10 else str(total))


# -- publish, against a stand-in for kafka-python's producer ----------------------------


class FakeFuture:
    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def add_errback(self, callback: Callable[[Exception], object]) -> None:
        if self.error is not None:
            callback(self.error)


class FakeProducer:
    """Records what `publish` sends; fails the sends whose value is in `failing`."""

    instances: ClassVar[list[FakeProducer]] = []
    failing: ClassVar[frozenset[bytes]] = frozenset()

    def __init__(self, **config: object) -> None:
        self.config = config
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.flushed = self.closed = False
        FakeProducer.instances.append(self)

    def send(self, topic: str, key: bytes | None, value: bytes) -> FakeFuture:
        self.sent.append((topic, key, value))
        return FakeFuture(RuntimeError("broker said no") if value in self.failing else None)

    def flush(self) -> None:
        self.flushed = True

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def producer(monkeypatch: pytest.MonkeyPatch) -> type[FakeProducer]:
    FakeProducer.instances = []
    FakeProducer.failing = frozenset()
    monkeypatch.setattr(simulate, "KafkaProducer", FakeProducer)
    return FakeProducer


def test_publish_sends_everything_in_order_and_reports_progress(
    run: Run, producer: type[FakeProducer]
) -> None:
    progress: list[int] = []
    report = publish(["localhost:9092"], run.messages, on_sent=progress.append)
    (used,) = producer.instances
    assert used.sent == [(m.topic, m.key, m.value) for m in run.messages]
    assert used.config["acks"] == "all"
    assert used.flushed
    assert used.closed
    assert report.total == len(run.messages) == sum(progress)
    assert report.per_topic == Counter(m.topic for m in run.messages)
    assert report.malformed == len(run.rejected)


def test_publish_fails_loudly_and_still_closes(run: Run, producer: type[FakeProducer]) -> None:
    producer.failing = frozenset({run.messages[3].value})
    with pytest.raises(PublishFailed, match="1 of"):
        publish(["localhost:9092"], run.messages[:10])
    assert producer.instances[0].closed


def test_publish_keeps_to_the_pace(run: Run, producer: type[FakeProducer]) -> None:
    began = time.monotonic()
    publish(["localhost:9092"], run.messages[:50], pace=1_000)
    assert time.monotonic() - began >= 0.045


# -- record: the same traffic as a JSONL file for `pitlane replay` ----------------------


def test_record_writes_every_event_on_its_own_line_in_publishing_order(
    run: Run, tmp_path: Path
) -> None:
    path = tmp_path / "traffic.jsonl"
    report = record(run.messages, path)
    events = [m for m in run.messages if not m.malformed]
    assert path.read_bytes() == b"".join(m.value + b"\n" for m in events)
    assert report.written == len(events)
    assert report.per_topic == Counter(m.topic for m in events)
    assert report.left_out == len(run.rejected) > 0


def test_the_same_seed_records_the_same_bytes(run: Run, tmp_path: Path) -> None:
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    record(run.messages, first)
    record(generate(SCENARIO), second)
    assert first.read_bytes() == second.read_bytes()


def test_a_replay_of_the_recording_publishes_what_simulate_publishes(
    run: Run, tmp_path: Path
) -> None:
    path = tmp_path / "traffic.jsonl"
    record(run.messages, path)
    recording = plan([path])
    assert recording.rejected == []
    assert [(m.topic, m.key, m.value) for m in recording.messages] == [
        (d.message.topic, d.message.key, d.message.value) for d in run.valid
    ]


def test_the_recording_is_what_a_run_without_malformed_messages_publishes(run: Run) -> None:
    clean = list(generate(replace(SCENARIO, malformed_ratio=0)))
    assert clean == [m for m in run.messages if not m.malformed]


def test_record_refuses_topics_a_replay_would_not_send_to(tmp_path: Path) -> None:
    path = tmp_path / "traffic.jsonl"
    path.write_bytes(b"kept\n")
    own_topics = Scenario(customers=20, start=START, telematics_topic="cars_raw")
    with pytest.raises(ValueError, match="'cars_raw'"):
        record(generate(own_topics), path)
    assert path.read_bytes() == b"kept\n"
    assert list(tmp_path.iterdir()) == [path]


def test_simulate_out_records_without_a_broker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def no_kafka(**config: object) -> None:
        raise AssertionError("simulate --out connected to Kafka")

    monkeypatch.setattr(simulate, "KafkaProducer", no_kafka)
    scenario = Scenario(customers=60, start=START, seed=3, span=timedelta(hours=2))
    expected = tmp_path / "expected.jsonl"
    record(generate(scenario), expected)
    for name in ("first.jsonl", "second.jsonl"):
        args = ["--customers", "60", "--seed", "3", "--hours", "2", "--start", START.isoformat()]
        result = CliRunner().invoke(app, ["simulate", *args, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        assert "left out" in result.output
        assert (tmp_path / name).read_bytes() == expected.read_bytes()


def test_simulate_out_has_no_pace(tmp_path: Path) -> None:
    path = tmp_path / "traffic.jsonl"
    result = CliRunner().invoke(app, ["simulate", "--out", str(path), "--pace", "100"])
    assert result.exit_code == 2
    assert "--pace" in result.output
    assert not path.exists()

"""topics.yaml loading, validation and lookups, and create_topics' bookkeeping (no broker)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka.admin import NewTopic
from kafka.errors import InvalidConfigurationError, NoError, TopicAlreadyExistsError

from pitlane.topics import (
    PartitionMismatch,
    TopicCreationError,
    TopicReport,
    Topics,
    TopicsFileError,
    _ensure_topics,
    load_topics,
)

REPO_TOPICS = Path(__file__).resolve().parents[2] / "topics.yaml"

CONTRACT_TOPICS = {
    "configurator": "configurator.events",
    "booking": "booking.events",
    "telematics": "telematics.events",
    "identity": "identity.events",
    "abandoned_configuration": "campaign.abandoned-configuration",
    "service_due": "campaign.service-due",
    "suppressed": "pitlane.suppressed",
    "deadletter": "pitlane.deadletter",
}
INTERNAL_TOPICS = {"control": "pitlane.control"}
ALL_TOPICS = (*CONTRACT_TOPICS.values(), *INTERNAL_TOPICS.values())


def a_topic(name: str = "booking", topic: str = "booking.events", **fields: Any) -> dict[str, Any]:
    """One topic entry as written in topics.yaml; `fields` override the defaults."""
    return {"name": name, "topic": topic, "role": "input", "partitions": 8, **fields}


def a_deadletter() -> dict[str, Any]:
    return a_topic("deadletter", "pitlane.deadletter", role="deadletter", partitions=1)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topics.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def topics() -> Topics:
    return load_topics(REPO_TOPICS)


# The shipped file --------------------------------------------------------------------


def test_repo_file_declares_every_contract_topic_and_only_internal_extras(
    topics: Topics,
) -> None:
    assert {spec.name: spec.topic for spec in topics.topics} == CONTRACT_TOPICS | INTERNAL_TOPICS
    assert {topics.spec(name).role for name in INTERNAL_TOPICS} == {"internal"}


def test_repo_file_partitions_retention_and_roles(topics: Topics) -> None:
    week_ms, two_weeks_ms, month_ms = (str(days * 86_400_000) for days in (7, 14, 30))
    inputs = [spec for spec in topics.topics if spec.role == "input"]
    assert [spec.name for spec in inputs] == ["configurator", "booking", "telematics", "identity"]
    assert {spec.partitions for spec in inputs} == {8}
    assert {spec.config["retention.ms"] for spec in inputs} == {week_ms}
    outputs = [spec for spec in topics.topics if spec.role == "output"]
    assert [spec.name for spec in outputs] == [
        "abandoned_configuration",
        "service_due",
        "suppressed",
    ]
    assert {spec.partitions for spec in outputs} == {4}
    assert {spec.config["retention.ms"] for spec in outputs} == {two_weeks_ms}
    deadletter = topics.spec("deadletter")
    assert (deadletter.role, deadletter.partitions) == ("deadletter", 1)
    assert deadletter.config == {"retention.ms": month_ms, "cleanup.policy": "delete"}
    assert {spec.replication_factor for spec in topics.topics} == {1}
    assert {spec.config["cleanup.policy"] for spec in topics.topics} == {"delete"}


def test_packaged_copy_is_identical_to_repo_file() -> None:
    packaged = resources.files("pitlane") / "topics.yaml"
    assert packaged.read_bytes() == REPO_TOPICS.read_bytes()


# Loading -----------------------------------------------------------------------------


def test_bare_name_missing_in_cwd_falls_back_to_packaged_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, topics: Topics
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_topics(Path("topics.yaml")) == topics


def test_file_in_cwd_wins_over_packaged_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "topics:\n  - {name: deadletter, topic: dl, role: deadletter, partitions: 2}\n")
    monkeypatch.chdir(tmp_path)
    assert load_topics(Path("topics.yaml")).topic("deadletter") == "dl"


@pytest.mark.parametrize("path", ["conf/topics.yaml", "/nonexistent/topics.yaml"])
def test_missing_path_with_directory_does_not_fall_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="topics file"):
        load_topics(Path(path))


def test_missing_bare_name_not_shipped_either(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="nor shipped with pitlane"):
        load_topics(Path("topics-prod.yaml"))


def test_numbers_in_config_are_read_as_strings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "topics:\n"
        "  - {name: deadletter, topic: dl, role: deadletter, partitions: 1,\n"
        "     config: {retention.ms: 86400000}}\n",
    )
    assert load_topics(path).spec("deadletter").config == {"retention.ms": "86400000"}


# Malformed files ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("topics: [unclosed\n", "not valid YAML"),
        ("", "must be a mapping"),
        ("- just\n- a list\n", "must be a mapping"),
        ("topics: []\n", "topics: Tuple should have at least 1 item"),
        ("topicz: []\n", "topicz: Extra inputs are not permitted"),
    ],
)
def test_malformed_file_names_file_and_problem(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(TopicsFileError) as raised:
        load_topics(path)
    assert str(path) in str(raised.value)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (a_topic(partitions=0), "topics.0.partitions: Input should be greater than 0"),
        (a_topic(role="sink"), "topics.0.role: Input should be 'input', 'output', 'deadletter'"),
        (a_topic(name="Booking"), "topics.0.name: String should match pattern"),
        (a_topic(topic="booking events"), "topics.0.topic: String should match pattern"),
        (a_topic(retention=7), "topics.0.retention: Extra inputs are not permitted"),
        (a_topic(replication_factor=0), "topics.0.replication_factor: Input should be greater"),
        ({"name": "booking", "role": "input"}, "topics.0.topic: Field required"),
    ],
)
def test_invalid_entry_is_reported_with_its_location(
    tmp_path: Path, entry: dict[str, Any], message: str
) -> None:
    path = write(tmp_path, yaml.safe_dump({"topics": [entry, a_deadletter()]}))
    with pytest.raises(TopicsFileError, match="does not declare valid topics") as raised:
        load_topics(path)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (
            [a_topic(), a_topic(topic="other.events"), a_deadletter()],
            "duplicate topic name: booking",
        ),
        (
            [a_topic(), a_topic(name="other"), a_deadletter()],
            "duplicate topic topic: booking.events",
        ),
        ([a_topic()], "exactly one topic must have role deadletter, found 0"),
        (
            [a_deadletter(), a_topic("dl2", "dl2", role="deadletter")],
            "found 2: deadletter, dl2",
        ),
    ],
)
def test_inconsistent_topics_are_rejected(
    tmp_path: Path, entries: list[dict[str, Any]], message: str
) -> None:
    path = write(tmp_path, yaml.safe_dump({"topics": entries}))
    with pytest.raises(TopicsFileError, match=message):
        load_topics(path)


# Lookups -----------------------------------------------------------------------------


def test_topic_maps_logical_name_to_kafka_name(topics: Topics) -> None:
    assert topics.topic("deadletter") == "pitlane.deadletter"
    assert topics.topic("abandoned_configuration") == "campaign.abandoned-configuration"
    assert topics.spec("telematics").partitions == 8


def test_inputs_and_outputs_are_kafka_names_to_subscribe_and_publish_to(topics: Topics) -> None:
    assert topics.inputs == [
        "configurator.events",
        "booking.events",
        "telematics.events",
        "identity.events",
    ]
    assert topics.outputs == [
        "campaign.abandoned-configuration",
        "campaign.service-due",
        "pitlane.suppressed",
    ]


def test_unknown_logical_name_lists_the_known_ones(topics: Topics) -> None:
    with pytest.raises(KeyError, match=r"no topic named 'deadletters'.*known: configurator"):
        topics.topic("deadletters")


def test_topics_are_immutable(topics: Topics) -> None:
    with pytest.raises(ValueError, match="frozen"):
        topics.spec("booking").partitions = 2  # type: ignore[misc]


# create_topics bookkeeping, against an in-memory broker stand-in -----------------------


class FakeBroker:
    """The admin calls create_topics makes, answered like a broker would.

    `rejects_configs` makes it answer INVALID_CONFIG to any create carrying configs,
    as a broker without topic-config support does.
    """

    def __init__(self, partitions: dict[str, int], *, rejects_configs: bool = False) -> None:
        self.partitions = dict(partitions)
        self.rejects_configs = rejects_configs
        self.requests: list[list[NewTopic]] = []

    def describe_topics(self, topics: list[str] | None = None) -> list[dict[str, Any]]:
        return [
            {"name": name, "partitions": [{"partition_index": i} for i in range(count)]}
            for name, count in self.partitions.items()
        ]

    def create_topics(self, new_topics: list[NewTopic], *, raise_errors: bool) -> dict[str, Any]:
        self.requests.append(new_topics)
        results = []
        for new in new_topics:
            if new.name in self.partitions:
                code, message = TopicAlreadyExistsError.errno, "Topic already exists."
            elif new.topic_configs and self.rejects_configs:
                code, message = InvalidConfigurationError.errno, "configs not supported"
            else:
                code, message = NoError.errno, None
                self.partitions[new.name] = new.num_partitions
            results.append({"name": new.name, "error_code": code, "error_message": message})
        return {"topics": results}

    def wait_for_topics(self, topic_names: list[str]) -> None:
        assert set(topic_names) <= set(self.partitions)


def test_creates_missing_topics_then_nothing_on_second_run(topics: Topics) -> None:
    broker = FakeBroker({"__consumer_offsets": 50})

    first = _ensure_topics(broker, topics, None)
    second = _ensure_topics(broker, topics, None)

    assert first.created == ALL_TOPICS
    assert first.already_present == ()
    assert second.created == ()
    assert second.already_present == ALL_TOPICS
    assert second.summary().startswith("created nothing\n9 already present: ")
    assert len(broker.requests) == 1
    assert broker.requests[0][0].topic_configs == topics.spec("configurator").config


def test_replication_factor_override_applies_to_every_topic(topics: Topics) -> None:
    broker = FakeBroker({})
    _ensure_topics(broker, topics, 3)
    assert {new.replication_factor for new in broker.requests[0]} == {3}


def test_existing_topic_with_other_partitions_is_reported_not_altered(topics: Topics) -> None:
    broker = FakeBroker({"booking.events": 3})

    report = _ensure_topics(broker, topics, None)

    assert broker.partitions["booking.events"] == 3
    assert "booking.events" not in report.created
    assert report.partition_mismatches == (PartitionMismatch("booking.events", 8, 3),)
    assert "booking.events has 3 partition(s), topics.yaml declares 8; left unchanged" in (
        report.summary()
    )


def test_rejected_configs_fall_back_to_plain_create_and_are_reported(topics: Topics) -> None:
    broker = FakeBroker({}, rejects_configs=True)

    report = _ensure_topics(broker, topics, None)

    assert report.created == ALL_TOPICS
    assert report.configs_rejected == dict.fromkeys(ALL_TOPICS, "configs not supported")
    assert [new.topic_configs for new in broker.requests[1]] == [{}] * len(ALL_TOPICS)
    assert "pitlane.deadletter: broker rejected the topic configs (configs not supported)" in (
        report.summary()
    )


def test_refused_topic_raises_with_broker_reason(topics: Topics) -> None:
    class RefusingBroker(FakeBroker):
        def create_topics(
            self, new_topics: list[NewTopic], *, raise_errors: bool
        ) -> dict[str, Any]:
            return {
                "topics": [
                    {"name": new.name, "error_code": 38, "error_message": "bad replication"}
                    for new in new_topics
                ]
            }

    with pytest.raises(TopicCreationError, match=r"could not create 9 topic.*bad replication"):
        _ensure_topics(RefusingBroker({}), topics, 3)


def test_report_summary_when_everything_is_new() -> None:
    report = TopicReport(created=("a", "b"), already_present=())
    assert report.summary() == "created 2 topic(s): a, b"

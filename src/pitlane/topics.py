"""Topic declarations: topics.yaml as typed objects, and creating the topics it declares.

Every Kafka topic pitlane touches is declared once in topics.yaml and referred to by
its logical name (`topics.topic("deadletter")`), so a rename or a partition change is
an edit to that file, not a hunt through the code. The wheel ships a copy of the file,
so an installed pitlane works from any directory.

`create_topics` only ever adds what is missing. It never alters an existing topic:
Kafka cannot shrink partitions, and growing them would move keys between partitions
under running consumers; a difference is reported for an operator to decide.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import (
    InvalidConfigurationError,
    NoError,
    PolicyViolationError,
    TopicAlreadyExistsError,
)
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

log = logging.getLogger(__name__)

TopicRole = Literal["input", "output", "deadletter", "internal"]

# Broker answers that mean "I will not take these topic configs"; on them a topic is
# created without its config rather than not at all.
_CONFIG_REJECTED = frozenset({InvalidConfigurationError.errno, PolicyViolationError.errno})


class TopicsFileError(ValueError):
    """topics.yaml exists but is not valid YAML or does not describe valid topics."""


class TopicCreationError(RuntimeError):
    """The broker refused to create one or more declared topics."""


class TopicSpec(BaseModel):
    """One declared topic: how code names it and how the broker should create it."""

    # YAML authors write `retention.ms: 604800000`; Kafka configs are strings anyway.
    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Logical name code uses.")
    topic: str = Field(pattern=r"^[A-Za-z0-9._-]{1,249}$", description="Kafka topic name.")
    role: TopicRole = Field(
        description="Whether pitlane reads it, writes triggers or dead letters to it, "
        "or uses it internally (outside the wire contract)."
    )
    partitions: PositiveInt
    replication_factor: PositiveInt = 1
    config: dict[str, str] = Field(
        default_factory=dict, description="Kafka topic configs applied on creation."
    )


class Topics(BaseModel):
    """All declared topics, looked up by logical name.

    Logical and Kafka names are unique, and there is exactly one dead-letter topic,
    because every worker needs one place to send input it cannot process.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    topics: tuple[TopicSpec, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Topics:
        for attribute in ("name", "topic"):
            values = [getattr(spec, attribute) for spec in self.topics]
            repeated = sorted({value for value in values if values.count(value) > 1})
            if repeated:
                raise ValueError(f"duplicate topic {attribute}: {', '.join(repeated)}")
        deadletters = [spec.name for spec in self.topics if spec.role == "deadletter"]
        if len(deadletters) != 1:
            raise ValueError(
                f"exactly one topic must have role deadletter, found {len(deadletters)}"
                + (f": {', '.join(deadletters)}" if deadletters else "")
            )
        return self

    def spec(self, name: str) -> TopicSpec:
        """The declaration of the topic with logical name `name`.

        Raises KeyError naming the known logical names, so a typo is obvious.
        """
        for spec in self.topics:
            if spec.name == name:
                return spec
        known = ", ".join(spec.name for spec in self.topics)
        raise KeyError(f"no topic named {name!r} in topics.yaml; known: {known}")

    def topic(self, name: str) -> str:
        """The Kafka topic name for logical name `name` (KeyError if undeclared)."""
        return self.spec(name).topic

    @property
    def inputs(self) -> list[str]:
        """Kafka names of the topics workers consume, in file order (what to subscribe to)."""
        return self._with_role("input")

    @property
    def outputs(self) -> list[str]:
        """Kafka names of the trigger topics (campaigns and suppressed, not dead letters)."""
        return self._with_role("output")

    def _with_role(self, role: TopicRole) -> list[str]:
        return [spec.topic for spec in self.topics if spec.role == role]


def load_topics(path: Path) -> Topics:
    """Read and validate a topics file.

    A bare file name that does not exist in the working directory (the default
    `topics.yaml`) falls back to the copy shipped inside the package, so an installed
    pitlane needs no checkout. A path with a directory part never falls back: a
    missing explicit file is an operator mistake, and FileNotFoundError says so.

    Raises TopicsFileError, naming the file and every problem, when the file is not
    YAML or does not validate.
    """
    source = _locate(path)
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise TopicsFileError(f"{source} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise TopicsFileError(
            f"{source} must be a mapping with a `topics` list, got {type(raw).__name__}"
        )
    try:
        return Topics.model_validate(raw)
    except ValidationError as exc:
        problems = "\n".join(
            f"  {'.'.join(str(part) for part in error['loc']) or '<file>'}: {error['msg']}"
            for error in exc.errors()
        )
        raise TopicsFileError(f"{source} does not declare valid topics:\n{problems}") from None


def _locate(path: Path) -> Traversable:
    if path.exists():
        return path
    if not path.is_absolute() and path.parent == Path("."):
        packaged = resources.files("pitlane") / path.name
        if packaged.is_file():
            log.info("%s not found in %s; using the packaged copy %s", path, Path.cwd(), packaged)
            return packaged
        raise FileNotFoundError(
            f"topics file {path} not found in {Path.cwd()} nor shipped with pitlane"
        )
    raise FileNotFoundError(f"topics file {path} not found")


@dataclass(frozen=True)
class PartitionMismatch:
    """A topic whose partition count on the broker differs from its declaration."""

    topic: str
    declared: int
    actual: int


@dataclass(frozen=True)
class TopicReport:
    """What `create_topics` did; `summary()` is the line to show an operator.

    `configs_rejected` maps a created topic to the broker's reason for refusing its
    configs: the topic exists, but with the broker's default retention.
    """

    created: tuple[str, ...]
    already_present: tuple[str, ...]
    partition_mismatches: tuple[PartitionMismatch, ...] = ()
    configs_rejected: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line per fact, always saying explicitly when nothing was created."""
        if self.created:
            lines = [f"created {len(self.created)} topic(s): {', '.join(self.created)}"]
        else:
            lines = ["created nothing"]
        if self.already_present:
            lines.append(
                f"{len(self.already_present)} already present: {', '.join(self.already_present)}"
            )
        lines.extend(
            f"{m.topic} has {m.actual} partition(s), topics.yaml declares {m.declared}; "
            "left unchanged"
            for m in self.partition_mismatches
        )
        lines.extend(
            f"{topic}: broker rejected the topic configs ({reason}); created without them"
            for topic, reason in self.configs_rejected.items()
        )
        return "\n".join(lines)


class _TopicAdmin(Protocol):
    """The part of kafka-python's KafkaAdminClient (>= 3.0) this module uses."""

    def describe_topics(self, topics: list[str] | None = None) -> list[dict[str, Any]]: ...

    def create_topics(
        self, new_topics: list[NewTopic], *, raise_errors: bool
    ) -> dict[str, Any]: ...

    def wait_for_topics(self, topic_names: list[str]) -> None: ...


def create_topics(
    bootstrap_servers: list[str], topics: Topics, replication_factor: int | None = None
) -> TopicReport:
    """Create the declared topics the broker does not have yet; idempotent.

    `replication_factor`, when given, replaces every declared one (production passes
    3; the file says 1 so it works on one local broker). Topic configs go with the
    create request; a broker that rejects them gets the topic without them, and the
    report says so. Raises TopicCreationError if any topic could not be created.
    """
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="pitlane-topics")
    try:
        return _ensure_topics(admin, topics, replication_factor)
    finally:
        admin.close()


def _ensure_topics(
    admin: _TopicAdmin, topics: Topics, replication_factor: int | None
) -> TopicReport:
    present_before = _partition_counts(admin)
    missing = [spec for spec in topics.topics if spec.topic not in present_before]
    already_present = [spec.topic for spec in topics.topics if spec.topic in present_before]
    created: list[str] = []
    configs_rejected: dict[str, str] = {}
    failures: dict[str, str] = {}

    outcomes = _create(admin, missing, replication_factor, with_config=True)
    retry = [spec for spec in missing if outcomes[spec.topic][0] in _CONFIG_REJECTED]
    retried = _create(admin, retry, replication_factor, with_config=False)
    for spec in missing:
        code, message = retried.get(spec.topic, outcomes[spec.topic])
        if code == NoError.errno:
            created.append(spec.topic)
            if spec.topic in retried:
                configs_rejected[spec.topic] = outcomes[spec.topic][1]
        elif code == TopicAlreadyExistsError.errno:  # created concurrently by someone else
            already_present.append(spec.topic)
        else:
            failures[spec.topic] = message
    if failures:
        detail = "; ".join(f"{topic}: {message}" for topic, message in failures.items())
        raise TopicCreationError(
            f"could not create {len(failures)} topic(s): {detail}"
            + (f" (created: {', '.join(created)})" if created else "")
        )

    if created:
        admin.wait_for_topics(created)
    present_after = _partition_counts(admin)
    mismatches = tuple(
        PartitionMismatch(spec.topic, spec.partitions, present_after[spec.topic])
        for spec in topics.topics
        if present_after.get(spec.topic, spec.partitions) != spec.partitions
    )
    return TopicReport(
        created=tuple(created),
        already_present=tuple(already_present),
        partition_mismatches=mismatches,
        configs_rejected=configs_rejected,
    )


def _partition_counts(admin: _TopicAdmin) -> dict[str, int]:
    # All topics in one metadata request: the answer is both "which exist" and "how
    # many partitions each has".
    return {entry["name"]: len(entry["partitions"]) for entry in admin.describe_topics(None)}


def _create(
    admin: _TopicAdmin,
    specs: list[TopicSpec],
    replication_factor: int | None,
    *,
    with_config: bool,
) -> dict[str, tuple[int, str]]:
    """Send one CreateTopics request; map each topic to (error code, broker message)."""
    if not specs:
        return {}
    response = admin.create_topics(
        [
            NewTopic(
                spec.topic,
                num_partitions=spec.partitions,
                replication_factor=(
                    spec.replication_factor if replication_factor is None else replication_factor
                ),
                topic_configs=spec.config if with_config else {},
            )
            for spec in specs
        ],
        raise_errors=False,
    )
    return {
        result["name"]: (result["error_code"], result["error_message"] or "no message")
        for result in response["topics"]
    }

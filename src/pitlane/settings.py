"""Operator settings: the one place pitlane reads its environment.

Every number a rule uses lives here with the contract's default, so an operator
can tune behaviour without code. Build it once (`Settings()`) at the edge and pass it
down; nothing else reads `os.environ`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DAY_S = 86_400


class Settings(BaseSettings):
    """Everything an operator may set, as `PITLANE_<NAME>` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="PITLANE_", env_file=None, frozen=True, extra="ignore"
    )

    # Contract settings.
    broker: str = Field(
        "kafka://localhost:9092",
        description="Kafka bootstrap servers, `kafka://host:port[;host:port]`.",
    )
    redis_url: SecretStr = Field(
        SecretStr("redis://localhost:6379/0"),
        description="Redis URL; masked when logged because it may carry a password.",
    )
    redis_cluster: bool = Field(
        False,
        description="`redis_url` names a node of a Redis Cluster: read and write per node.",
    )
    clock: Literal["wall", "event"] = Field(
        "wall",
        description="What deadlines are checked against: wall clock or event-time watermark.",
    )
    abandonment_window_s: float = Field(
        86_400,
        gt=0,
        description="Quiet time after the last configurator activity that counts as abandonment.",
    )
    topics_file: Path = Field(Path("topics.yaml"), description="Topics definition file.")

    # Worker runtime.
    consumer_group: str = Field("pitlane", description="Kafka consumer group of the workers.")
    batch_max_records: int = Field(500, gt=0, description="Most events taken from Kafka per batch.")
    batch_timeout_ms: int = Field(100, ge=0, description="Longest wait for a batch to fill.")
    fetch_max_wait_ms: int = Field(
        20,
        ge=0,
        description="Longest a fetch waits for data; tansu answers only when it runs out, "
        "so it is the floor of trigger latency there (Kafka answers when data arrives).",
    )
    session_timeout_s: float = Field(
        10,
        gt=0,
        description="Kafka group session timeout; tansu answers a join after about half of it.",
    )
    web_port: int = Field(6066, ge=0, le=65535, description="Port of the worker's HTTP API.")
    web_host: str = Field("127.0.0.1", description="Interface the worker's HTTP API binds to.")
    data_dir: Path = Field(
        Path(tempfile.gettempdir()) / "pitlane",
        description="Where the faust runtime keeps its local files (no state lives there).",
    )
    sweep_interval_s: float = Field(
        1.0, gt=0, description="How often a worker fires due deadlines."
    )
    timer_shards: int = Field(16, gt=0, description="Deadline index shards (sorted sets) in Redis.")

    # State.
    sessions_kept: int = Field(
        5, gt=0, description="Configurator sessions a profile keeps, newest first."
    )
    allowed_lateness_s: float = Field(
        300, ge=0, description="How late an event may arrive and still count in event-clock mode."
    )
    idle_partition_s: float = Field(
        5,
        gt=0,
        description="Event clock: a partition read to its end that receives nothing for this"
        " long stops holding the watermark back, so a replay finishes on its own.",
    )
    dedupe_ids: int = Field(
        32,
        gt=0,
        description="Newest event ids each entity remembers, besides those not committed yet"
        " (catches an upstream producer publishing an event twice).",
    )
    interest_half_life_days: float = Field(14, gt=0, description="Half-life of interest scores.")
    mileage_smoothing: float = Field(
        0.3,
        gt=0,
        le=1,
        description="Weight of the newest day in the rolling daily-mileage estimate.",
    )
    mileage_min_span_h: float = Field(
        6,
        gt=0,
        description="Shortest odometer sample span that updates the daily-mileage estimate.",
    )
    anonymous_ttl_s: int = Field(30 * DAY_S, gt=0, description="Lifetime of an anonymous profile.")
    erasure_salt: SecretStr = Field(
        SecretStr("pitlane-default-salt"),
        description="Salt of erased-customer hashes; set a secret one in production.",
    )
    default_market: str = Field("DE", description="Market assumed when none is known.")

    # Rules.
    engaged_min_options: int = Field(
        3, ge=1, description="Option selections that make a session engaged."
    )
    service_interval_km: int = Field(15_000, gt=0, description="Default service plan distance.")
    service_interval_months: int = Field(12, gt=0, description="Default service plan time.")
    service_due_km: int = Field(
        1_500, ge=0, description="Remaining distance at which service is due."
    )
    service_due_days: int = Field(30, ge=0, description="Remaining time at which service is due.")
    contact_cap: int = Field(3, ge=0, description="Most triggers per customer per cap window.")
    contact_cap_window_s: float = Field(
        7 * DAY_S, gt=0, description="Rolling window of the contact cap."
    )
    cooldown_s: float = Field(7 * DAY_S, ge=0, description="Per-type quiet time after a trigger.")
    control_group_pct: float = Field(
        0,
        ge=0,
        le=100,
        description="Share of customers (per trigger type, by a stable hash) held back to "
        "measure uplift; their triggers go to pitlane.suppressed as control_group.",
    )

    @field_validator("broker")
    @classmethod
    def _broker_has_scheme(cls, value: str) -> str:
        if not value.startswith("kafka://"):
            raise ValueError(f"PITLANE_BROKER must look like kafka://host:port, got {value!r}")
        return value

    @model_validator(mode="after")
    def _event_clock_on_one_primary(self) -> Settings:
        if self.clock == "event" and self.redis_cluster:
            raise ValueError(
                "PITLANE_CLOCK=event needs one Redis primary (PITLANE_REDIS_CLUSTER=false): its"
                " exactness rests on one atomic write of state and input positions"
            )
        return self

    @property
    def bootstrap_servers(self) -> list[str]:
        """The broker setting as the `host:port` list Kafka clients take."""
        return [part for part in self.broker.removeprefix("kafka://").split(";") if part]

"""What pitlane publishes: triggers, held-back triggers and dead letters.

Campaign tools and channel services consume these, often on older releases than
pitlane's, so every model ignores fields it does not know and fields are only ever
added. The context models document the payload of each trigger type; a `Trigger`
carries its context as a plain JSON object so a consumer needs no pitlane code.
"""

from __future__ import annotations

import base64
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pitlane.domain.events import (
    Channel,
    Currency,
    Kilometres,
    NonEmptyStr,
    OptionCategory,
    UtcDatetime,
)

SuppressionReason = Literal["no_consent", "contact_cap", "cooldown", "control_group"]
ServiceDueReason = Literal["distance", "time", "vehicle_indicator", "predicted"]


class _Output(BaseModel):
    # Defaulted fields are always written, so the exported schema marks them required.
    model_config = ConfigDict(
        extra="ignore",
        frozen=True,
        allow_inf_nan=False,
        json_schema_serialization_defaults_required=True,
    )


class Trigger(_Output):
    """A decision to contact a customer, the value of every `campaign.*` topic."""

    trigger_id: NonEmptyStr = Field(
        description="Deterministic from (type, subject, episode): a re-emitted trigger keeps it."
    )
    type: str = Field(
        pattern=r"^[a-z][a-z0-9_]*$",
        description="Trigger type, e.g. service_due; published to campaign.<kebab-type>.",
    )
    customer_id: NonEmptyStr = Field(description="The customer to reach.")
    fired_at: UtcDatetime = Field(description="When pitlane decided.")
    channels: list[Channel] = Field(description="Channels the customer consented to.")
    context: dict[str, Any] = Field(
        description="All a channel needs to personalise the message; see *.context schemas."
    )
    caused_by: list[str] = Field(description="event_id of the events that led to the trigger.")
    schema_version: Literal[1] = Field(1, description="Version of this contract.")


class SuppressedTrigger(_Output):
    """A trigger that fired but was held back, kept so campaigns can measure and audit."""

    trigger: Trigger
    reason: SuppressionReason = Field(description="Which contact rule held it back.")
    detail: str | None = Field(None, description="Human-readable specifics, if any.")


class DeadLetter(_Output):
    """An input message pitlane could not apply, with enough to find, fix and replay it."""

    original_b64: str = Field(description="The message value exactly as received, base64.")
    key_b64: str | None = Field(description="The message key, base64; null if it had none.")
    topic: str = Field(description="Topic the message was read from.")
    partition: int = Field(ge=0, description="Partition it was read from.")
    offset: int = Field(ge=0, description="Its offset in that partition.")
    reason: str = Field(description="Why it was rejected.")
    received_at: UtcDatetime = Field(description="When pitlane read it.")


def dead_letter(
    raw: bytes,
    key: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    reason: str,
    received_at: datetime,
) -> DeadLetter:
    """Wrap a rejected message so its exact bytes survive a JSON round trip."""
    return DeadLetter(
        original_b64=base64.b64encode(raw).decode("ascii"),
        key_b64=None if key is None else base64.b64encode(key).decode("ascii"),
        topic=topic,
        partition=partition,
        offset=offset,
        reason=reason,
        received_at=received_at,
    )


class SelectedOption(_Output):
    """One option as the customer saw it, so a message can name it without a catalogue."""

    code: NonEmptyStr = Field(description="Manufacturer option code.")
    label: str | None = Field(None, description="Display name, if the configurator sent one.")


class AbandonedConfigurationContext(_Output):
    """`context` of an `abandoned_configuration` trigger."""

    session_id: NonEmptyStr = Field(description="The abandoned configurator session.")
    configuration_id: str | None = Field(None, description="Saved configuration, if any.")
    model_code: NonEmptyStr = Field(description="Configured model.")
    options: dict[OptionCategory, list[SelectedOption]] = Field(
        description="Selected options grouped by category."
    )
    total_price: float | None = Field(None, ge=0, description="Total price, if known.")
    currency: Currency | None = Field(None, description="ISO 4217 currency of total_price.")
    top_interest_category: str | None = Field(
        None, description="What the customer looked at most, e.g. wheels."
    )
    dealer_id: str | None = Field(None, description="Dealer of the session, if known.")
    last_activity_at: UtcDatetime = Field(description="Last configurator activity.")


class ServiceDueContext(_Output):
    """`context` of a `service_due` trigger."""

    vin: NonEmptyStr = Field(description="The vehicle due for service.")
    model_code: str | None = Field(None, description="Its model, if known.")
    odometer_km: Kilometres = Field(description="Latest known odometer, km.")
    remaining_km: float | None = Field(
        None, description="Distance left until service, km; negative when overdue."
    )
    due_date: date | None = Field(None, description="Due date by time or by prediction.")
    reason: ServiceDueReason = Field(description="Which rule found the service due.")
    dealer_id: str | None = Field(None, description="Workshop of the last service, if known.")

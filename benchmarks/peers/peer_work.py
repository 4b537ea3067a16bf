"""One event through pitlane's pure core, with the state loading left to the peer.

Per event, every peer does what pitlane's `BatchHandler` does per batch, in the same
order and with the same domain functions: decode and validate (`decode_event`), route
(`keys_for`, in rounds until it names nothing new), `apply`, load the owners a vehicle
decision needs (`decision_keys`), `decide` the abandonment and service-due rules, and
turn triggers into the messages pitlane would publish. Only where states come from and
go to differs between peers (Redis awaited per key, a local state store), so this
module takes and returns plain `states` mappings and does no I/O itself.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping

from pitlane.domain.apply import apply
from pitlane.domain.decide import Decisions, decide, decision_keys
from pitlane.domain.entities import EntityKey, erased_marker
from pitlane.domain.events import InputEvent, InvalidEvent, decode_event
from pitlane.domain.profile import State
from pitlane.domain.routing import Unroutable, keys_for
from pitlane.ingest import OutMessage, trigger_messages
from pitlane.settings import Settings
from pitlane.topics import Topics

States = MutableMapping[EntityKey, State | None]


class EventWork:
    """The domain steps of one event, configured like a pitlane worker.

    Build it from the same `Settings` (`PITLANE_*` environment) the pitlane worker of
    the same benchmark run uses, so rules, windows and the clock mode agree.
    """

    def __init__(self, settings: Settings, topics: Topics) -> None:
        self.settings = settings
        self._salt = settings.erasure_salt.get_secret_value()
        self._event_clock = settings.clock == "event"
        self._topics = topics
        self._watermark: float | None = None

    def decode(self, raw: bytes | None, topic: str) -> InputEvent | None:
        """The event, or None for a record pitlane would dead-letter (invalid, unroutable)."""
        try:
            event = decode_event(raw or b"", topic)
            keys_for(event, {}, self._salt)
        except (InvalidEvent, Unroutable):
            return None
        return event

    def missing(self, event: InputEvent, states: States) -> list[EntityKey]:
        """Entities routing names that are not loaded yet; load them and ask again."""
        return [key for key in keys_for(event, states, self._salt) if key not in states]

    def apply(self, event: InputEvent, states: States) -> tuple[set[EntityKey], list[EntityKey]]:
        """Apply `event`; returns the entities it changed and the ones to decide for."""
        changed = apply(event, states, self.settings).changed
        touched = [key for key in changed if key.kind in ("customer", "vehicle")]
        return changed, touched

    def owners_missing(self, states: States, touched: list[EntityKey]) -> list[EntityKey]:
        """Vehicle owners (and their erasure markers) `decide` needs that are not loaded."""
        owners = decision_keys(states, touched)
        needed = [*owners, *(erased_marker(owner.id, self._salt) for owner in owners)]
        return [key for key in dict.fromkeys(needed) if key not in states]

    def decide(self, event: InputEvent, states: States, touched: list[EntityKey]) -> Decisions:
        """Decide for `touched` at the wall clock, or at the watermark in event-clock mode.

        The watermark is this process's largest event time so far, less the allowed
        lateness, as pitlane's worker computes it from the batches it applied.
        """
        occurred = event.occurred_at.timestamp()
        if self._watermark is None or occurred > self._watermark:
            self._watermark = occurred
        if self._event_clock:
            at = self._watermark - self.settings.allowed_lateness_s
        else:
            at = time.time()
        return decide(states, touched, at, self.settings, self._event_clock)

    def outputs(self, decisions: Decisions) -> list[OutMessage]:
        """The trigger and held-back-trigger messages pitlane would publish for `decisions`."""
        return trigger_messages(decisions, self._topics)

    def ttl_s(self, key: EntityKey) -> int:
        """Seconds an entity's key lives in Redis; 0 for no expiry (as pitlane sets it)."""
        return self.settings.anonymous_ttl_s if key.kind == "anonymous" else 0

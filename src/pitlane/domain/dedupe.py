"""Which events an entity has applied: how a redelivered event changes nothing.

Two memories, because duplicates come from two places:

- `seen`, the newest `dedupe_ids` event tags: an upstream producer that retries
  publishes the same event again at a new offset, usually close behind the first.
- `pend`, the tags of every event applied from an input offset the consumer group
  has not committed yet, per input partition. After a crash or a rebalance Kafka
  redelivers everything from the committed offset on, and one batch alone can hold
  more events of one customer than any fixed window keeps (a burst of clicks). A
  bounded window would forget the oldest of them, and each re-applied event would
  push the next out of the window in turn. `pend` forgets an entry only once its
  offset is committed, when it can no longer come back, so it stays as small as the
  uncommitted part of the log.

The event clock needs only `seen`: its input positions are stored with the state it
produced, so nothing it applied is read again (`pitlane.event_clock`).
"""

from __future__ import annotations

from collections.abc import Mapping

from pitlane.domain.profile import State

Position = tuple[str, int]
"""Where an event was read from: (`partition_name`, offset)."""


def partition_name(topic: str, partition: int) -> str:
    """How an input partition is named wherever one is stored or reported."""
    return f"{topic}:{partition}"


def already_applied(state: State, tag: str) -> bool:
    """True when the entity has applied the event with this tag."""
    if tag in state["seen"]:
        return True
    pend: dict[str, dict[str, int]] | None = state.get("pend")
    if pend is not None:
        for tags in pend.values():  # a loop, not any(): no generator per call
            if tag in tags:
                return True
    return False


def remember(state: State, tag: str, position: Position | None, keep: int) -> None:
    """Record that the entity applied the event `tag`, read at `position` if known."""
    seen: list[str] = state["seen"]
    seen.append(tag)
    if len(seen) > keep:
        del seen[: len(seen) - keep]
    if position is not None:
        partition, offset = position
        state.setdefault("pend", {}).setdefault(partition, {})[tag] = offset


def settle(state: State, committed: Mapping[str, int]) -> None:
    """Forget the pending events below the offsets `committed` per partition.

    Partitions missing from `committed` are left alone: the worker that owns them
    settles them the next time it writes this entity.
    """
    pend: dict[str, dict[str, int]] | None = state.get("pend")
    if not pend:
        return
    for partition in [p for p in pend if p in committed]:
        floor = committed[partition]
        kept = {tag: offset for tag, offset in pend[partition].items() if offset >= floor}
        if kept:
            pend[partition] = kept
        else:
            del pend[partition]
    if not pend:
        del state["pend"]


def merge(target: State, source: State, keep: int) -> None:
    """Make `target` remember everything `source` applied (an identified visitor's
    events then route to the customer, and must still be recognised there)."""
    seen: list[str] = target["seen"]
    seen.extend(tag for tag in source["seen"] if tag not in seen)
    del seen[: max(0, len(seen) - keep)]
    for partition, tags in source.get("pend", {}).items():
        target.setdefault("pend", {}).setdefault(partition, {}).update(tags)

"""Entity state in a Redis Cluster: the same keys and script, one slot per call.

Redis Cluster refuses a command whose keys hash to different slots, so the
single-node store's one MGET and one compare-and-set per batch become one MGET per
slot (pipelined: one round trip per node) and one compare-and-set per slot. Writes
are then no longer all-or-nothing across entities; what keeps a crash between them
harmless is their order, each step one pipelined round trip:

1. deadlines first: a state written without its deadline would be a duplicate on
   redelivery and never be decided again, while a deadline without its state is
   only decided early, finds nothing due and re-arms;
2. entity states by `Write.phase` (entities reached through another's state before
   that other, see `routing.write_phases`), each entity still compare-and-set;
3. the event-time watermark last, which only moves forward.

A version conflict stops the write at the step it happens in; the batch is re-read
and re-applied, and the entities already written skip the events they applied.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import NoScriptError

from pitlane.adapters.redis_store import (
    CLAIM_DUE,
    COMPARE_AND_SET,
    RedisStore,
    VersionConflict,
    Write,
    compare_and_set_arguments,
    redis_key,
    timer_member,
    timer_shard,
)
from pitlane.domain.entities import EntityKey

_Call = tuple[list[str], list[Any], Sequence[Write]]
"""KEYS and ARGV of one compare-and-set, with the writes it carries (for conflicts)."""


class RedisClusterStore(RedisStore):
    """`RedisStore` over a Redis Cluster; the URL names any one of its nodes."""

    splits_writes = True
    _sha = ""

    async def start(self) -> None:
        """Connect, discover the slots, and load the script on every primary."""
        client = RedisCluster.from_url(
            self._url, decode_responses=False, socket_timeout=10, socket_connect_timeout=5
        )
        self._redis = client
        await client.initialize()
        self._sha = await client.script_load(COMPARE_AND_SET)
        self._claim = client.register_script(CLAIM_DUE)

    @property
    def cluster(self) -> RedisCluster:
        """The cluster client; only after `start()`."""
        client = self.redis
        assert isinstance(client, RedisCluster)
        return client

    async def _mget(self, names: list[str]) -> list[Any]:
        """One MGET per slot, one round trip per node."""
        return await self.cluster.mget_nonatomic(names)

    async def write(
        self,
        writes: Iterable[Write],
        deadlines: Mapping[EntityKey, float | None] | None = None,
        marks: Mapping[str, float] | None = None,
    ) -> None:
        """Store deadlines, then states phase by phase, then marks (see the module)."""
        batch = list(writes)
        shards: dict[str, list[tuple[EntityKey, float | None]]] = {}
        for entity, deadline in sorted((deadlines or {}).items()):
            shard = timer_shard(timer_member(entity), self._shards)
            shards.setdefault(shard, []).append((entity, deadline))
        steps: list[list[_Call]] = [
            [
                (*compare_and_set_arguments([], timers, {}, self._shards), [])
                for timers in shards.values()
            ]
        ]
        for phase in sorted({w.phase for w in batch}):
            slots: dict[int, list[Write]] = {}
            for w in batch:
                if w.phase == phase:
                    slots.setdefault(key_slot(redis_key(w.key).encode()), []).append(w)
            steps.append(
                [
                    (*compare_and_set_arguments(ws, [], {}, self._shards), ws)
                    for ws in slots.values()
                ]
            )
        if marks:
            steps.append([(*compare_and_set_arguments([], [], marks, self._shards), [])])
        for calls in steps:
            if calls:
                await self._compare_and_set(calls)

    async def _compare_and_set(self, calls: list[_Call]) -> None:
        """Run `calls` in one pipeline; raise VersionConflict for the first that lost."""
        results: list[Any] = []
        for attempt in range(2):
            pipe = self.cluster.pipeline()
            for keys, args, _ in calls:
                pipe.execute_command("EVALSHA", self._sha, len(keys), *keys, *args)
            try:
                results = await pipe.execute()
                break
            except NoScriptError:
                if attempt:
                    raise
                # A primary that took over after a failover may not have the script yet.
                self._sha = await self.cluster.script_load(COMPARE_AND_SET)
        for (_, _, ws), result in zip(calls, results, strict=True):
            if result:
                raise VersionConflict(ws[int(result[0]) - 1].key)

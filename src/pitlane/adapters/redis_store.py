"""Entity state in Redis: one key per entity, read and written a batch at a time.

Keys carry one hash tag per entity (`pitlane:cust:{C123}:profile`), so each lives in a
single Redis Cluster slot. A value is `<version>|<json>`; a batch is read with one MGET
and written with one Lua call that checks every version it read and writes only if
none moved (compare-and-set), so two workers that touch the same customer never lose
each other's update: the loser re-reads and re-applies.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson
import redis.asyncio as aioredis

from pitlane.domain.entities import EntityKey
from pitlane.domain.profile import State

_PREFIX = {"customer": "cust", "anonymous": "anon", "vehicle": "veh", "erased": "erased"}
_SUFFIX = {"customer": ":profile", "anonymous": ":profile", "vehicle": ":state", "erased": ""}

# KEYS: n entities, then m timer shards, then the watermark hash.
# ARGV: n, m; per entity (expected version, new value or "" to delete, ttl s); per timer
# (member, deadline or "" to drop); then pairs (partition, largest event time seen).
# All-or-nothing: the first moved version aborts the whole write and is reported, so
# state, deadlines and watermark always move together.
_COMPARE_AND_SET = """
local n, m = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 1, n do
  local current = redis.call('GET', KEYS[i])
  local version = '0'
  if current then version = string.match(current, '^(%d+)|') or 'x' end
  if version ~= ARGV[3 * i] then return {i} end
end
for i = 1, n do
  local value = ARGV[3 * i + 1]
  local ttl = tonumber(ARGV[3 * i + 2])
  if value == '' then
    redis.call('DEL', KEYS[i])
  elseif ttl > 0 then
    redis.call('SET', KEYS[i], value, 'EX', ttl)
  else
    redis.call('SET', KEYS[i], value)
  end
end
local base = 3 * n + 2
for j = 1, m do
  local member, deadline = ARGV[base + 2 * j - 1], ARGV[base + 2 * j]
  if deadline == '' then
    redis.call('ZREM', KEYS[n + j], member)
  else
    redis.call('ZADD', KEYS[n + j], deadline, member)
  end
end
local marks = KEYS[n + m + 1]
for k = base + 2 * m + 1, #ARGV, 2 do
  local current = redis.call('HGET', marks, ARGV[k])
  if not current or tonumber(ARGV[k + 1]) > tonumber(current) then
    redis.call('HSET', marks, ARGV[k], ARGV[k + 1])
  end
end
return {}
"""

# KEYS[1]: a timer shard. ARGV: now, lease s, limit. Takes the due members and pushes
# them `lease` into the future, so no other worker takes them while this one decides;
# deciding re-arms or drops them, and a worker that dies lets the lease run out.
_CLAIM_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local lease = tonumber(ARGV[1]) + tonumber(ARGV[2])
for _, member in ipairs(due) do redis.call('ZADD', KEYS[1], lease, member) end
return due
"""

WATERMARKS_KEY = "pitlane:watermarks"
"""Hash of input partition -> largest event time applied from it (event-clock mode)."""


def redis_key(key: EntityKey) -> str:
    """The Redis key of an entity, hash-tagged on the entity's own id."""
    return f"pitlane:{_PREFIX[key.kind]}:{{{key.id}}}{_SUFFIX[key.kind]}"


def timer_member(key: EntityKey) -> str:
    """How an entity is named in the deadline index."""
    return f"{key.kind}:{key.id}"


def timer_entity(member: str) -> EntityKey:
    """The entity a deadline-index member names."""
    kind, _, entity_id = member.partition(":")
    return EntityKey(kind, entity_id)  # type: ignore[arg-type]


def timer_shard(member: str, shards: int) -> str:
    """The sorted set holding `member`'s deadline: a stable hash spreads entities."""
    return timer_shard_key(zlib.crc32(member.encode()) % shards)


def timer_shard_key(shard: int) -> str:
    """The key of one deadline-index shard, its own Redis Cluster slot."""
    return f"pitlane:timers:{{{shard}}}"


@dataclass(frozen=True, slots=True)
class Loaded:
    """An entity as read: its version (0 when absent) and its state (None when absent)."""

    version: int
    state: State | None


@dataclass(frozen=True, slots=True)
class Write:
    """A state to store (None deletes) if the entity is still at `expected_version`."""

    key: EntityKey
    expected_version: int
    state: State | None
    ttl_s: int = 0


class VersionConflict(Exception):
    """Another worker changed an entity between this batch's read and its write."""

    def __init__(self, key: EntityKey) -> None:
        super().__init__(f"{key.kind} {key.id!r} changed concurrently")
        self.key = key


def decode(raw: bytes | str | None) -> Loaded:
    """A stored value back into version and state."""
    if raw is None:
        return Loaded(0, None)
    if isinstance(raw, str):
        raw = raw.encode()
    version, _, body = raw.partition(b"|")
    return Loaded(int(version), cast(State, orjson.loads(body)))


def encode(version: int, state: State) -> bytes:
    """The stored form of `state` at `version`."""
    return b"%d|%b" % (version, orjson.dumps(state))


class RedisStore:
    """Batch reads and atomic batch writes of entity state, deadlines and watermark.

    Connects in `start()`, never on construction, so building the worker has no side
    effects.
    """

    def __init__(self, url: str, timer_shards: int = 16) -> None:
        self._url = url
        self._shards = timer_shards
        self._redis: aioredis.Redis | None = None
        self._cas: Any = None
        self._claim: Any = None

    @property
    def redis(self) -> aioredis.Redis:
        """The connection; only after `start()`."""
        if self._redis is None:
            raise RuntimeError("RedisStore used before start()")
        return self._redis

    async def start(self) -> None:
        """Connect and register the scripts."""
        self._redis = aioredis.Redis.from_url(
            self._url,
            decode_responses=False,
            health_check_interval=30,
            socket_timeout=10,
            socket_connect_timeout=5,
        )
        self._cas = self._redis.register_script(_COMPARE_AND_SET)
        self._claim = self._redis.register_script(_CLAIM_DUE)
        await self._redis.ping()

    async def close(self) -> None:
        """Release the connection pool."""
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def load(self, keys: Sequence[EntityKey]) -> dict[EntityKey, Loaded]:
        """Every entity in `keys`, in one round trip."""
        if not keys:
            return {}
        raws = await self.redis.mget([redis_key(k) for k in keys])
        return {key: decode(raw) for key, raw in zip(keys, raws, strict=True)}

    async def write(
        self,
        writes: Iterable[Write],
        deadlines: Mapping[EntityKey, float | None] | None = None,
        marks: Mapping[str, float] | None = None,
    ) -> None:
        """Store states, deadlines and partition marks atomically, or raise VersionConflict.

        A None deadline drops the entity from the deadline index; `marks` (partition ->
        largest event time applied) only ever move forward.
        """
        batch = list(writes)
        timers = sorted((deadlines or {}).items())
        if not batch and not timers and not marks:
            return
        keys = [redis_key(w.key) for w in batch]
        args: list[bytes | int | float | str] = [len(batch), len(timers)]
        for w in batch:
            value = b"" if w.state is None else encode(w.expected_version + 1, w.state)
            args.extend((w.expected_version, value, w.ttl_s))
        for key, deadline in timers:
            member = timer_member(key)
            keys.append(timer_shard(member, self._shards))
            args.extend((member, "" if deadline is None else repr(deadline)))
        keys.append(WATERMARKS_KEY)
        for partition, mark in sorted((marks or {}).items()):
            args.extend((partition, repr(mark)))
        result = await self._cas(keys=keys, args=args)
        if result:
            raise VersionConflict(batch[int(result[0]) - 1].key)

    async def claim_due(self, now: float, lease_s: float, limit: int) -> list[EntityKey]:
        """Entities whose deadline has passed at `now`, leased to this caller."""
        claimed: list[EntityKey] = []
        for shard in range(self._shards):
            members = await self._claim(
                keys=[timer_shard_key(shard)], args=[repr(now), repr(lease_s), limit]
            )
            claimed.extend(timer_entity(m.decode()) for m in members)
        return claimed

    async def partition_marks(self) -> dict[str, float]:
        """Largest event time applied per input partition, by every worker."""
        raw = await self.redis.hgetall(WATERMARKS_KEY)
        return {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}

    async def deadline(self, key: EntityKey) -> float | None:
        """The armed deadline of one entity (for tools and tests)."""
        member = timer_member(key)
        score = await self.redis.zscore(timer_shard(member, self._shards), member)
        return None if score is None else float(score)

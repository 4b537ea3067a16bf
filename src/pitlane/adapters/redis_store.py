"""Entity state in Redis: one key per entity, read and written a batch at a time.

Keys carry one hash tag per entity (`pitlane:cust:{C123}:profile`), so each lives in a
single Redis Cluster slot. A value is `<version>|<json>`; a batch is read with one MGET
and written with one Lua call that checks every version it read and writes only if
none moved (compare-and-set), so two workers that touch the same customer never lose
each other's update: the loser re-reads and re-applies.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson
import redis.asyncio as aioredis

from pitlane.domain.entities import EntityKey
from pitlane.domain.profile import State

_PREFIX = {"customer": "cust", "anonymous": "anon", "vehicle": "veh", "erased": "erased"}
_SUFFIX = {"customer": ":profile", "anonymous": ":profile", "vehicle": ":state", "erased": ""}

# KEYS: the entities; ARGV: per key (expected version, new value or "" to delete, ttl s).
# All-or-nothing: the first moved version aborts the whole write and is reported.
_COMPARE_AND_SET = """
for i, key in ipairs(KEYS) do
  local current = redis.call('GET', key)
  local version = '0'
  if current then version = string.match(current, '^(%d+)|') or 'x' end
  if version ~= ARGV[3 * i - 2] then return {i} end
end
for i, key in ipairs(KEYS) do
  local value = ARGV[3 * i - 1]
  local ttl = tonumber(ARGV[3 * i])
  if value == '' then
    redis.call('DEL', key)
  elseif ttl > 0 then
    redis.call('SET', key, value, 'EX', ttl)
  else
    redis.call('SET', key, value)
  end
end
return {}
"""


def redis_key(key: EntityKey) -> str:
    """The Redis key of an entity, hash-tagged on the entity's own id."""
    return f"pitlane:{_PREFIX[key.kind]}:{{{key.id}}}{_SUFFIX[key.kind]}"


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
    """Batch reads and atomic batch writes of entity state.

    Connects in `start()`, never on construction, so building the worker has no side
    effects.
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self._redis: aioredis.Redis | None = None
        self._cas: Any = None

    @property
    def redis(self) -> aioredis.Redis:
        """The connection; only after `start()`."""
        if self._redis is None:
            raise RuntimeError("RedisStore used before start()")
        return self._redis

    async def start(self) -> None:
        """Connect and register the compare-and-set script."""
        self._redis = aioredis.Redis.from_url(
            self._url, decode_responses=False, health_check_interval=30
        )
        self._cas = self._redis.register_script(_COMPARE_AND_SET)
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

    async def write(self, writes: Iterable[Write]) -> None:
        """Store every write atomically, or raise VersionConflict and store none."""
        batch = list(writes)
        if not batch:
            return
        args: list[bytes | int] = []
        for w in batch:
            value = b"" if w.state is None else encode(w.expected_version + 1, w.state)
            args.extend((w.expected_version, value, w.ttl_s))
        result = await self._cas(keys=[redis_key(w.key) for w in batch], args=args)
        if result:
            raise VersionConflict(batch[int(result[0]) - 1].key)

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
from typing import Any, NamedTuple, cast
from urllib.parse import urlsplit

import orjson
import redis.asyncio as aioredis
from mypy_extensions import mypyc_attr
from redis.asyncio.cluster import RedisCluster

from pitlane.adapters.redis_connection import HiredisPackingConnection
from pitlane.domain.entities import EntityKey
from pitlane.domain.profile import State
from pitlane.settings import Settings

_PREFIX = {"customer": "cust", "anonymous": "anon", "vehicle": "veh", "erased": "erased"}
_SUFFIX = {"customer": ":profile", "anonymous": ":profile", "vehicle": ":state", "erased": ""}

# KEYS: n entities, then the timer shards used, then the watermark hash (if marks).
# ARGV[1]: n. ARGV[2], [3], [4]: per entity, comma-separated: expected version, TTL
# (0 = none), byte length of the new value (-1 = delete). ARGV[5]: the new values,
# concatenated. ARGV[6]: timer members, separated by 0x1f (ASCII unit separator).
# ARGV[7]: per member "shard-key-index deadline" ("index" alone = drop), comma-separated.
# ARGV[8]: watermark "partition mark" pairs, separated by 0x1f.
# Packing many values into few arguments keeps the client from encoding thousands of
# arguments per batch. All-or-nothing: the first moved version aborts the whole write
# and is reported, so state, deadlines and watermark always move together.
COMPARE_AND_SET = """
local n = tonumber(ARGV[1])
local function split(text, sep)
  local parts = {}
  if text == '' then return parts end
  for part in string.gmatch(text .. sep, '(.-)' .. sep) do parts[#parts + 1] = part end
  return parts
end
local versions, ttls, lengths = split(ARGV[2], ','), split(ARGV[3], ','), split(ARGV[4], ',')
for i = 1, n do
  local current = redis.call('GET', KEYS[i])
  local version = '0'
  if current then version = string.match(current, '^(%d+)|') or 'x' end
  if version ~= versions[i] then return {i} end
end
local offset = 1
for i = 1, n do
  local length = tonumber(lengths[i])
  if length < 0 then
    redis.call('DEL', KEYS[i])
  else
    local value = string.sub(ARGV[5], offset, offset + length - 1)
    offset = offset + length
    local ttl = tonumber(ttls[i])
    if ttl > 0 then
      redis.call('SET', KEYS[i], value, 'EX', ttl)
    else
      redis.call('SET', KEYS[i], value)
    end
  end
end
local members, timers = split(ARGV[6], '\\31'), split(ARGV[7], ',')
for j, member in ipairs(members) do
  local shard, deadline = string.match(timers[j], '^(%d+) ?(.*)$')
  if deadline == '' then
    redis.call('ZREM', KEYS[tonumber(shard)], member)
  else
    redis.call('ZADD', KEYS[tonumber(shard)], deadline, member)
  end
end
local marks = KEYS[#KEYS]
for _, pair in ipairs(split(ARGV[8], '\\31')) do
  local partition, mark = string.match(pair, '^(.*) (%S+)$')
  local current = redis.call('HGET', marks, partition)
  if not current or tonumber(mark) > tonumber(current) then
    redis.call('HSET', marks, partition, mark)
  end
end
return {}
"""

# KEYS[1]: a timer shard. ARGV: now, lease s, limit. Takes the due members and pushes
# them `lease` into the future, so no other worker takes them while this one decides;
# deciding re-arms or drops them, and a worker that dies lets the lease run out.
CLAIM_DUE = """
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


def compare_and_set_arguments(
    batch: Sequence[Write],
    timers: Sequence[tuple[EntityKey, float | None]],
    marks: Mapping[str, float],
    shards: int,
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of one `COMPARE_AND_SET` call; the marks hash is named only when
    there are marks, so a call can be confined to one Redis Cluster slot."""
    values = [b"" if w.state is None else encode(w.expected_version + 1, w.state) for w in batch]
    shard_index: dict[str, int] = {}
    members: list[str] = []
    timer_args: list[str] = []
    for key, deadline in timers:
        member = timer_member(key)
        shard = timer_shard(member, shards)
        index = shard_index.setdefault(shard, len(batch) + len(shard_index) + 1)
        members.append(member)
        timer_args.append(f"{index}" if deadline is None else f"{index} {deadline!r}")
    keys = [*(redis_key(w.key) for w in batch), *shard_index]
    if marks:
        keys.append(WATERMARKS_KEY)
    args = [
        len(batch),
        ",".join(str(w.expected_version) for w in batch),
        ",".join(str(w.ttl_s) for w in batch),
        ",".join(
            "-1" if w.state is None else str(len(v)) for w, v in zip(batch, values, strict=True)
        ),
        b"".join(values),
        "\x1f".join(members),
        ",".join(timer_args),
        "\x1f".join(f"{p} {m!r}" for p, m in sorted(marks.items())),
    ]
    return keys, args


class Loaded(NamedTuple):
    """An entity as read: its version (0 when absent) and its state (None when absent).

    This and `Write` are NamedTuples, built once per entity per batch: a frozen
    dataclass's `__init__` calls `object.__setattr__` for every field.
    """

    version: int
    state: State | None


class Write(NamedTuple):
    """A state to store (None deletes) if the entity is still at `expected_version`.

    `phase` orders writes that cannot be atomic (Redis Cluster): lower phases are
    written first. The single-node store writes every phase in one call.
    """

    key: EntityKey
    expected_version: int
    state: State | None
    ttl_s: int = 0
    phase: int = 0


class VersionConflict(Exception):
    """Another worker changed an entity between this batch's read and its write."""

    def __init__(self, key: EntityKey) -> None:
        super().__init__(f"{key.kind} {key.id!r} changed concurrently")
        self.key = key


_ABSENT = Loaded(0, None)
"""What every missing key decodes to (most erasure markers): one shared value."""


def decode(raw: bytes | str | None) -> Loaded:
    """A stored value back into version and state."""
    if raw is None:
        return _ABSENT
    if isinstance(raw, str):
        raw = raw.encode()
    version, _, body = raw.partition(b"|")
    return Loaded(int(version), cast(State, orjson.loads(body)))


def encode(version: int, state: State) -> bytes:
    """The stored form of `state` at `version`."""
    return b"%d|%b" % (version, orjson.dumps(state))


@mypyc_attr(allow_interpreted_subclasses=True)
class RedisStore:
    """Batch reads and atomic batch writes of entity state, deadlines and watermark.

    Connects in `start()`, never on construction, so building the worker has no side
    effects. It may be subclassed (fault injection in tests, instrumentation) also
    when compiled, hence the mypyc attribute.
    """

    splits_writes = False
    """True when a write is not atomic across entities, so `Write.phase` matters."""

    def __init__(self, url: str, timer_shards: int = 16) -> None:
        self._url = url
        self._shards = timer_shards
        self._redis: aioredis.Redis | RedisCluster | None = None
        self._cas: Any = None
        self._claim: Any = None

    @property
    def redis(self) -> aioredis.Redis | RedisCluster:
        """The client; only after `start()`."""
        if self._redis is None:
            raise RuntimeError("RedisStore used before start()")
        return self._redis

    async def start(self) -> None:
        """Connect and register the scripts."""
        # TLS and unix-socket URLs bring connection classes of their own; keep those.
        options: dict[str, Any] = {}
        if urlsplit(self._url).scheme == "redis":
            options["connection_class"] = HiredisPackingConnection
        client = aioredis.Redis.from_url(
            self._url,
            **options,
            decode_responses=False,
            health_check_interval=30,
            socket_timeout=10,
            socket_connect_timeout=5,
        )
        self._redis = client
        self._cas = client.register_script(COMPARE_AND_SET)
        self._claim = client.register_script(CLAIM_DUE)
        await client.ping()

    async def close(self) -> None:
        """Release the connection pool."""
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def load(self, keys: Sequence[EntityKey]) -> dict[EntityKey, Loaded]:
        """Every entity in `keys`, in one round trip."""
        if not keys:
            return {}
        raws = await self._mget([redis_key(k) for k in keys])
        return {key: decode(raw) for key, raw in zip(keys, raws, strict=True)}

    async def _mget(self, names: list[str]) -> list[Any]:
        return await self.redis.mget(names)

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
        keys, args = compare_and_set_arguments(batch, timers, marks or {}, self._shards)
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


def make_store(settings: Settings) -> RedisStore:
    """The store `settings` ask for: one Redis primary, or a Redis Cluster."""
    url = settings.redis_url.get_secret_value()
    if settings.redis_cluster:
        from pitlane.adapters.redis_cluster_store import RedisClusterStore

        return RedisClusterStore(url, settings.timer_shards)
    return RedisStore(url, settings.timer_shards)

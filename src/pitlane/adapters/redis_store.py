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

# KEYS: n entities, then the timer shards used, then the extra keys ARGV[8] places.
# ARGV[1]: n. ARGV[2], [3], [4]: per entity, comma-separated: expected version, TTL
# (0 = none), byte length of the new value (-1 = delete). ARGV[5]: the new values,
# concatenated. ARGV[6]: timer members, separated by 0x1f (ASCII unit separator).
# ARGV[7]: per member "shard-key-index deadline" ("index" alone = drop), comma-separated.
# ARGV[8]: where in KEYS the positions hash, the clock lease, the outbox, its lease
# index and its owners are, comma-separated (0 = not named). ARGV[9]: the lease token the writer
# holds (checked when the lease is named: a worker that lost it writes nothing).
# ARGV[10]: positions, "partition 0x1e encoded" pairs separated by 0x1f. ARGV[11],
# [12], [13], [14]: an outbox entry to add (id, messages, lease expiry, owner; '' =
# none).
# Packing many values into few arguments keeps the client from encoding thousands of
# arguments per batch. All-or-nothing: the first moved version aborts the whole write
# and is reported ({i}; {0}: the lease is lost), so state, deadlines, positions and
# outbox always move together.
COMPARE_AND_SET = """
local n = tonumber(ARGV[1])
local function split(text, sep)
  local parts = {}
  if text == '' then return parts end
  for part in string.gmatch(text .. sep, '(.-)' .. sep) do parts[#parts + 1] = part end
  return parts
end
local at = {}
for i, index in ipairs(split(ARGV[8], ',')) do at[i] = tonumber(index) end
if at[2] > 0 and redis.call('GET', KEYS[at[2]]) ~= ARGV[9] then return {0} end
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
for _, pair in ipairs(split(ARGV[10], '\\31')) do
  local partition, position = string.match(pair, '^(.-)\\30(.*)$')
  redis.call('HSET', KEYS[at[1]], partition, position)
end
if ARGV[11] ~= '' then
  redis.call('HSET', KEYS[at[3]], ARGV[11], ARGV[12])
  redis.call('ZADD', KEYS[at[4]], ARGV[13], ARGV[11])
  redis.call('HSET', KEYS[at[5]], ARGV[11], ARGV[14])
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

# KEYS: the outbox, its lease index, its owners. ARGV: lease expiry up to which to
# take, the new expiry, limit, the taker. Takes the entries whose owner neither
# published nor renewed them in time (it died), leased to and owned by the taker.
CLAIM_OUTBOX = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local taken = {}
for _, id in ipairs(ids) do
  local messages = redis.call('HGET', KEYS[1], id)
  if messages then
    redis.call('ZADD', KEYS[2], ARGV[2], id)
    redis.call('HSET', KEYS[3], id, ARGV[4])
    taken[#taken + 1] = id
    taken[#taken + 1] = messages
  else
    redis.call('ZREM', KEYS[2], id)
  end
end
return taken
"""

# KEYS: the outbox's lease index, its owners. ARGV: the owner, the new expiry, then
# entry ids. Renews the lease of the entries the caller still owns, and names them:
# one another worker took over is no longer the caller's to publish.
RENEW_OUTBOX = """
local owned = {}
for i = 3, #ARGV do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[1] then
    redis.call('ZADD', KEYS[1], ARGV[2], ARGV[i])
    owned[#owned + 1] = ARGV[i]
  end
end
return owned
"""

# KEYS[1]: the clock lease. ARGV: token, lease ms, 1 to take it if free (0 to renew
# only: a lease that ran out may have served another holder since). 1 when the caller
# holds it afterwards.
HOLD_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder ~= ARGV[1] and (holder or ARGV[3] == '0') then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS[1]: the clock lease. ARGV[1]: token. Gives the lease up if the caller holds it.
DROP_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""

POSITIONS_KEY = "pitlane:clock:{clock}:positions"
"""Hash of input partition -> its event-clock `Position` (see `pitlane.event_clock`)."""
LEASE_KEY = "pitlane:clock:{clock}:leader"
"""Token of the one worker applying events in event-clock mode, with its lease."""
OUTBOX_KEY = "pitlane:outbox:{outbox}"
"""Hash of outbox entry id -> the messages a write decided, until they are published."""
OUTBOX_LEASES_KEY = "pitlane:outbox:{outbox}:leases"
"""Sorted set of outbox entry id -> when its owner's claim on it runs out."""
OUTBOX_OWNERS_KEY = "pitlane:outbox:{outbox}:owners"
"""Hash of outbox entry id -> the worker that is to publish it (its writer, or the
worker that took it over)."""
_OUTBOX_KEYS = [OUTBOX_KEY, OUTBOX_LEASES_KEY, OUTBOX_OWNERS_KEY]


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


class OutboxEntry(NamedTuple):
    """Messages a write decided, stored with it and published after it.

    `id` names the entry (one per write attempt), `messages` is their encoded form
    (`ingest.pack_messages`), `owner` the worker that publishes them, and `lease_until`
    (epoch seconds) when another worker may take them over if it has not by then.
    """

    id: str
    messages: bytes
    lease_until: float
    owner: str


class Fence(NamedTuple):
    """The lease a write is only valid under: its key and the token of its holder."""

    key: str
    token: str


def compare_and_set_arguments(
    batch: Sequence[Write],
    timers: Sequence[tuple[EntityKey, float | None]],
    shards: int,
    positions: Mapping[str, bytes] | None = None,
    fence: Fence | None = None,
    outbox: OutboxEntry | None = None,
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of one `COMPARE_AND_SET` call; the positions hash, lease and
    outbox are named only when used, so a call can be confined to one Redis Cluster
    slot."""
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
    extras = [
        POSITIONS_KEY if positions else None,
        fence.key if fence else None,
        *(_OUTBOX_KEYS if outbox else (None, None, None)),
    ]
    places = []
    for extra in extras:
        if extra is not None:
            keys.append(extra)
        places.append(0 if extra is None else len(keys))
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
        ",".join(map(str, places)),
        fence.token if fence else "",
        b"\x1f".join(b"%s\x1e%s" % (p.encode(), v) for p, v in sorted((positions or {}).items())),
        *(
            (outbox.id, outbox.messages, repr(outbox.lease_until), outbox.owner)
            if outbox
            else ("", "", "", "")
        ),
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
    """Another worker changed an entity between this batch's read and its write.

    `partial` is True when some states of the write were stored nonetheless (a Redis
    Cluster writes node by node); on one primary nothing is.
    """

    def __init__(self, key: EntityKey, partial: bool = False) -> None:
        super().__init__(f"{key.kind} {key.id!r} changed concurrently")
        self.key = key
        self.partial = partial


class LeaseLost(Exception):
    """A write under a fence whose lease another worker holds now: nothing was written."""


def raise_conflict(batch: Sequence[Write], result: int, partial: bool = False) -> None:
    """Raise what a `COMPARE_AND_SET` reply other than success means."""
    if result == 0:
        raise LeaseLost("the event-clock lease is held by another worker")
    raise VersionConflict(batch[result - 1].key, partial)


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
    """Batch reads and atomic batch writes of entity state, deadlines, positions, outbox.

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
        self._claim_outbox: Any = None
        self._renew_outbox: Any = None
        self._hold: Any = None
        self._drop: Any = None

    def _register_shared_scripts(self, client: aioredis.Redis | RedisCluster) -> None:
        """Scripts over keys of one slot, which a cluster client runs like any other."""
        self._claim = client.register_script(CLAIM_DUE)
        self._claim_outbox = client.register_script(CLAIM_OUTBOX)
        self._renew_outbox = client.register_script(RENEW_OUTBOX)
        self._hold = client.register_script(HOLD_LEASE)
        self._drop = client.register_script(DROP_LEASE)

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
        self._register_shared_scripts(client)
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
        *,
        positions: Mapping[str, bytes] | None = None,
        fence: Fence | None = None,
        outbox: OutboxEntry | None = None,
    ) -> None:
        """Store states, deadlines, event-clock positions and an outbox entry
        atomically, or raise VersionConflict (or LeaseLost, under a `fence` no longer
        held) and store nothing. A None deadline drops the entity from the index."""
        batch = list(writes)
        timers = sorted((deadlines or {}).items())
        if not batch and not timers and not positions and not outbox:
            return
        keys, args = compare_and_set_arguments(
            batch, timers, self._shards, positions, fence, outbox
        )
        result = await self._cas(keys=keys, args=args)
        if result:
            raise_conflict(batch, int(result[0]))

    async def claim_due(self, now: float, lease_s: float, limit: int) -> list[EntityKey]:
        """Entities whose deadline has passed at `now`, leased to this caller."""
        claimed: list[EntityKey] = []
        for shard in range(self._shards):
            members = await self._claim(
                keys=[timer_shard_key(shard)], args=[repr(now), repr(lease_s), limit]
            )
            claimed.extend(timer_entity(m.decode()) for m in members)
        return claimed

    async def due(self, at: float, limit: int) -> list[tuple[EntityKey, float]]:
        """The `limit` earliest deadlines at or before `at`, earliest first, untouched:
        for the one worker that applies in event time (`claim_due` leases instead)."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in range(self._shards):
            pipe.zrangebyscore(
                timer_shard_key(shard), "-inf", repr(at), start=0, num=limit, withscores=True
            )
        replies: list[list[tuple[bytes, float]]] = await pipe.execute()
        found = sorted(
            (float(score), member.decode()) for members in replies for member, score in members
        )
        return [(timer_entity(member), score) for score, member in found[:limit]]

    async def hold_lease(self, key: str, token: str, lease_s: float, take: bool) -> bool:
        """Renew the lease `key` that `token` holds, or with `take` also take it when
        free; False when another holds it (or, renewing, when it ran out)."""
        return bool(await self._hold(keys=[key], args=[token, int(lease_s * 1000), int(take)]))

    async def drop_lease(self, key: str, token: str) -> None:
        """Give the lease up, if `token` holds it, so a standby takes over at once."""
        await self._drop(keys=[key], args=[token])

    async def positions(self) -> dict[str, bytes]:
        """Every input partition's stored event-clock position, encoded."""
        raw = cast(dict[bytes, bytes], await self.redis.hgetall(POSITIONS_KEY))
        return {k.decode(): v for k, v in raw.items()}

    async def claim_outbox(
        self, expired_by: float, lease_until: float, limit: int, owner: str
    ) -> list[tuple[str, bytes]]:
        """Outbox entries whose lease ran out by `expired_by` (their owner died before
        publishing them; `inf` takes every entry), now `owner`'s until `lease_until`."""
        upto = "+inf" if expired_by == float("inf") else repr(expired_by)
        taken = await self._claim_outbox(
            keys=_OUTBOX_KEYS, args=[upto, repr(lease_until), limit, owner]
        )
        return [(taken[i].decode(), taken[i + 1]) for i in range(0, len(taken), 2)]

    async def renew_outbox(self, ids: Sequence[str], lease_until: float, owner: str) -> set[str]:
        """Renew the entries `owner` still owns; returns their ids (the others were
        taken over, and are no longer `owner`'s to publish)."""
        if not ids:
            return set()
        owned = await self._renew_outbox(
            keys=_OUTBOX_KEYS[1:], args=[owner, repr(lease_until), *ids]
        )
        return {entry.decode() for entry in owned}

    async def drop_outbox(self, ids: Sequence[str]) -> None:
        """Forget published outbox entries."""
        if ids:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hdel(OUTBOX_KEY, *ids)
            pipe.zrem(OUTBOX_LEASES_KEY, *ids)
            pipe.hdel(OUTBOX_OWNERS_KEY, *ids)
            await pipe.execute()

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

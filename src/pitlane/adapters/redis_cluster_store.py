"""Entity state in a Redis Cluster: the same keys and script, split by node or slot.

Redis Cluster refuses a command whose keys hash to different slots. On Redis 7 a
script flagged `allow-cross-slot-keys` may still touch every key its node holds, one
key per command, so the single-node store's read and compare-and-set become one of
each per primary. Older servers get one MGET and one compare-and-set per slot
instead, about 1,300 commands for a batch of 500 events, which doubles the worker's
CPU per event (docs/benchmarks.md). Either way the calls of one step go as one
pipeline, one round trip per node.

Writes are no longer all-or-nothing across nodes; what keeps a crash between them
harmless is their order, each step one round trip:

1. the outbox entry first: messages stored without their state are decided again,
   the same, on redelivery (after a crash a trigger may come twice, with the same id
   and content), while a state stored without its messages would lose them;
2. deadlines next: a state written without its deadline would be a duplicate on
   redelivery and never be decided again, while a deadline without its state is
   only decided early, finds nothing due and re-arms;
3. entity states by `Write.phase` (entities reached through another's state before
   that other, see `routing.write_phases`), each entity still compare-and-set.

A version conflict stops the write at the step it happens in; the batch is re-read
and re-applied, and the entities already written skip the events they applied. A
script that meets a key its node no longer holds (a slot moved) refreshes the slot
map and fails the batch, which the worker retries against the new owners.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from mypy_extensions import mypyc_attr
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import NoScriptError, ResponseError

from pitlane.adapters.redis_store import (
    COMPARE_AND_SET,
    Fence,
    OutboxEntry,
    RedisStore,
    Write,
    compare_and_set_arguments,
    raise_conflict,
    redis_key,
    timer_member,
    timer_shard,
)
from pitlane.domain.entities import EntityKey

_CROSS_SLOT = "#!lua flags=allow-cross-slot-keys\n"
NODE_COMPARE_AND_SET = f"{_CROSS_SLOT}local KEYS = {{unpack(ARGV, 15)}}\n{COMPARE_AND_SET}"
"""`COMPARE_AND_SET` over keys of many slots of one node, passed after its 14 arguments."""
NODE_READ = (
    f"{_CROSS_SLOT}local values = {{}}\n"
    "for i, key in ipairs(ARGV) do values[i] = redis.call('GET', key) end\n"
    "return values\n"
)
"""GET every key of the arguments (an MGET across slots is refused even in a script)."""

T = TypeVar("T")
_Command = tuple[ClusterNode | None, tuple[Any, ...]]
"""A command and the node to send it to (None: wherever its keys live)."""
_Call = tuple[list[str], list[Any], Sequence[Write]]
"""KEYS and ARGV of one compare-and-set, with the writes it carries (for conflicts)."""


@mypyc_attr(allow_interpreted_subclasses=True)  # like RedisStore
class RedisClusterStore(RedisStore):
    """`RedisStore` over a Redis Cluster; the URL names any one of its nodes.

    `per_node_scripts` picks one script per node (needs Redis ≥ 7.0 on every primary)
    or per slot; None picks per node exactly when every primary allows it.
    """

    splits_writes = True

    def __init__(
        self, url: str, timer_shards: int = 16, per_node_scripts: bool | None = None
    ) -> None:
        super().__init__(url, timer_shards)
        self.per_node_scripts = per_node_scripts
        self._shas: dict[str, str] = {}

    async def start(self) -> None:
        """Connect, discover the slots and versions, and load the scripts everywhere."""
        client = RedisCluster.from_url(
            self._url, decode_responses=False, socket_timeout=10, socket_connect_timeout=5
        )
        self._redis = client
        await client.initialize()
        if self.per_node_scripts is None:
            servers = await client.info("server", target_nodes=RedisCluster.PRIMARIES)
            self.per_node_scripts = all(
                int(str(info["redis_version"]).split(".")[0]) >= 7 for info in servers.values()
            )
        await self._load_scripts()
        self._register_shared_scripts(client)

    @property
    def cluster(self) -> RedisCluster:
        """The cluster client; only after `start()`."""
        client = self.redis
        assert isinstance(client, RedisCluster)
        return client

    async def _load_scripts(self) -> None:
        scripts = [COMPARE_AND_SET]
        if self.per_node_scripts:
            scripts += [NODE_COMPARE_AND_SET, NODE_READ]
        self._shas = {script: await self.cluster.script_load(script) for script in scripts}

    async def _mget(self, names: list[str]) -> list[Any]:
        """One read per node (per-node scripts) or one MGET per slot, one round trip."""
        if not self.per_node_scripts:
            return await self.cluster.mget_nonatomic(names)
        nodes = self._by_node(range(len(names)), names.__getitem__)
        replies = await self._pipeline(
            [
                (node, ("EVALSHA", self._shas[NODE_READ], 0, *(names[i] for i in indexes)))
                for node, indexes in nodes
            ]
        )
        values: list[Any] = [None] * len(names)
        for (_, indexes), reply in zip(nodes, replies, strict=True):
            for index, value in zip(indexes, reply, strict=True):
                values[index] = value
        return values

    async def write(
        self,
        writes: Iterable[Write],
        deadlines: Mapping[EntityKey, float | None] | None = None,
        *,
        positions: Mapping[str, bytes] | None = None,
        fence: Fence | None = None,
        outbox: OutboxEntry | None = None,
    ) -> None:
        """Store the outbox entry, deadlines, then states phase by phase (see the module).

        Event-clock positions and fences need one atomic write: the event clock runs on
        one Redis primary only (the settings refuse it with a cluster).
        """
        if positions or fence:
            raise ValueError("event-clock positions need a single Redis primary")
        batch = list(writes)
        shards = self._group(
            sorted((deadlines or {}).items()),
            lambda t: timer_shard(timer_member(t[0]), self._shards),
        )
        steps: list[list[_Call]] = []
        if outbox is not None:
            steps.append([(*compare_and_set_arguments([], [], self._shards, outbox=outbox), [])])
        steps.append(
            [(*compare_and_set_arguments([], timers, self._shards), []) for timers in shards]
        )
        for phase in sorted({w.phase for w in batch}):
            groups = self._group([w for w in batch if w.phase == phase], lambda w: redis_key(w.key))
            steps.append([(*compare_and_set_arguments(ws, [], self._shards), ws) for ws in groups])
        stored = False  # whether some states are stored: a conflict then is partial
        for calls in steps:
            if calls:
                stored |= await self._compare_and_set(calls, stored)

    def _group(self, items: Sequence[T], name: Callable[[T], str]) -> list[list[T]]:
        """`items` in groups one script call can take: by node or by slot."""
        if self.per_node_scripts:
            return [group for _, group in self._by_node(items, name)]
        slots: dict[int, list[T]] = {}
        for item in items:
            slots.setdefault(key_slot(name(item).encode()), []).append(item)
        return list(slots.values())

    def _by_node(
        self, items: Iterable[T], name: Callable[[T], str]
    ) -> list[tuple[ClusterNode, list[T]]]:
        """`items` by the primary that holds the key `name(item)`."""
        nodes: dict[str, tuple[ClusterNode, list[T]]] = {}
        manager = self.cluster.nodes_manager
        for item in items:
            node = manager.get_node_from_slot(key_slot(name(item).encode()))
            nodes.setdefault(node.name, (node, []))[1].append(item)
        return list(nodes.values())

    async def _compare_and_set(self, calls: list[_Call], stored: bool) -> bool:
        """Run `calls` in one pipeline; raise VersionConflict for the first that lost
        (partial when a state was stored, before or by another call of the pipeline).
        Returns whether these calls stored states."""
        commands: list[_Command]
        if self.per_node_scripts:
            manager = self.cluster.nodes_manager
            commands = [
                (
                    manager.get_node_from_slot(key_slot(keys[0].encode())),
                    ("EVALSHA", self._shas[NODE_COMPARE_AND_SET], 0, *args, *keys),
                )
                for keys, args, _ in calls
            ]
        else:
            commands = [
                (None, ("EVALSHA", self._shas[COMPARE_AND_SET], len(keys), *keys, *args))
                for keys, args, _ in calls
            ]
        results = await self._pipeline(commands)
        wrote = any(ws and not result for (_, _, ws), result in zip(calls, results, strict=True))
        for (_, _, ws), result in zip(calls, results, strict=True):
            if result:
                raise_conflict(ws, int(result[0]), stored or wrote)
        return wrote

    async def _pipeline(self, commands: Sequence[_Command]) -> list[Any]:
        """Send `commands` (to the node given, else by their keys) in one pipeline.

        A primary that took over after a failover may lack the scripts: they are loaded
        (a script's sha is its text's, so the commands stay valid) and the pipeline sent
        once more; what ran before is a compare-and-set or a read, safe to repeat. A
        script that met a key its node no longer holds means the slot map is stale: it
        is refreshed, and the error raised for the batch to be retried.
        """
        try:
            try:
                return await self._send(commands)
            except NoScriptError:
                await self._load_scripts()
                return await self._send(commands)
        except ResponseError as error:
            if "non local key" in str(error):
                await self.cluster.nodes_manager.initialize()
            raise

    async def _send(self, commands: Sequence[_Command]) -> list[Any]:
        pipe = self.cluster.pipeline()
        for node, command in commands:
            if node is None:
                pipe.execute_command(*command)
            else:
                pipe.execute_command(*command, target_nodes=node)
        replies: list[Any] = await pipe.execute()
        return replies

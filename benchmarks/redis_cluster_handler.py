"""What Redis Cluster costs the worker: the batch handler on one Redis primary and on
a three-primary cluster (one script call per slot, and per node where every primary
runs Redis 7), same events, alternating rounds (this machine's speed drifts).

    python benchmarks/redis_cluster_handler.py [--events 100000] [--rounds 3]

The embedded stack takes the first redis-server on the PATH; put a Redis 7 first
(`PATH=/usr/bin:$PATH` on Debian) to measure the per-node scripts too.

The handler runs in this process (no Kafka in the measured loop), so the figures are
the handler's own CPU per 100,000 events, comparable with `pitlane bench --profile`.
Prints one JSON object: per store, the median and every round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
from collections.abc import Callable
from datetime import UTC, datetime

import redis
from pydantic import SecretStr
from redis.cluster import RedisCluster

from pitlane.adapters.redis_cluster_store import RedisClusterStore
from pitlane.adapters.redis_store import RedisStore, make_store
from pitlane.bench import BenchConfig, build_workload
from pitlane.bench_harness import Silent
from pitlane.bench_profile import Record, time_handler
from pitlane.settings import Settings
from pitlane.stack.embedded import EmbeddedStack
from pitlane.topics import load_topics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=500)
    options = parser.parse_args()
    logging.getLogger("pitlane").addHandler(logging.NullHandler())
    logging.getLogger("pitlane").propagate = False  # identity conflicts would flood stderr

    settings = Settings()
    topics = load_topics(settings.topics_file)
    workload = build_workload(BenchConfig(events=options.events), datetime.now(UTC))
    records = [Record(m.topic, 0, i, m.key, m.value) for i, m in enumerate(workload.messages)]
    with EmbeddedStack(topics, redis_cluster_nodes=3) as stack:
        with redis.Redis.from_url(stack.redis_url) as single:
            version = str(single.info("server")["redis_version"])
        single_settings = settings.model_copy(update={"redis_url": SecretStr(stack.redis_url)})
        cluster_settings = settings.model_copy(
            update={"redis_url": SecretStr(stack.redis_cluster_url), "redis_cluster": True}
        )
        stores: dict[str, tuple[Settings, Callable[[], RedisStore]]] = {
            "single": (single_settings, lambda: make_store(single_settings)),
            "cluster per slot": (
                cluster_settings,
                lambda: RedisClusterStore(stack.redis_cluster_url, per_node_scripts=False),
            ),
        }
        if int(version.split(".")[0]) >= 7:
            stores["cluster per node"] = (
                cluster_settings,
                lambda: RedisClusterStore(stack.redis_cluster_url, per_node_scripts=True),
            )
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in stores}
        for _ in range(options.rounds):
            for name, (store_settings, store) in stores.items():
                with redis.Redis.from_url(stack.redis_url) as single:
                    single.flushall()
                with RedisCluster.from_url(stack.redis_cluster_url) as cluster:
                    cluster.flushall()
                wall, cpu = asyncio.run(
                    time_handler(
                        records, store(), store_settings, topics, options.batch_size, Silent()
                    )
                )
                runs[name].append(
                    {
                        "events_per_s": round(len(records) / wall),
                        "cpu_s_per_100k": round(cpu / len(records) * 100_000, 2),
                    }
                )
    print(
        json.dumps(
            {
                "events": len(records),
                "batch_size": options.batch_size,
                "redis_version": version,
                **{
                    name: {
                        "median_events_per_s": statistics.median(r["events_per_s"] for r in rounds),
                        "median_cpu_s_per_100k": statistics.median(
                            r["cpu_s_per_100k"] for r in rounds
                        ),
                        "rounds": rounds,
                    }
                    for name, rounds in runs.items()
                },
            }
        )
    )


if __name__ == "__main__":
    main()

"""What is stored and what it earned: entries per namespace, version and rule, Redis INFO figures, the
Redis-side counters every process adds to, and the start-up memory check."""

from __future__ import annotations

import random
from collections import Counter
from contextlib import aclosing
from typing import Any

from redis.asyncio import RedisCluster

from ..keys import KeySpace, glob_escape
from .scan import DEFAULT_PREFIX, Client, RawKey, scan_keys, text

DISCOVERY_LIMIT = 100_000  # keys looked at, at most, when finding the namespaces under a prefix


async def namespace_stats(
    client: Client, *, prefix: str = DEFAULT_PREFIX, namespace: str, sample: int = 200, batch: int = 500
) -> dict[str, Any]:
    """Entry counts per version and rule, tag sets, an estimate of the entries' bytes, Redis INFO figures,
    and the Redis-side counters (`counters`: per rule, every process's totals).

    `bytes_estimate` is MEMORY USAGE over up to `sample` randomly chosen entries, scaled to all entries.
    """
    space = KeySpace(prefix, namespace)
    versions: Counter[str] = Counter()
    rules: Counter[str] = Counter()
    tag_sets = other = 0
    reservoir: list[RawKey] = []
    rng = random.Random()
    tag_head, stats_key = space.tag(""), space.stats()
    async with aclosing(scan_keys(client, space.entries_glob().removesuffix("*:*:*") + "*", batch)) as keys:
        async for raw in keys:
            key = text(raw)
            parts = space.parse(key)
            if parts is None:
                tag_sets += key.startswith(tag_head)
                other += not key.startswith(tag_head) and key != stats_key
                continue
            versions[parts[0]] += 1
            rules[parts[1]] += 1
            if len(reservoir) < sample:
                reservoir.append(raw)
            elif (slot := rng.randrange(versions.total())) < sample:
                reservoir[slot] = raw
    entries = versions.total()
    measured, sampled_bytes = await _memory_usage(client, reservoir, batch)
    return {
        "prefix": prefix,
        "namespace": namespace,
        "entries": entries,
        "versions": dict(versions.most_common()),
        "rules": dict(rules.most_common()),
        "tag_sets": tag_sets,
        "other_keys": other,
        "bytes_estimate": round(sampled_bytes / measured * entries) if measured else 0,
        "bytes_sampled_keys": measured,
        "counters": await read_counters(client, space),
        "redis": await redis_info(client),
    }


async def _memory_usage(client: Client, keys: list[RawKey], batch: int) -> tuple[int, int]:
    measured = total = 0
    for start in range(0, len(keys), batch):
        pipe = client.pipeline(transaction=False)
        for raw in keys[start : start + batch]:
            pipe.memory_usage(raw)
        for usage in await pipe.execute():
            if isinstance(usage, int):
                total += usage
                measured += 1
    return measured, total


async def find_namespaces(
    client: Client, prefix: str = DEFAULT_PREFIX, limit: int = DISCOVERY_LIMIT, batch: int = 1000
) -> dict[str, dict[str, int]]:
    """{namespace: {version: entries}} under `prefix`, from at most `limit` keys (SCAN, never KEYS)."""
    found: dict[str, Counter[str]] = {}
    seen = 0
    async with aclosing(scan_keys(client, glob_escape(prefix) + ":*", batch)) as keys:
        async for raw in keys:
            seen += 1
            if seen > limit:
                break
            parts = text(raw)[len(prefix) + 1 :].split(":", 3)
            if len(parts) == 4 and parts[1] != "tag" and parts[0]:
                found.setdefault(parts[0], Counter())[parts[1]] += 1
    return {namespace: dict(versions.most_common()) for namespace, versions in sorted(found.items())}


async def write_counters(client: Client, key: str, deltas: dict[str, float]) -> None:
    """Add `deltas` (from `Metrics.counters_due`) to the counter hash at `key` in one pipeline."""
    pipe = client.pipeline(transaction=False)
    for field, value in deltas.items():
        if float(value).is_integer():
            pipe.hincrby(key, field, int(value))
        else:
            pipe.hincrbyfloat(key, field, value)
    await pipe.execute()


async def read_counters(client: Client, space: KeySpace) -> dict[str, dict[str, float]]:
    """The counter hash as {rule: {field: total}} (fields: outcomes, saved_seconds, rows_hit/computed)."""
    raw: dict[Any, Any] = await client.hgetall(space.stats())
    out: dict[str, dict[str, float]] = {}
    for field, value in raw.items():
        rule, sep, name = text(field).partition("\t")
        if sep:
            out.setdefault(rule, {})[name] = float(text(value))
    return out


async def memory_policy(client: Client) -> tuple[int, str]:
    """(maxmemory, maxmemory-policy) from CONFIG GET (the smallest maxmemory over a cluster's primaries)."""
    if isinstance(client, RedisCluster):
        answer: dict[Any, Any] = await client.config_get("maxmemory*", target_nodes=RedisCluster.PRIMARIES)
        nodes = [answer] if "maxmemory" in answer else list(answer.values())
    else:
        nodes = [dict(await client.config_get("maxmemory*"))]
    maxmemory = min(int(node.get("maxmemory", 0)) for node in nodes)
    policies = {str(node.get("maxmemory-policy", "")) for node in nodes}
    return maxmemory, "noeviction" if "noeviction" in policies else min(policies)


async def redis_info(client: Client) -> dict[str, Any]:
    """Figures from INFO, summed over a cluster's primaries: memory, hits, misses, evictions, clients."""
    if isinstance(client, RedisCluster):
        answer: dict[str, Any] = await client.info(target_nodes=RedisCluster.PRIMARIES)
        nodes = [answer] if "redis_version" in answer else list(answer.values())
    else:
        nodes = [await client.info()]
    used = sum(int(node.get("used_memory", 0)) for node in nodes)
    return {
        "nodes": len(nodes),
        "redis_version": ", ".join(sorted({str(node.get("redis_version", "?")) for node in nodes})),
        "used_memory": used,
        "used_memory_human": human_bytes(used),
        "maxmemory_policy": ", ".join(sorted({str(node.get("maxmemory_policy", "?")) for node in nodes})),
        "keyspace_hits": sum(int(node.get("keyspace_hits", 0)) for node in nodes),
        "keyspace_misses": sum(int(node.get("keyspace_misses", 0)) for node in nodes),
        "evicted_keys": sum(int(node.get("evicted_keys", 0)) for node in nodes),
        "connected_clients": sum(int(node.get("connected_clients", 0)) for node in nodes),
    }


def human_bytes(size: float) -> str:
    """`size` the way Redis writes `used_memory_human`: 512B, 1.50K, 2.25M, 1.00G."""
    if size < 1024:
        return f"{int(size)}B"
    for unit in "KMGT":
        size /= 1024
        if size < 1024 or unit == "T":
            break
    return f"{size:.2f}{unit}"

"""Bulk deletion for `RedisBackend`: SCAN or SSCAN in batches, then UNLINK, never KEYS; every step
bounded like any call, on every primary of a cluster."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from redis.asyncio import RedisCluster
from redis.asyncio.cluster import ClusterNode

if TYPE_CHECKING:
    from .redis import RedisBackend


async def purge(backend: RedisBackend, pattern: str, batch: int) -> int:
    """UNLINK every key matching the glob `pattern`; the number deleted."""
    if batch < 1:
        raise ValueError("purge batch must be at least 1")
    deleted = 0
    for node in await backend.primaries():
        cursor = 0
        while True:
            cursor, keys = await _scan_step(backend, node, cursor, pattern, batch)
            deleted += await _unlink(backend, keys)
            if cursor == 0:
                break
    return deleted


async def purge_set(backend: RedisBackend, set_key: str, batch: int) -> int:
    """UNLINK every key listed in the set `set_key`, then the set; the number of listed keys deleted."""
    if batch < 1:
        raise ValueError("purge batch must be at least 1")
    deleted, cursor = 0, 0
    while True:
        cursor, members = await _sscan_step(backend, set_key, cursor, batch)
        deleted += await _unlink(backend, members)
        if cursor == 0:
            break
    await backend.delete([set_key])
    return deleted


async def _scan_step(
    backend: RedisBackend, node: ClusterNode | None, cursor: int, pattern: str, batch: int
) -> tuple[int, list[Any]]:
    client = backend.client
    if node is None or not isinstance(client, RedisCluster):
        found, keys = await backend.call("SCAN", lambda: client.scan(cursor, match=pattern, count=batch))
        return int(found), list(keys)
    cursors, keys = await backend.call(
        "SCAN", lambda: client.scan(cursor, match=pattern, count=batch, target_nodes=node)
    )
    return int(cast(dict[str, int], cursors)[node.name]), list(keys)  # a cursor per node


async def _sscan_step(backend: RedisBackend, set_key: str, cursor: int, batch: int) -> tuple[int, list[Any]]:
    client = backend.client
    found, members = await backend.call("SSCAN", lambda: client.sscan(set_key, cursor, count=batch), set_key)
    return int(found), list(members)


async def _unlink(backend: RedisBackend, keys: Sequence[Any]) -> int:
    if not keys:
        return 0
    client = backend.client
    removed = await backend.call("UNLINK", lambda: client.unlink(*keys))
    return int(removed)

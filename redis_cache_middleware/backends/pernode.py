"""Commands on many keys of a Redis Cluster: one pipeline per node, the nodes in parallel."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from redis.asyncio import RedisCluster

from .base import PartialBackendError

if TYPE_CHECKING:
    from .redis import RedisBackend


async def per_node(
    backend: RedisBackend, name: str, keys: Sequence[str], add: Callable[[Any, int], None]
) -> list[Any]:
    """Queue `add(pipe, i)` for every key in a pipeline per node and run the pipelines in parallel, each
    bounded like any call; the first reply of each key's commands, in key order. Some nodes failing:
    `PartialBackendError`; one node, or all of them: that failure."""
    client = backend.client
    if not isinstance(client, RedisCluster):
        everything = range(len(keys))
        return await backend.call(name, lambda: _run(client.pipeline(transaction=False), everything, add))
    await backend.primaries()  # the slot map, loaded once
    groups: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        node = client.get_node_from_key(key)
        groups.setdefault(node.name if node is not None else "", []).append(index)

    def node_call(group: list[int]) -> Awaitable[list[Any]]:
        return backend.call(name, lambda: _run(client.pipeline(), group, add), keys[group[0]])

    outcomes = await asyncio.gather(*map(node_call, groups.values()), return_exceptions=True)
    failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    for failure in failures:
        if not isinstance(failure, Exception):
            raise failure
        if not isinstance(failure, PartialBackendError) or len(failures) == len(outcomes) == 1:
            raise failure
    if failures:
        failed = f"{len(failures)} of {len(outcomes)} nodes failed"
        raise PartialBackendError(f"{name}: {failed}: {failures[0]}")
    replies: list[Any] = [None] * len(keys)
    for group, outcome in zip(groups.values(), outcomes, strict=True):
        for index, reply in zip(group, cast(list[Any], outcome), strict=True):
            replies[index] = reply
    return replies


async def _run(pipe: Any, indexes: Sequence[int], add: Callable[[Any, int], None]) -> list[Any]:
    """Queue `add(pipe, i)` for each index, execute, and return the first reply of each index's commands."""
    counts = []
    for index in indexes:
        before = len(pipe)
        add(pipe, index)
        counts.append(len(pipe) - before)
    replies = await pipe.execute()
    firsts, position = [], 0
    for count in counts:
        firsts.append(replies[position])
        position += count
    return firsts

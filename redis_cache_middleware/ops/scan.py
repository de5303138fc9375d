"""Bounded key walks shared by the operator functions: SCAN (every primary of a cluster) and UNLINK."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import cast

from redis.asyncio import Redis, RedisCluster

Client = Redis | RedisCluster
RawKey = bytes | str
DEFAULT_PREFIX = "rcm"


async def scan_keys(client: Client, pattern: str, batch: int) -> AsyncGenerator[RawKey, None]:
    """Every key matching `pattern`, by SCAN in steps of `batch` (on every primary of a cluster)."""
    scan = cast("AsyncGenerator[RawKey, None]", client.scan_iter(match=pattern, count=batch))
    async with aclosing(scan) as keys:
        async for key in keys:
            yield key


async def unlink(client: Client, keys: list[RawKey], dry_run: bool) -> int:
    """How many of `keys` UNLINK removed; with `dry_run`, how many there are, none removed."""
    if not keys or dry_run:
        return len(keys)
    unlinked: int = await client.unlink(*keys)
    return unlinked


def text(key: RawKey) -> str:
    """A key as text (undecodable bytes replaced)."""
    return key.decode("utf-8", "replace") if isinstance(key, bytes) else key

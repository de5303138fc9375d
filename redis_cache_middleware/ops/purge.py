"""Deleting entries in bulk without blocking Redis: keys found by `SCAN MATCH ... COUNT batch` (every
primary of a cluster), tag sets read by `SSCAN`, removal by `UNLINK` in batches."""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, Iterable
from contextlib import aclosing
from typing import cast

from ..keys import KeySpace
from .scan import DEFAULT_PREFIX, Client, RawKey, scan_keys, text, unlink


def tag_key(prefix: str, namespace: str, tag: str) -> str:
    """The Redis SET that indexes the entry keys tagged `tag` in `namespace`."""
    return KeySpace(prefix, namespace).tag(tag)


async def index_tags(
    client: Client, prefix: str, namespace: str, key: str, tags: Iterable[str], ttl: float
) -> None:
    """Add `key` to each tag's set and make the set live at least `ttl` seconds more (Redis >= 7.0)."""
    tags = list(tags)
    if not tags:
        return
    space = KeySpace(prefix, namespace)
    ttl_ms = max(1, math.ceil(ttl * 1000))
    pipe = client.pipeline(transaction=False)
    for tag in tags:
        name = space.tag(tag)
        pipe.sadd(name, key)
        pipe.pexpire(name, ttl_ms, nx=True)
        pipe.pexpire(name, ttl_ms, gt=True)
    await pipe.execute()


async def purge(
    client: Client,
    *,
    prefix: str = DEFAULT_PREFIX,
    namespace: str,
    version: str | None = None,
    rule: str | None = None,
    tag: str | None = None,
    all: bool = False,
    dry_run: bool = False,
    batch: int = 500,
) -> int:
    """Delete the entries selected by one of `all`, `version`, `rule` (narrowed by `version`) or `tag`.

    Returns how many entries were deleted (with `dry_run`, how many would be, and nothing is deleted).
    `all` also removes the namespace's tag sets and `tag` its own set; those are not counted. Every
    `TieredBackend` hears of each deletion from Redis and drops its L1 copy.
    """
    if batch < 1:
        raise ValueError("purge batch must be at least 1")
    chosen = [name for name, on in (("all", all), ("rule", rule is not None), ("tag", tag is not None)) if on]
    if len(chosen) > 1:
        raise ValueError(f"purge takes one selector, got {' and '.join(chosen)}")
    if not chosen and version is None:
        raise ValueError("purge needs a selector: all=True, version=, rule= or tag=")
    space = KeySpace(prefix, namespace)
    if tag is not None:
        if version is not None:
            raise ValueError("purge by tag covers every version; version= cannot narrow it")
        deleted = await _purge_tag(client, space, tag, dry_run, batch)
    else:
        deleted = await _purge_entries(client, space, version, rule, all and version is None, dry_run, batch)
    return deleted


async def _purge_entries(
    client: Client,
    space: KeySpace,
    version: str | None,
    rule: str | None,
    with_tag_sets: bool,
    dry_run: bool,
    batch: int,
) -> int:
    pattern = space.entries_glob(rule, version)
    if rule is None and version is None:
        pattern = pattern.removesuffix("*:*:*") + "*"  # entries and tag sets alike

    def selected(key: str) -> bool:
        parts = space.parse(key)
        if parts is None:
            return False
        return (version is None or parts[0] == version) and (rule is None or parts[1] == rule)

    tag_head = space.tag("")
    deleted = 0
    entries: list[RawKey] = []
    tag_sets: list[RawKey] = []
    async with aclosing(scan_keys(client, pattern, batch)) as keys:
        async for raw in keys:
            key = text(raw)
            if selected(key):
                entries.append(raw)
                if len(entries) >= batch:
                    deleted += await unlink(client, entries, dry_run)
                    entries = []
            elif with_tag_sets and key.startswith(tag_head):
                tag_sets.append(raw)
                if len(tag_sets) >= batch:
                    await unlink(client, tag_sets, dry_run)
                    tag_sets = []
    deleted += await unlink(client, entries, dry_run)
    await unlink(client, tag_sets, dry_run)
    return deleted


async def _purge_tag(client: Client, space: KeySpace, tag: str, dry_run: bool, batch: int) -> int:
    name = space.tag(tag)
    found = 0
    members: list[RawKey] = []

    async def flush() -> int:
        if not members:
            return 0
        if dry_run:
            existing: int = await client.exists(*members)
            return existing
        unlinked: int = await client.unlink(*members)
        return unlinked

    scan = cast("AsyncGenerator[RawKey, None]", client.sscan_iter(name, count=batch))
    async with aclosing(scan) as tagged:
        async for raw in tagged:
            if space.parse(text(raw)) is None:
                continue
            members.append(raw)
            if len(members) >= batch:
                found += await flush()
                members = []
    found += await flush()
    if not dry_run:
        await client.unlink(name)
    return found


async def purge_request(client: Client, key: str) -> bool:
    """Delete the one entry stored under `key`; True when it existed."""
    deleted: int = await client.unlink(key)
    return deleted == 1

"""Operator functions over a `redis.asyncio` client (single node or `RedisCluster`): purge, inspect, stats.

Bulk work never blocks Redis: keys are found with `SCAN MATCH ... COUNT batch` (on every primary of a
cluster) and tag sets with `SSCAN`, and removed with `UNLINK` in batches (split by slot on a cluster).
"""

from __future__ import annotations

import math
import os
import random
import re
import time
from collections import Counter
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from contextlib import aclosing
from typing import Any, cast
from urllib.parse import quote, unquote, urlsplit

from redis.asyncio import Redis, RedisCluster
from starlette.types import Scope

from .backends.tiered import DEFAULT_CHANNEL
from .entry import Entry, VaryMarker, decode
from .keys import Headers, request_digest, variant_key
from .policy import CREDENTIAL_HEADERS
from .rules import CacheRule

Client = Redis | RedisCluster
RawKey = bytes | str

DEFAULT_PREFIX = "rcm"
L1_CHANNEL = DEFAULT_CHANNEL
TAG_SEGMENT = "tag"
PREVIEW_BYTES = 200
_MAC_BYTES = 32
_SENDER = os.urandom(8).hex().encode()
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\^])")
_DIGEST = re.compile(r"[0-9a-f]{32}")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"


def glob_escape(text: str) -> str:
    """`text` with every Redis glob metacharacter escaped, so a MATCH pattern takes it literally."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def _namespace_glob(prefix: str, namespace: str) -> str:
    return f"{glob_escape(prefix)}:{glob_escape(namespace)}:"


def tag_key(prefix: str, namespace: str, tag: str) -> str:
    """The Redis SET that indexes the entry keys tagged `tag` in `namespace`."""
    return f"{prefix}:{namespace}:{TAG_SEGMENT}:{tag}"


def parse_entry_key(key: str, prefix: str, namespace: str) -> tuple[str, str, str] | None:
    """(version, rule, digest and any suffix) when `key` is an entry key of `namespace`, else None."""
    head = f"{prefix}:{namespace}:"
    if not key.startswith(head) or key.startswith(f"{head}{TAG_SEGMENT}:"):
        return None
    parts = key[len(head) :].split(":", 2)
    if len(parts) != 3 or not parts[0] or not parts[1] or not _DIGEST.match(parts[2]):
        return None
    return parts[0], parts[1], parts[2]


async def index_tags(
    client: Client, prefix: str, namespace: str, key: str, tags: Iterable[str], ttl: float
) -> None:
    """Add `key` to each tag's set and make the set live at least `ttl` seconds more (Redis >= 7.0)."""
    tags = list(tags)
    if not tags:
        return
    ttl_ms = max(1, math.ceil(ttl * 1000))
    pipe = client.pipeline(transaction=False)
    for tag in tags:
        name = tag_key(prefix, namespace, tag)
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
    l1_channel: str | None = L1_CHANNEL,
) -> int:
    """Delete the entries selected by one of `all`, `version`, `rule` (narrowed by `version`) or `tag`.

    Returns how many entries were deleted (with `dry_run`, how many would be, and nothing is deleted).
    `all` also removes the namespace's tag sets and `tag` its own set; those are not counted. When
    something was deleted, every `TieredBackend` on `l1_channel` is told to empty its L1.
    """
    if batch < 1:
        raise ValueError("purge batch must be at least 1")
    chosen = [name for name, on in (("all", all), ("rule", rule is not None), ("tag", tag is not None)) if on]
    if len(chosen) > 1:
        raise ValueError(f"purge takes one selector, got {' and '.join(chosen)}")
    if not chosen and version is None:
        raise ValueError("purge needs a selector: all=True, version=, rule= or tag=")
    if tag is not None:
        if version is not None:
            raise ValueError("purge by tag covers every version; version= cannot narrow it")
        deleted = await _purge_tag(client, prefix, namespace, tag, dry_run, batch)
        if deleted and not dry_run:
            await announce(client, l1_channel)
        return deleted

    head = _namespace_glob(prefix, namespace)
    if rule is not None:
        pattern = f"{head}{'*' if version is None else glob_escape(version)}:{glob_escape(rule)}:*"
    elif version is not None:
        pattern = f"{head}{glob_escape(version)}:*"
    else:
        pattern = f"{head}*"
    tag_head = f"{prefix}:{namespace}:{TAG_SEGMENT}:"
    with_tag_sets = all and version is None

    def selected(key: str) -> bool:
        parts = parse_entry_key(key, prefix, namespace)
        if parts is None:
            return False
        return (version is None or parts[0] == version) and (rule is None or parts[1] == rule)

    deleted = 0
    entries: list[RawKey] = []
    tag_sets: list[RawKey] = []
    async with aclosing(_scan(client, pattern, batch)) as keys:
        async for raw in keys:
            key = _text(raw)
            if selected(key):
                entries.append(raw)
                if len(entries) >= batch:
                    deleted += await _unlink(client, entries, dry_run)
                    entries = []
            elif with_tag_sets and key.startswith(tag_head):
                tag_sets.append(raw)
                if len(tag_sets) >= batch:
                    await _unlink(client, tag_sets, dry_run)
                    tag_sets = []
    deleted += await _unlink(client, entries, dry_run)
    await _unlink(client, tag_sets, dry_run)
    if deleted and not dry_run:
        await announce(client, l1_channel)
    return deleted


async def _purge_tag(client: Client, prefix: str, namespace: str, tag: str, dry_run: bool, batch: int) -> int:
    name = tag_key(prefix, namespace, tag)
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
            if parse_entry_key(_text(raw), prefix, namespace) is None:
                continue
            members.append(raw)
            if len(members) >= batch:
                found += await flush()
                members = []
    found += await flush()
    if not dry_run:
        await client.unlink(name)
    return found


async def purge_request(client: Client, key: str, *, l1_channel: str | None = L1_CHANNEL) -> bool:
    """Delete the one entry stored under `key` (and its L1 copies on `l1_channel`); True when it existed."""
    deleted: int = await client.unlink(key)
    if deleted:
        await announce(client, l1_channel, key)
    return deleted == 1


async def announce(client: Client, channel: str | None, key: str = "") -> None:
    """Tell every `TieredBackend` on `channel` to drop `key` from its L1 (every key when ""); None: no-op."""
    if channel:
        await client.publish(channel, _SENDER + key.encode("utf-8", "surrogateescape"))


async def sample_keys(
    client: Client, *, prefix: str = DEFAULT_PREFIX, namespace: str, limit: int = 20, batch: int = 500
) -> list[str]:
    """Up to `limit` entry keys of `namespace`, sorted; which ones is up to SCAN's order."""
    found: list[str] = []
    if limit < 1:
        return found
    async with aclosing(_scan(client, _namespace_glob(prefix, namespace) + "*", batch)) as keys:
        async for raw in keys:
            key = _text(raw)
            if parse_entry_key(key, prefix, namespace) is not None:
                found.append(key)
                if len(found) >= limit:
                    break
    return sorted(found)


async def inspect(
    client: Client, key: str, *, signing_key: bytes | None = None, now: float | None = None
) -> dict[str, Any] | None:
    """What is stored under `key` (status, headers, sizes, ages, TTLs, body preview); None when absent.

    Every answer has `key`, `kind` ("response", "vary-marker" or "invalid"), `size`, `redis_ttl` (seconds
    left, None when the key never expires) and `signature` ("valid"; "not checked" when the record is
    signed and no `signing_key` was given; None when unsigned); a marker adds `vary`, a response the rest.
    """
    pipe = client.pipeline(transaction=False)
    pipe.get(key)
    pipe.pttl(key)
    data, pttl = await pipe.execute()
    if data is None or pttl == -2:
        return None
    redis_ttl = None if pttl < 0 else pttl / 1000
    entry, signature = _decode(data, key, signing_key)
    common = {"key": key, "size": len(data), "redis_ttl": redis_ttl, "signature": signature}
    if entry is None:
        return {**common, "kind": "invalid"}
    if isinstance(entry, VaryMarker):
        return {**common, "kind": "vary-marker", "vary": [name.decode("latin-1") for name in entry.names]}
    at = time.time() if now is None else now
    return {
        **common,
        "kind": "response",
        "status": entry.status,
        "headers": [[name.decode("latin-1"), value.decode("latin-1")] for name, value in entry.headers],
        "body_bytes": len(entry.body),
        "created": entry.created,
        "age": round(entry.age(at), 3),
        "ttl": entry.ttl,
        "fresh": entry.is_fresh(at),
        "body_preview": entry.body[:PREVIEW_BYTES].decode("utf-8", errors="replace"),
    }


async def follow_vary(
    client: Client, key: str, headers: Headers, signing_key: bytes | None = None
) -> str | None:
    """When a Vary marker is stored at `key`, the key of the variant that these request `headers` select."""
    data = await client.get(key)
    record = _decode(data, key, signing_key)[0] if isinstance(data, bytes) else None
    return variant_key(key, record.names, headers) if isinstance(record, VaryMarker) else None


def _decode(data: bytes, key: str, signing_key: bytes | None) -> tuple[Entry | VaryMarker | None, str | None]:
    """The record and its signature state; without a key, a signed record is read unchecked."""
    record = decode(data, key, signing_key)
    if record is not None:
        return record, None if signing_key is None else "valid"
    if signing_key is None and len(data) > _MAC_BYTES:
        record = decode(data[:-_MAC_BYTES], key)
        if record is not None:
            return record, "not checked"
    return None, None


async def namespace_stats(
    client: Client,
    *,
    prefix: str = DEFAULT_PREFIX,
    namespace: str,
    sample: int = 200,
    batch: int = 500,
) -> dict[str, Any]:
    """Entry counts per version and rule, tag sets, an estimate of the entries' bytes, and Redis INFO figures.

    `bytes_estimate` is MEMORY USAGE over up to `sample` randomly chosen entries, scaled to all entries.
    """
    versions: Counter[str] = Counter()
    rules: Counter[str] = Counter()
    tag_sets = other = 0
    reservoir: list[RawKey] = []
    rng = random.Random()
    tag_head = f"{prefix}:{namespace}:{TAG_SEGMENT}:"
    async with aclosing(_scan(client, _namespace_glob(prefix, namespace) + "*", batch)) as keys:
        async for raw in keys:
            key = _text(raw)
            parts = parse_entry_key(key, prefix, namespace)
            if parts is None:
                if key.startswith(tag_head):
                    tag_sets += 1
                else:
                    other += 1
                continue
            versions[parts[0]] += 1
            rules[parts[1]] += 1
            seen = versions.total()
            if len(reservoir) < sample:
                reservoir.append(raw)
            else:
                slot = rng.randrange(seen)
                if slot < sample:
                    reservoir[slot] = raw
    entries = versions.total()
    sampled_bytes = 0
    measured = 0
    for start in range(0, len(reservoir), batch):
        pipe = client.pipeline(transaction=False)
        for raw in reservoir[start : start + batch]:
            pipe.memory_usage(raw)
        for usage in await pipe.execute():
            if isinstance(usage, int):
                sampled_bytes += usage
                measured += 1
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
        "redis": await redis_info(client),
    }


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


def request_key(
    *,
    prefix: str = DEFAULT_PREFIX,
    namespace: str,
    version: str,
    rule: CacheRule,
    method: str,
    url: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    root_path: str = "",
    credential_headers: Sequence[bytes] = CREDENTIAL_HEADERS,
) -> str:
    """The key the middleware uses for this request under `rule` (the URL as the app receives it).

    `credential_headers` are the middleware's (they enter the key of a `private` rule). Under a Vary
    marker the response itself is at the variant key: see `follow_vary`.
    """
    digest = request_digest_for(rule, method, url, body, headers, root_path, credential_headers)
    return f"{prefix}:{namespace}:{version}:{rule.key_name}:{digest}"


def request_digest_for(
    rule: CacheRule,
    method: str,
    url: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    root_path: str = "",
    credential_headers: Sequence[bytes] = CREDENTIAL_HEADERS,
) -> str:
    """The digest part of `request_key`: the same for every version of the namespace."""
    scope, header_map, key_body = request_scope(method, url, body, headers, root_path)
    return request_digest(rule.keying, scope, header_map, key_body, tuple(credential_headers))


def request_scope(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    root_path: str = "",
) -> tuple[Scope, Headers, bytes | None]:
    """An ASGI-like scope, the header map and the body as the middleware would see them for this request.

    Host comes from the URL (default port dropped) unless a Host header is given; the body is read for
    every method but GET and HEAD, and for those too when there is a body or a Content-Length.
    """
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.netloc:
        raise ValueError(f"url must be absolute http(s)://host/path, got {url!r}")
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or ())
    header_map: Headers = {}
    for name, value in pairs:
        header_map.setdefault(name.strip().lower().encode("latin-1"), []).append(_header_bytes(value.strip()))
    if b"host" not in header_map:
        host = parts.netloc.rpartition("@")[2]
        if parts.port is not None and parts.port == _DEFAULT_PORTS[parts.scheme] and not host.endswith("]"):
            host = host.rpartition(":")[0]
        header_map[b"host"] = [host.encode("idna") if not host.isascii() else host.encode("ascii")]
    method = method.upper()
    reads_body = method not in ("GET", "HEAD") or b"content-length" in header_map
    reads_body = reads_body or b"transfer-encoding" in header_map or body is not None
    raw_path = quote(parts.path or "/", safe=_PATH_SAFE)
    scope: Scope = {
        "type": "http",
        "method": method,
        "scheme": parts.scheme,
        "root_path": root_path,
        "path": unquote(raw_path),
        "raw_path": raw_path.encode("ascii"),
        "query_string": parts.query.encode("utf-8"),
        "headers": [(name, value) for name, values in header_map.items() for value in values],
    }
    return scope, header_map, (body or b"") if reads_body else None


async def locate_request(
    client: Client,
    *,
    prefix: str = DEFAULT_PREFIX,
    namespace: str,
    rule: CacheRule,
    digest: str,
    version: str | None = None,
    batch: int = 500,
) -> list[str]:
    """The stored keys of one request (its digest under `rule`): in `version`, or in every version by SCAN."""
    if version is not None:
        key = f"{prefix}:{namespace}:{version}:{rule.key_name}:{digest}"
        return [key] if await client.exists(key) else []
    pattern = f"{_namespace_glob(prefix, namespace)}*:{glob_escape(rule.key_name)}:{digest}"
    found: list[str] = []
    async with aclosing(_scan(client, pattern, batch)) as keys:
        async for raw in keys:
            key = _text(raw)
            parts = parse_entry_key(key, prefix, namespace)
            if parts is not None and parts[1] == rule.key_name and parts[2] == digest:
                found.append(key)
    return sorted(found)


async def _scan(client: Client, pattern: str, batch: int) -> AsyncGenerator[RawKey, None]:
    """Every key matching `pattern`, by SCAN in steps of `batch` (on every primary of a cluster)."""
    scan = cast("AsyncGenerator[RawKey, None]", client.scan_iter(match=pattern, count=batch))
    async with aclosing(scan) as keys:
        async for key in keys:
            yield key


async def _unlink(client: Client, keys: list[RawKey], dry_run: bool) -> int:
    """How many of `keys` UNLINK removed; with `dry_run`, how many there are, none removed."""
    if not keys or dry_run:
        return len(keys)
    unlinked: int = await client.unlink(*keys)
    return unlinked


def _text(key: RawKey) -> str:
    return key.decode("utf-8", "replace") if isinstance(key, bytes) else key


def _header_bytes(value: str) -> bytes:
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")

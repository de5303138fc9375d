"""Finding and reading stored entries: the key of a described request, its versions, a record's contents."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import aclosing
from typing import Any

from ..described import described_digest, request_scope
from ..entry import Entry, VaryMarker, decode, decode_row
from ..keys import Headers, KeySpace, KeySpec, variant_key
from ..policy import CREDENTIAL_HEADERS
from ..rules import CacheRule
from .scan import DEFAULT_PREFIX, Client, scan_keys, text

PREVIEW_BYTES = 200
_MAC_BYTES = 32

__all__ = ["request_scope"]


def _spec(rule: CacheRule | KeySpec) -> KeySpec:
    return rule.keying if isinstance(rule, CacheRule) else rule


def request_key(
    *,
    prefix: str = DEFAULT_PREFIX,
    namespace: str,
    version: str,
    rule: CacheRule | KeySpec,
    method: str,
    url: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    root_path: str = "",
    credential_headers: Sequence[bytes] = CREDENTIAL_HEADERS,
) -> str:
    """The key the middleware uses for this request under `rule` (the URL as the app receives it).
    Under a Vary marker the response itself is at the variant key: see `follow_vary`."""
    digest = request_digest_for(rule, method, url, body, headers, root_path, credential_headers)
    return KeySpace(prefix, namespace, version).entry(_spec(rule).name, digest)


def request_digest_for(
    rule: CacheRule | KeySpec,
    method: str,
    url: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    root_path: str = "",
    credential_headers: Sequence[bytes] = CREDENTIAL_HEADERS,
) -> str:
    """The digest part of `request_key`: the same for every version of the namespace."""
    return described_digest(_spec(rule), method, url, body, headers, root_path, tuple(credential_headers))


async def locate_request(
    client: Client,
    *,
    prefix: str = DEFAULT_PREFIX,
    namespace: str,
    rule: CacheRule | KeySpec,
    digest: str,
    version: str | None = None,
    batch: int = 500,
) -> list[str]:
    """The stored keys of one request (its digest under `rule`): in `version`, or in every version by SCAN."""
    name = _spec(rule).name
    space = KeySpace(prefix, namespace)
    if version is not None:
        key = space.with_version(version).entry(name, digest)
        return [key] if await client.exists(key) else []
    pattern = space.entries_glob(name).removesuffix("*") + digest
    found: list[str] = []
    async with aclosing(scan_keys(client, pattern, batch)) as keys:
        async for raw in keys:
            key = text(raw)
            parts = space.parse(key)
            if parts is not None and parts[1] == name and parts[2] == digest:
                found.append(key)
    return sorted(found)


async def sample_keys(
    client: Client, *, prefix: str = DEFAULT_PREFIX, namespace: str, limit: int = 20, batch: int = 500
) -> list[str]:
    """Up to `limit` entry keys of `namespace`, sorted; which ones is up to SCAN's order."""
    found: list[str] = []
    if limit < 1:
        return found
    space = KeySpace(prefix, namespace)
    async with aclosing(scan_keys(client, space.entries_glob(), batch)) as keys:
        async for raw in keys:
            key = text(raw)
            if space.parse(key) is not None:
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
    return (await read_records(client, [key], signing_key=signing_key, now=now))[key][0]


async def read_records(
    client: Client, keys: Sequence[str], *, signing_key: bytes | None = None, now: float | None = None
) -> dict[str, tuple[dict[str, Any] | None, Entry | None]]:
    """For each of `keys`, in one pipeline: what `inspect` says of it, and the stored response itself
    (None when absent, a marker, or invalid)."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.get(key)
        pipe.pttl(key)
    answers = await pipe.execute()
    at = time.time() if now is None else now
    found: dict[str, tuple[dict[str, Any] | None, Entry | None]] = {}
    for index, key in enumerate(keys):
        data, pttl = answers[2 * index], answers[2 * index + 1]
        found[key] = (
            (None, None) if data is None or pttl == -2 else _described(key, data, pttl, signing_key, at)
        )
    return found


def _described(
    key: str, data: bytes, pttl: int, signing_key: bytes | None, at: float
) -> tuple[dict[str, Any], Entry | None]:
    redis_ttl = None if pttl < 0 else pttl / 1000
    row = _decode_row(data, key, signing_key)
    if row is not None:  # a row record (rowpath.py): no age of its own, it lives as long as Redis keeps it
        value, delta, row_signature = row
        lifetime = redis_ttl if redis_ttl is not None else math.inf
        return {
            "key": key,
            "size": len(data),
            "redis_ttl": redis_ttl,
            "signature": row_signature,
            "kind": "row",
            "compute_seconds": delta,
            "fresh": True,
            "body_bytes": len(value),
            "body_preview": value[:PREVIEW_BYTES].decode("utf-8", errors="replace"),
        }, Entry(key, 200, [], value, at, lifetime, delta=delta)
    entry, signature = _decode(data, key, signing_key)
    common = {"key": key, "size": len(data), "redis_ttl": redis_ttl, "signature": signature}
    if entry is None:
        return {**common, "kind": "invalid"}, None
    if isinstance(entry, VaryMarker):
        return {
            **common,
            "kind": "vary-marker",
            "vary": [name.decode("latin-1") for name in entry.names],
        }, None
    described = {
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
    return described, entry


async def follow_vary(
    client: Client, key: str, headers: Headers, signing_key: bytes | None = None
) -> str | None:
    """When a Vary marker is stored at `key`, the key of the variant that these request `headers` select."""
    data = await client.get(key)
    record = _decode(data, key, signing_key)[0] if isinstance(data, bytes) else None
    return variant_key(key, record.names, headers) if isinstance(record, VaryMarker) else None


def _decode_row(data: bytes, key: str, signing_key: bytes | None) -> tuple[bytes, float, str | None] | None:
    """A row record's value, compute seconds and signature state (None: not a row of `key`)."""
    row = decode_row(data, key, signing_key)
    if row is not None:
        return row[0], row[1], None if signing_key is None else "valid"
    if signing_key is None and len(data) > _MAC_BYTES:
        row = decode_row(data[:-_MAC_BYTES], key)
        if row is not None:
            return row[0], row[1], "not checked"
    return None


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

"""The stored response: a compact, versioned, self-checking binary record (never pickle).

Layout: `b"RCM"`, one format-version byte, a 4-byte big-endian metadata length, the metadata as an
orjson array `[key, status, created, ttl, body_length, [[name, value], ...]]`, then the body bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

MAGIC = b"RCM"
FORMAT_VERSION = 1
_HEAD = MAGIC + bytes([FORMAT_VERSION])
_PREFIX_LEN = len(_HEAD) + 4


@dataclass(slots=True)
class Entry:
    """A response as stored: `created` is a Unix time, `ttl` its freshness lifetime in seconds."""

    key: str
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    created: float
    ttl: float

    def age(self, now: float) -> float:
        """Seconds since the entry was stored (never negative, whatever the clocks say)."""
        return max(0.0, now - self.created)

    def is_fresh(self, now: float) -> bool:
        return self.age(now) < self.ttl


def encode(entry: Entry) -> bytes:
    """Serialise an entry; `decode(encode(e), e.key)` gives it back."""
    meta = orjson.dumps(
        [
            entry.key,
            entry.status,
            entry.created,
            entry.ttl,
            len(entry.body),
            [[name.decode("latin-1"), value.decode("latin-1")] for name, value in entry.headers],
        ]
    )
    return b"".join((_HEAD, len(meta).to_bytes(4, "big"), meta, entry.body))


def decode(data: bytes, key: str) -> Entry | None:
    """The entry stored under `key`, or None when `data` is corrupt, truncated, of another format or key."""
    if not data.startswith(_HEAD) or len(data) < _PREFIX_LEN:
        return None
    meta_end = _PREFIX_LEN + int.from_bytes(data[len(_HEAD) : _PREFIX_LEN], "big")
    try:
        stored_key, status, created, ttl, body_length, raw_headers = orjson.loads(data[_PREFIX_LEN:meta_end])
        if stored_key != key or len(data) - meta_end != body_length:
            return None
        headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in raw_headers]
    except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError, UnicodeEncodeError):
        return None
    if not (isinstance(status, int) and isinstance(created, int | float) and isinstance(ttl, int | float)):
        return None
    return Entry(key, status, headers, data[meta_end:], float(created), float(ttl))

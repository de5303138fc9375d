"""Stored records: a compact, versioned, self-checking binary format (never pickle), optionally signed.

Layout: a 3-byte magic (`RCM` a response, `RCV` a Vary marker), one format-version byte, a 4-byte
big-endian metadata length, the metadata as an orjson array, then the body bytes. With a signing key the
record ends with a 32-byte HMAC-SHA256 of everything before it.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, field

import orjson

FORMAT_VERSION = 2
_RESPONSE = b"RCM" + bytes([FORMAT_VERSION])
_VARY = b"RCV" + bytes([FORMAT_VERSION])
_PREFIX_LEN = len(_RESPONSE) + 4
_MAC_LEN = 32

# Entry.flags bits
MUST_REVALIDATE = 1  # never served stale (RFC 9111 section 5.2.2.2)
REVALIDATABLE = 2  # honor_origin entry with a validator: revalidate with the app when stale


@dataclass(slots=True)
class Entry:
    """A stored response. `created` is a Unix time; the entry is fresh while `age < ttl`.

    `initial_age` is the age the response already had when stored (RFC 9111 section 4.2.3); `etag` its
    strong validator; `delta` the seconds the app took to produce it (for early refresh); `vary` the
    response's Vary fields that selected this variant beyond the rule's own. `stale_while_revalidate` and
    `stale_if_error` are the seconds past expiry it may be served stale (RFC 5861); None in records written
    before they were stored, meaning the rule's.
    """

    key: str
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    created: float
    ttl: float
    etag: bytes = b""
    delta: float = 0.0
    initial_age: float = 0.0
    flags: int = 0
    last_modified: bytes = b""
    vary: tuple[bytes, ...] = field(default=())
    stale_while_revalidate: float | None = None
    stale_if_error: float | None = None

    def age(self, now: float) -> float:
        """Seconds since the response was generated (never negative, whatever the clocks say)."""
        return self.initial_age + max(0.0, now - self.created)

    def is_fresh(self, now: float) -> bool:
        return self.age(now) < self.ttl


@dataclass(slots=True)
class VaryMarker:
    """Stored at a primary key when responses vary on headers the rule does not key: their names."""

    key: str
    names: tuple[bytes, ...]


def encode(entry: Entry, signing_key: bytes | None = None) -> bytes:
    """Serialise an entry; `decode(encode(e, k), e.key, k)` gives it back."""
    meta = orjson.dumps(
        [
            entry.key,
            entry.status,
            entry.created,
            entry.ttl,
            len(entry.body),
            [[name.decode("latin-1"), value.decode("latin-1")] for name, value in entry.headers],
            entry.etag.decode("latin-1"),
            entry.delta,
            entry.initial_age,
            entry.flags,
            entry.last_modified.decode("latin-1"),
            [name.decode("latin-1") for name in entry.vary],
            entry.stale_while_revalidate,
            entry.stale_if_error,
        ]
    )
    return _seal(b"".join((_RESPONSE, len(meta).to_bytes(4, "big"), meta, entry.body)), signing_key)


def encode_marker(marker: VaryMarker, signing_key: bytes | None = None) -> bytes:
    meta = orjson.dumps([marker.key, [name.decode("latin-1") for name in marker.names]])
    return _seal(b"".join((_VARY, len(meta).to_bytes(4, "big"), meta)), signing_key)


def decode(data: bytes, key: str, signing_key: bytes | None = None) -> Entry | VaryMarker | None:
    """The record stored under `key`, or None when it is corrupt, truncated, unsigned or mis-signed when a
    signing key is set, of another format version, or written for another key."""
    if signing_key is not None:
        body, mac = data[:-_MAC_LEN], data[-_MAC_LEN:]
        if len(data) < _MAC_LEN or not hmac.compare_digest(mac, _mac(body, signing_key)):
            return None
        data = body
    head = data[: len(_RESPONSE)]
    if len(data) < _PREFIX_LEN or head not in (_RESPONSE, _VARY):
        return None
    meta_end = _PREFIX_LEN + int.from_bytes(data[len(_RESPONSE) : _PREFIX_LEN], "big")
    try:
        meta = orjson.loads(data[_PREFIX_LEN:meta_end])
        if head == _VARY:
            stored_key, names = meta
            if stored_key != key or meta_end != len(data):
                return None
            return VaryMarker(key, tuple(name.encode("latin-1") for name in names))
        windows = _windows(meta[12:]) if len(meta) > 12 else (None, None)
        (
            stored_key,
            status,
            created,
            ttl,
            body_length,
            raw_headers,
            etag,
            delta,
            initial_age,
            flags,
            lm,
            vary,
        ) = meta[:12]
        if stored_key != key or len(data) - meta_end != body_length:
            return None
        headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in raw_headers]
        return Entry(
            key,
            int(status),
            headers,
            data[meta_end:],
            float(created),
            float(ttl),
            etag.encode("latin-1"),
            float(delta),
            float(initial_age),
            int(flags),
            lm.encode("latin-1"),
            tuple(name.encode("latin-1") for name in vary),
            *windows,
        )
    except (ValueError, TypeError, AttributeError, UnicodeEncodeError):
        return None


def _windows(extra: list[object]) -> tuple[float | None, float | None]:
    """The stale windows appended to the metadata of format version 2 (records without them decode with
    None: the rule's windows apply); anything but two numbers or nulls is corrupt."""
    swr, sie = extra  # ValueError unless exactly two
    return _seconds(swr), _seconds(sie)


def _seconds(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"not a number of seconds: {value!r}")
    return float(value)


def _seal(data: bytes, signing_key: bytes | None) -> bytes:
    return data if signing_key is None else data + _mac(data, signing_key)


def _mac(data: bytes, signing_key: bytes) -> bytes:
    return hmac.new(signing_key, data, hashlib.sha256).digest()


# A row of a row space (rowpath.py): `RCR`, the format version, the 8-byte compute time (float64), the
# key's length (2 bytes), the value's length (4 bytes), the key, then the value's JSON bytes; sealed like
# every record. Far cheaper to
# read than a response record: a batch reads dozens of them per request. Rows expire in Redis, never stale.
_ROW = b"RCR" + bytes([FORMAT_VERSION])
_ROW_HEAD = len(_ROW) + 8 + 2 + 4


def encode_row(key: str, value: bytes, delta: float, signing_key: bytes | None = None) -> bytes:
    """Serialise one row's value (and the app time it took); `decode_row` gives them back."""
    raw_key = key.encode()
    head = _ROW + struct.pack(">dHI", delta, len(raw_key), len(value))
    return _seal(b"".join((head, raw_key, value)), signing_key)


def decode_row(data: bytes, key: str, signing_key: bytes | None = None) -> tuple[bytes, float] | None:
    """(value, compute seconds) of the row stored under `key`; None when corrupt, mis-signed or another's."""
    if signing_key is not None:
        body, mac = data[:-_MAC_LEN], data[-_MAC_LEN:]
        if len(data) < _MAC_LEN or not hmac.compare_digest(mac, _mac(body, signing_key)):
            return None
        data = body
    if len(data) < _ROW_HEAD or not data.startswith(_ROW):
        return None
    delta, length, value_length = struct.unpack_from(">dHI", data, len(_ROW))
    end = _ROW_HEAD + length
    if data[_ROW_HEAD:end] != key.encode() or len(data) - end != value_length:
        return None
    return data[end:], delta

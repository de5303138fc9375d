"""Byte ranges served from a stored complete response (RFC 9110 section 14), as plain functions.

Choice: ranges are sorted and overlapping or adjacent ones coalesced (section 14.2 allows it); one range left
is answered with a single part, several with `multipart/byteranges` (section 14.6). More than `MAX_RANGES`
ranges, another unit, or bad syntax: the Range field is ignored and the whole response is sent.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from .httpdate import parse_http_date

MAX_RANGES = 16
_SPEC = re.compile(rb"(\d*)-(\d*)")
CACHE_VALIDATOR_MARGIN = 60.0  # RFC 9110 section 8.8.2.2: a cache's Last-Modified is strong this early


@dataclass(frozen=True, slots=True)
class Unsatisfiable:
    """No range of a valid Range field overlaps the representation (RFC 9110 section 15.5.17: 416)."""


UNSATISFIABLE = Unsatisfiable()


def parse_range(header: bytes, length: int) -> list[tuple[int, int]] | Unsatisfiable | None:
    """The satisfiable ranges of a `Range` field as inclusive (first, last) byte positions, sorted and
    coalesced (RFC 9110 section 14.1.1); UNSATISFIABLE for none; None to ignore the field (not `bytes`,
    malformed, more than MAX_RANGES ranges, or an empty representation)."""
    unit, sep, range_set = header.partition(b"=")
    if not sep or unit.strip(b" \t").lower() != b"bytes" or length <= 0:
        return None
    specs = [spec.strip(b" \t") for spec in range_set.split(b",")]
    specs = [spec for spec in specs if spec]  # section 5.6.1: empty list elements are ignored
    if not specs or len(specs) > MAX_RANGES:
        return None
    ranges: list[tuple[int, int]] = []
    for spec in specs:
        match = _SPEC.fullmatch(spec)
        if match is None or not (match[1] or match[2]):
            return None
        if not match[1]:  # suffix-range: the last N bytes, satisfiable when N > 0
            suffix = int(match[2])
            if suffix > 0:
                ranges.append((max(0, length - suffix), length - 1))
            continue
        first = int(match[1])
        last = int(match[2]) if match[2] else None
        if last is not None and last < first:
            return None  # an invalid range-spec makes the field invalid
        if first < length:
            ranges.append((first, length - 1 if last is None else min(last, length - 1)))
    return _coalesce(ranges) if ranges else UNSATISFIABLE


def if_range_allows(if_range: bytes, etag: bytes, last_modified: bytes, date: bytes = b"") -> bool:
    """Whether an `If-Range` lets the Range apply (RFC 9110 section 13.1.5): an entity-tag by strong
    comparison, or an HTTP-date equal to a Last-Modified that is strong (at least 60 s before `date`)."""
    value = if_range.strip(b" \t")
    if value.startswith(b'"') or value.startswith(b"W/"):
        return value.startswith(b'"') and value == etag.strip() and not etag.startswith(b"W/")
    wanted, modified, sent = parse_http_date(value), parse_http_date(last_modified), parse_http_date(date)
    if wanted is None or modified is None or sent is None:
        return False
    return wanted == modified and modified <= sent - CACHE_VALIDATOR_MARGIN


def partial_response(
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    ranges: list[tuple[int, int]],
    boundary: bytes | None = None,
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The 206 answer for `ranges` of a stored 200 (RFC 9110 section 15.3.7): its fields but Content-Length
    (recomputed) and, for several ranges, Content-Type (multipart/byteranges, section 14.6)."""
    if status != 200:
        raise ValueError(f"only a complete 200 response can answer a range request, not {status}")
    length = len(body)
    kept = [(n, v) for n, v in headers if n.lower() not in (b"content-length", b"content-range")]
    if len(ranges) == 1:
        first, last = ranges[0]
        part = body[first : last + 1]
        kept.append((b"content-range", _content_range(first, last, length)))
        return 206, [*kept, (b"content-length", str(len(part)).encode())], part
    content_type = next((v for n, v in headers if n.lower() == b"content-type"), None)
    boundary = boundary or _boundary(body)
    parts: list[bytes] = []
    for first, last in ranges:
        head = b"--" + boundary + b"\r\n"
        if content_type is not None:
            head += b"content-type: " + content_type + b"\r\n"
        head += b"content-range: " + _content_range(first, last, length) + b"\r\n\r\n"
        parts.append(head + body[first : last + 1] + b"\r\n")
    multipart = b"".join(parts) + b"--" + boundary + b"--\r\n"
    kept = [(n, v) for n, v in kept if n.lower() != b"content-type"]
    kept.append((b"content-type", b"multipart/byteranges; boundary=" + boundary))
    return 206, [*kept, (b"content-length", str(len(multipart)).encode())], multipart


def unsatisfiable_response(length: int) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The 416 answer (RFC 9110 section 15.5.17) with `Content-Range: bytes */length`."""
    return 416, [(b"content-range", b"bytes */%d" % length), (b"content-length", b"0")], b""


def _coalesce(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def _content_range(first: int, last: int, length: int) -> bytes:
    return b"bytes %d-%d/%d" % (first, last, length)


def _boundary(body: bytes) -> bytes:
    while True:
        boundary = secrets.token_hex(16).encode()
        if boundary not in body:
            return boundary

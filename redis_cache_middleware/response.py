"""Answers built by the cache: a stored entry rendered for one request, and the cache's own headers."""

from __future__ import annotations

from typing import NamedTuple

from starlette.types import Send

from . import policy, ranges
from .config import CacheConfig
from .entry import Entry
from .keys import Headers
from .metrics import Outcome

RawHeaders = list[tuple[bytes, bytes]]
_CONDITIONAL_HEADERS = frozenset({b"if-none-match", b"if-modified-since"})
# RFC 9110 section 15.5.17: a 416 describes no representation, so none of its content fields.
_NOT_IN_416 = frozenset({b"content-type", b"content-encoding", b"content-language", b"content-location"})


class CacheStatus(NamedTuple):
    """What the cache tells the client: `X-Cache` and the RFC 9211 Cache-Status parameters."""

    x_cache: bytes
    params: tuple[str, ...]
    outcome: Outcome


def hit(ttl_left: int) -> CacheStatus:
    return CacheStatus(b"HIT", ("hit", f"ttl={ttl_left}"), Outcome.HIT)


def stale(ttl_left: int) -> CacheStatus:
    """Served stale while a background refresh runs (RFC 5861 stale-while-revalidate)."""
    return CacheStatus(b"STALE", ("hit", f"ttl={ttl_left}"), Outcome.STALE)


def stale_if_error(*params: str) -> CacheStatus:
    """Served stale because the app failed (RFC 5861 stale-if-error)."""
    return CacheStatus(b"STALE", ("fwd=stale", *params, "detail=stale-if-error"), Outcome.STALE)


def miss(fwd: str, stored: bool = False) -> CacheStatus:
    return CacheStatus(b"MISS", (fwd, "stored") if stored else (fwd,), Outcome.MISS)


COLLAPSED = CacheStatus(b"HIT", ("fwd=uri-miss", "collapsed"), Outcome.COLLAPSED)
REVALIDATED = CacheStatus(b"HIT", ("fwd=stale", "fwd-status=304"), Outcome.REVALIDATED)


def bypass(reason: str) -> CacheStatus:
    return CacheStatus(b"BYPASS", ("fwd=bypass", f"detail={reason}"), Outcome.BYPASS)


class StatusHeaders:
    """Renders a `CacheStatus` as response fields, per the configuration (none when headers are off).

    The fields of each distinct status are rendered once and shared: callers copy, never mutate them.
    """

    _MAX_RENDERED = 4096

    def __init__(self, config: CacheConfig) -> None:
        self.name = config.cache_name
        self.enabled = config.cache_headers
        self.debug = config.debug
        self._rendered: dict[CacheStatus, RawHeaders] = {}

    def __call__(self, status: CacheStatus, key: str) -> RawHeaders:
        if not self.enabled:
            return []
        if self.debug:
            params = (*status.params, f'key="{key}"')
            return [(b"x-cache", status.x_cache), (b"cache-status", policy.cache_status(self.name, *params))]
        rendered = self._rendered.get(status)
        if rendered is None:
            if len(self._rendered) >= self._MAX_RENDERED:
                self._rendered.clear()
            value = policy.cache_status(self.name, *status.params)
            rendered = self._rendered[status] = [(b"x-cache", status.x_cache), (b"cache-status", value)]
        return rendered


def render(
    entry: Entry,
    request_headers: Headers,
    age: float,
    hidden: frozenset[bytes] = frozenset(),
    ranged: bool = False,
) -> tuple[int, RawHeaders, bytes]:
    """Status, fields and body answering a request from `entry`: 304 when the request's conditions hold
    (RFC 9110 section 13.1), when `ranged` (a GET with Range) a 206 or 416 (section 14), the stored body
    otherwise; with Content-Length and `Age`, without the `hidden` fields."""
    if (
        200 <= entry.status < 300
        and not _CONDITIONAL_HEADERS.isdisjoint(request_headers)
        and policy.not_modified(request_headers, entry.etag, entry.last_modified)
    ):
        status, headers, body = 304, policy.not_modified_headers(entry.headers), b""
    else:
        status, body = entry.status, entry.body
        headers = [(name, value) for name, value in entry.headers if name not in hidden]
        if ranged and status == 200:
            status, headers, body = _ranged(entry, request_headers, headers)
        elif status in policy.BODYLESS_STATUSES:
            body = b""
        else:
            headers.append((b"content-length", str(len(body)).encode()))
    headers.append((b"age", str(int(age)).encode()))
    return status, headers, body


def _ranged(entry: Entry, request_headers: Headers, headers: RawHeaders) -> tuple[int, RawHeaders, bytes]:
    """A stored 200 answering a GET with Range (RFC 9110 section 14.2): 206 for satisfiable ranges, 416
    for none; the whole response when If-Range fails (section 13.1.5) or the Range field is ignored."""
    body = entry.body
    whole = 200, [*headers, (b"content-length", str(len(body)).encode())], body
    if_range = request_headers.get(b"if-range")
    date = next((value for name, value in entry.headers if name == b"date"), b"")
    if if_range and not ranges.if_range_allows(if_range[0], entry.etag, entry.last_modified, date):
        return whole
    wanted = request_headers[b"range"]
    selected = ranges.parse_range(wanted[0], len(body)) if len(wanted) == 1 else None
    if selected is None:
        return whole
    if isinstance(selected, ranges.Unsatisfiable):
        status, extra, _ = ranges.unsatisfiable_response(len(body))
        kept = [(n, v) for n, v in headers if n not in _NOT_IN_416]
        return status, kept + extra, b""
    return ranges.partial_response(200, headers, body, selected)


async def send_response(send: Send, status: int, headers: RawHeaders, body: bytes) -> None:
    """A whole response in two messages."""
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

"""Answers built by the cache: a stored entry rendered for one request, and the cache's own headers."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import Send

from . import policy
from .config import CacheConfig
from .entry import Entry
from .keys import Headers
from .metrics import Outcome

RawHeaders = list[tuple[bytes, bytes]]
_CONDITIONAL_HEADERS = frozenset({b"if-none-match", b"if-modified-since"})


@dataclass(frozen=True, slots=True)
class CacheStatus:
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
    """Renders a `CacheStatus` as response fields, per the configuration (none when headers are off)."""

    def __init__(self, config: CacheConfig) -> None:
        self.name = config.cache_name
        self.enabled = config.cache_headers
        self.debug = config.debug

    def __call__(self, status: CacheStatus, key: str) -> RawHeaders:
        if not self.enabled:
            return []
        params = (*status.params, f'key="{key}"') if self.debug else status.params
        return [(b"x-cache", status.x_cache), (b"cache-status", policy.cache_status(self.name, *params))]


def render(entry: Entry, request_headers: Headers, age: float) -> tuple[int, RawHeaders, bytes]:
    """Status, fields and body answering a request from `entry`: 304 when the request's conditions hold
    (RFC 9110 section 13.1), the stored body otherwise, with Content-Length and `Age`."""
    if (
        200 <= entry.status < 300
        and not _CONDITIONAL_HEADERS.isdisjoint(request_headers)
        and policy.not_modified(request_headers, entry.etag, entry.last_modified)
    ):
        status, headers, body = 304, policy.not_modified_headers(entry.headers), b""
    else:
        status, headers, body = entry.status, list(entry.headers), entry.body
        if status in policy.BODYLESS_STATUSES:
            body = b""
        else:
            headers.append((b"content-length", str(len(body)).encode()))
    headers.append((b"age", str(int(age)).encode()))
    return status, headers, body


async def send_response(send: Send, status: int, headers: RawHeaders, body: bytes) -> None:
    """A whole response in two messages."""
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

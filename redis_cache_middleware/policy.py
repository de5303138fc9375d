"""HTTP caching rules as plain functions over headers: no I/O, no state."""

from __future__ import annotations

from collections.abc import Iterable

from .rules import CacheRule

RawHeaders = Iterable[tuple[bytes, bytes]]

# RFC 9110 section 7.6.1: connection-specific fields a cache must not store or forward from storage.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Never stored: hop-by-hop fields, cookies (one client's state), and fields recomputed on every hit.
NOT_STORED = HOP_BY_HOP | {b"set-cookie", b"content-length", b"age", b"x-cache", b"cache-status"}
# Request fields that carry a client's identity: such requests are neither answered from nor stored.
CREDENTIAL_HEADERS = frozenset({b"authorization", b"cookie"})


def parse_cache_control(values: Iterable[bytes]) -> dict[str, str | None]:
    """Directives of one or more Cache-Control fields, lowercased, quotes removed (RFC 9111 section 5.2)."""
    directives: dict[str, str | None] = {}
    for value in values:
        for part in value.decode("latin-1").split(","):
            name, sep, argument = part.strip().partition("=")
            if name:
                directives.setdefault(name.lower(), argument.strip().strip('"') if sep else None)
    return directives


def unstorable_reason(rule: CacheRule, status: int, headers: RawHeaders) -> str | None:
    """Why a response may not be stored under `rule`, or None when it may (RFC 9111 section 3)."""
    if status not in rule.status_set:
        return "status"
    cache_control: list[bytes] = []
    vary: list[bytes] = []
    for raw_name, value in headers:
        name = raw_name.lower()
        if name == b"set-cookie":
            return "set-cookie"
        if name == b"cache-control":
            cache_control.append(value)
        elif name == b"vary":
            vary.append(value)
        elif name == b"content-length" and _over_limit(value, rule.max_body_bytes):
            return "too-large"
    if cache_control:
        directives = parse_cache_control(cache_control)
        for directive in ("no-store", "private", "no-cache"):
            if directive in directives:
                return directive
    if vary and not vary_is_keyed(rule, vary):
        return "vary"
    return None


def vary_is_keyed(rule: CacheRule, vary: Iterable[bytes]) -> bool:
    """True when every field the response varies on is in the rule's key (`Vary: *` never is)."""
    for value in vary:
        for field in value.split(b","):
            name = field.strip().lower()
            if name and name not in rule.vary_names:
                return False
    return True


def _over_limit(content_length: bytes, limit: int) -> bool:
    try:
        return int(content_length) > limit
    except ValueError:
        return True


def stored_headers(headers: RawHeaders) -> list[tuple[bytes, bytes]]:
    """The response fields worth keeping with a stored entry."""
    return [(name, value) for name, value in headers if name.lower() not in NOT_STORED]


def cache_status(cache_name: str, outcome: str, *params: str) -> bytes:
    """A Cache-Status field value (RFC 9211), e.g. `name; hit; ttl=42` or `name; fwd=uri-miss; stored`."""
    return "; ".join((cache_name, outcome, *params)).encode("latin-1")

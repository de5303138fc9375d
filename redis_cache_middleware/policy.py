"""HTTP caching rules as plain functions over headers: no I/O, no state. Sections are RFC 9111's unless
another RFC is named."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from hashlib import blake2b

from .entry import MUST_REVALIDATE, REVALIDATABLE
from .httpdate import parse_http_date
from .rules import CacheRule
from .targeted import targeted_directives

RawHeaders = Iterable[tuple[bytes, bytes]]
HeaderMap = dict[bytes, list[bytes]]

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
# Never stored: hop-by-hop fields, cookies (one client's state), fields recomputed on every hit, and the
# app's tag header (stripped before any client sees it).
TAG_HEADERS = frozenset({b"cache-tag", b"surrogate-key"})
NOT_STORED = (
    HOP_BY_HOP | TAG_HEADERS | {b"set-cookie", b"content-length", b"age", b"x-cache", b"cache-status"}
)
# Request fields that carry a client's identity by default: such requests bypass unless the rule is private.
CREDENTIAL_HEADERS = (b"authorization", b"cookie", b"x-api-key")
# Section 4.2.2: statuses that may be given a heuristic lifetime.
HEURISTICALLY_CACHEABLE = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})
# RFC 9110 section 15.4.5: what a 304 carries of the stored response.
NOT_MODIFIED_FIELDS = frozenset(
    {b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary", b"last-modified"}
)
BODYLESS_STATUSES = frozenset({204, 304})
# Section 3.3 / RFC 9110 section 14: a part of a response, or a 304, is never an entry of its own, whatever
# the rule's statuses say (ranges are answered from stored complete responses instead).
NEVER_STORED_STATUSES = frozenset({206, 304})
HEURISTIC_FRACTION = 0.1
MAX_DELTA_SECONDS = 2**31  # section 1.2.2: the value of any delta-seconds too large to represent


def headers_map(headers: RawHeaders) -> HeaderMap:
    """Every field's values under its lowercased name, in order."""
    collected: HeaderMap = {}
    for name, value in headers:
        collected.setdefault(name.lower(), []).append(value)
    return collected


def parse_cache_control(values: Iterable[bytes]) -> dict[str, str | None]:
    """Directives of one or more Cache-Control fields, lowercased, quotes removed (section 5.2)."""
    directives: dict[str, str | None] = {}
    for value in values:
        for part in value.decode("latin-1").split(","):
            name, sep, argument = part.strip().partition("=")
            if name:
                directives.setdefault(name.strip().lower(), argument.strip().strip('"') if sep else None)
    return directives


def delta_seconds(value: str | None) -> int | None:
    """A delta-seconds argument (section 1.2.2: ASCII digits, at most 2**31), or None when missing or
    malformed."""
    if value is None or not value or not value.isascii() or not value.isdigit():
        return None
    return min(int(value), MAX_DELTA_SECONDS)


def age_value(values: Iterable[bytes]) -> int | None:
    """The Age field's value (section 5.1): the first member of a list counts; None when absent or invalid
    (the field is then ignored)."""
    for value in values:
        return delta_seconds(value.split(b",")[0].strip(b" \t").decode("latin-1"))
    return None


def corrected_initial_age(
    age: int | None, date: float | None, request_time: float, response_time: float
) -> float:
    """Section 4.2.3: max(apparent_age, corrected_age_value), where apparent_age = max(0, response_time -
    date_value) and corrected_age_value = age_value + (response_time - request_time)."""
    apparent_age = max(0.0, response_time - date) if date is not None else 0.0
    response_delay = max(0.0, response_time - request_time)
    return max(apparent_age, (age or 0) + response_delay)


def strong_etag(body: bytes) -> bytes:
    """A strong validator derived from the body, for responses the app sent without one."""
    return b'"' + blake2b(body, digest_size=12).hexdigest().encode() + b'"'


@dataclass(slots=True)
class Storage:
    """How a response may be stored: `reason` is why not (None when it may), `ttl` its freshness lifetime."""

    reason: str | None
    ttl: float = 0.0
    initial_age: float = 0.0
    flags: int = 0
    etag: bytes = b""
    last_modified: bytes = b""
    vary: tuple[bytes, ...] = ()
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0


def storage(
    rule: CacheRule,
    status: int,
    headers: RawHeaders,
    now: float,
    requested: float | None = None,
    *,
    targeted_fields: Iterable[str] = (),
) -> Storage:
    """Whether and for how long a response received at `now` to a request forwarded at `requested` (default
    `now`) may be stored under `rule` (section 3; section 4.2 with `honor_origin`). The first valid field of
    `targeted_fields` replaces Cache-Control (RFC 9213 section 2.1). `vary` lists the Vary fields the rule
    does not already key; the stale windows are the rule's, bounded by the response's (RFC 5861)."""
    fields = headers_map(headers)
    if status in NEVER_STORED_STATUSES:
        return Storage("partial" if status == 206 else "not-modified")
    if status not in rule.status_set:
        return Storage("status")
    if b"set-cookie" in fields:
        return Storage("set-cookie")
    if _over_limit(fields.get(b"content-length"), rule.max_body_bytes):
        return Storage("too-large")
    vary = vary_names(fields.get(b"vary", ()))
    if vary is None:
        return Storage("vary")
    vary = tuple(name for name in vary if name not in rule.vary_names)
    directives = targeted_directives(fields, targeted_fields)
    if directives is None:
        directives = parse_cache_control(fields.get(b"cache-control", ()))
    if "no-store" in directives:
        return Storage("no-store")
    if "private" in directives:
        return Storage("private")
    etag = _first(fields, b"etag")
    last_modified = _first(fields, b"last-modified")
    flags = MUST_REVALIDATE if {"must-revalidate", "proxy-revalidate"} & directives.keys() else 0
    if not rule.honor_origin:
        if "no-cache" in directives:
            return Storage("no-cache")
        windows = _stale_windows(rule, directives, flags, honor_origin=False)
        return Storage(None, float(rule.ttl), 0.0, flags, etag, last_modified, vary, *windows)

    lifetime = freshness_lifetime(status, fields, directives, now)
    if lifetime is None:
        return Storage("not-cacheable")
    if "s-maxage" in directives:
        flags |= MUST_REVALIDATE  # section 5.2.2.10: s-maxage also means proxy-revalidate
    if "no-cache" in directives:
        lifetime, flags = 0.0, flags | MUST_REVALIDATE
    age = initial_age(fields, now, requested)
    if etag or last_modified:
        flags |= REVALIDATABLE
    elif lifetime <= age:
        return Storage("stale")  # stale on arrival, and nothing to revalidate it with
    windows = _stale_windows(rule, directives, flags, honor_origin=True)
    return Storage(None, min(lifetime, float(rule.ttl)), age, flags, etag, last_modified, vary, *windows)


def _stale_windows(
    rule: CacheRule, directives: dict[str, str | None], flags: int, honor_origin: bool
) -> tuple[float, float]:
    """RFC 5861 sections 3 and 4: seconds past expiry a stale entry may be served while revalidating and on
    error; the rule's values, bounded by the response's own directives with `honor_origin`; none when the
    response must be revalidated (RFC 9111 sections 5.2.2.2, 5.2.2.8 and 5.2.2.10)."""
    if flags & MUST_REVALIDATE:
        return 0.0, 0.0
    windows = []
    for directive, limit in (
        ("stale-while-revalidate", rule.stale_while_revalidate),
        ("stale-if-error", rule.stale_if_error),
    ):
        seconds = delta_seconds(directives.get(directive)) if honor_origin else None
        windows.append(float(limit) if seconds is None else min(float(seconds), float(limit)))
    return windows[0], windows[1]


def freshness_lifetime(
    status: int, fields: HeaderMap, directives: dict[str, str | None], now: float | None = None
) -> float | None:
    """Explicit lifetime (section 4.2.1: s-maxage, max-age, Expires - Date), else a heuristic one (section
    4.2.2) where permitted; None when the response is neither explicitly nor heuristically cacheable. A
    missing or invalid Date is the receiving time `now` (RFC 9110 section 6.6.1), if given."""
    for directive in ("s-maxage", "max-age"):
        if directive in directives:
            seconds = delta_seconds(directives[directive])
            return float(seconds) if seconds is not None else 0.0
    if b"expires" in fields:
        expires = parse_http_date(fields[b"expires"][0])
        if expires is None:
            return 0.0  # section 5.3: an invalid Expires means "already expired"
        date = _date(fields, now)
        return max(0.0, expires - date) if date is not None else 0.0
    if status not in HEURISTICALLY_CACHEABLE and "public" not in directives:
        return None
    last_modified = parse_http_date(_first(fields, b"last-modified"))
    date = _date(fields, now)
    if last_modified is None or date is None or last_modified > date:
        return 0.0
    return HEURISTIC_FRACTION * (date - last_modified)


def initial_age(fields: HeaderMap, now: float, requested: float | None = None) -> float:
    """The corrected initial age (section 4.2.3) of a response received at `now` to a request forwarded at
    `requested` (default `now`: no response delay)."""
    return corrected_initial_age(
        age_value(fields.get(b"age", ())), _date(fields), now if requested is None else requested, now
    )


def vary_names(values: Iterable[bytes]) -> tuple[bytes, ...] | None:
    """The sorted, lowercased field names of Vary (section 4.1), or None for `Vary: *`."""
    names: set[bytes] = set()
    for value in values:
        for field in value.split(b","):
            name = field.strip().lower()
            if name == b"*":
                return None
            if name:
                names.add(name)
    return tuple(sorted(names))


def not_modified(request: HeaderMap, etag: bytes, last_modified: bytes) -> bool:
    """Whether a GET/HEAD's conditions say the client's copy is current (RFC 9110 sections 13.1.2, 13.1.3
    and 13.2.2: If-None-Match by weak comparison wins over If-Modified-Since)."""
    if_none_match = request.get(b"if-none-match")
    if if_none_match is not None:
        if not etag:
            return False
        if len(if_none_match) == 1 and if_none_match[0].strip() == b"*":
            return True
        wanted = _opaque(etag)
        return any(_opaque(tag) == wanted for value in if_none_match for tag in entity_tags(value))
    if_modified_since = request.get(b"if-modified-since")
    if if_modified_since is None or not last_modified:
        return False
    since = parse_http_date(if_modified_since[0])
    modified = parse_http_date(last_modified)
    return since is not None and modified is not None and modified <= since


def entity_tags(value: bytes) -> list[bytes]:
    """The entity-tags of an `If-None-Match`/`If-Match` list (RFC 9110 section 8.8.3: a comma may stand
    inside a quoted tag; `*` counts only as the whole field value); [] when the list does not parse."""
    tags: list[bytes] = []
    position, end = 0, len(value)
    while position < end:
        if value[position] in b" \t,":
            position += 1
            continue
        start = position
        if value.startswith(b"W/", position):
            position += 2
        if position >= end or value[position] != 0x22:  # a tag must be quoted
            return []
        close = value.find(b'"', position + 1)
        if close < 0:
            return []
        tags.append(value[start : close + 1])
        position = close + 1
    return tags


def not_modified_headers(headers: RawHeaders) -> list[tuple[bytes, bytes]]:
    """The stored fields a 304 response repeats."""
    return [(name, value) for name, value in headers if name.lower() in NOT_MODIFIED_FIELDS]


def freshened_headers(stored: RawHeaders, update: RawHeaders) -> list[tuple[bytes, bytes]]:
    """Stored fields updated from a 304 (section 4.3.4): fields the 304 carries replace stored ones."""
    replacement = [(name, value) for name, value in update if name.lower() not in NOT_STORED]
    replaced = {name.lower() for name, _ in replacement} - {b"content-type", b"content-encoding"}
    return [(n, v) for n, v in stored if n.lower() not in replaced] + [
        (n, v) for n, v in replacement if n.lower() in replaced
    ]


def response_tags(headers: RawHeaders) -> tuple[str, ...]:
    """Tags the app gave a response in `Cache-Tag` (comma-separated) or `Surrogate-Key` (space-separated)."""
    tags: list[str] = []
    for name, value in headers:
        if name.lower() in TAG_HEADERS:
            tags += value.decode("latin-1").replace(",", " ").split()
    return tuple(dict.fromkeys(tags))


def client_headers(headers: RawHeaders, hidden: frozenset[bytes] = TAG_HEADERS) -> list[tuple[bytes, bytes]]:
    """The response fields a client gets: never the `hidden` ones, the app's tag headers and, unless the
    configuration forwards them, the targeted fields (RFC 9213 section 2.1 lets a cache drop them)."""
    return [(name, value) for name, value in headers if name.lower() not in hidden]


def stored_headers(headers: RawHeaders) -> list[tuple[bytes, bytes]]:
    """The response fields worth keeping with a stored entry, in order, names lowercased, values unchanged
    (Date included, never added: RFC 9111 section 3 and the README's note on Date)."""
    return [(lowered, value) for name, value in headers if (lowered := name.lower()) not in NOT_STORED]


def cache_status(cache_name: str, *params: str) -> bytes:
    """A Cache-Status field value (RFC 9211), e.g. `name; hit; ttl=42` or `name; fwd=uri-miss; stored`."""
    return "; ".join((cache_name, *params)).encode("latin-1")


def _opaque(tag: bytes) -> bytes:
    return tag[2:] if tag.startswith(b"W/") else tag


def _first(fields: HeaderMap, name: bytes) -> bytes:
    values = fields.get(name)
    return values[0] if values else b""


def _date(fields: HeaderMap, default: float | None = None) -> float | None:
    date = parse_http_date(_first(fields, b"date")) if b"date" in fields else None
    return default if date is None else date


def _over_limit(content_length: list[bytes] | None, limit: int) -> bool:
    if not content_length:
        return False
    try:
        return int(content_length[0]) > limit
    except ValueError:
        return True

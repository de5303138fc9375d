"""Hit-path optimisations proposed for files this folder does not own, measured by benchmarks/hitpath.py.

`canonical_request` here must stay byte-identical to `redis_cache_middleware.keys.canonical_request`
(same keys, so no cache is orphaned by adopting it); `canonical_request_matches` checks that, and
hitpath.py leaves the proposal out when keys.py has moved on.
"""

from __future__ import annotations

import random
from typing import Any

from redis_cache_middleware.keys import URL_REWRITING_HEADERS, Headers, canonical_body, canonical_query
from redis_cache_middleware.rules import CacheRule

_REWRITING = frozenset(URL_REWRITING_HEADERS)
_ALL_REWRITING_ABSENT = b"\x00\x00" * len(URL_REWRITING_HEADERS)
_GET = b"\x00\x00\x00\x03GET"


def _field(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def canonical_request(
    rule: CacheRule, scope: Any, headers: Headers, body: bytes | None, credentials: tuple[bytes, ...] = ()
) -> bytes:
    """keys.canonical_request with one list append per field and the usual case (no URL-rewriting
    header at all) written as one constant instead of thirteen calls."""
    out: list[bytes] = []
    append = out.append

    def put_header(name: bytes) -> None:
        values = headers.get(name)
        if not values:
            append(b"\x00\x00")
            return
        append(len(values).to_bytes(2, "big"))
        for value in values:
            append(len(value).to_bytes(4, "big"))
            append(value)

    method = scope["method"]
    append(_GET if method in ("GET", "HEAD") else _field(method.encode("ascii")))
    if rule.key_host:
        append(_field(str(scope.get("scheme", "http")).encode("ascii", "replace")))
        put_header(b"host")
    append(_field(str(scope.get("root_path", "")).encode("utf-8", "surrogateescape")))
    raw_path = scope.get("raw_path")
    path = raw_path if isinstance(raw_path, bytes) else str(scope["path"]).encode("utf-8", "surrogateescape")
    append(_field(path))
    query = scope.get("query_string", b"")
    pairs = canonical_query(query if isinstance(query, bytes) else b"")
    append(len(pairs).to_bytes(4, "big"))
    for name, value in pairs:
        append(len(name).to_bytes(4, "big"))
        append(name)
        append(len(value).to_bytes(4, "big"))
        append(value)
    put_header(b"content-type")
    if body is None:
        append(b"\x00")
    else:
        append(b"\x01")
        content_type = headers.get(b"content-type")
        append(_field(canonical_body(content_type[0] if content_type else None, body)))
    for name in rule.vary_names:
        append(_field(name))
        put_header(name)
    if _REWRITING.isdisjoint(headers):
        append(_ALL_REWRITING_ABSENT)
    else:
        for name in URL_REWRITING_HEADERS:
            put_header(name)
    if getattr(rule, "private", False):
        for name in credentials:
            append(_field(name))
            put_header(name)
    return b"".join(out)


def canonical_request_matches(
    rule: CacheRule, scope: Any, headers: Headers, credentials: tuple[bytes, ...], samples: int = 2000
) -> bool:
    """Whether the proposal still encodes exactly like keys.py, on `scope` and on random variations."""
    from redis_cache_middleware.keys import canonical_request as current

    names = [b"host", b"content-type", b"accept-language", b"x-forwarded-host", b"forwarded", b"cookie"]
    rnd = random.Random(0)

    def some_bytes() -> bytes:
        return bytes(rnd.choice(b"ab%2B+=&;x\xff") for _ in range(rnd.randint(0, 6)))

    cases = [(scope, headers, None)]
    for _ in range(samples):
        raw = [(rnd.choice(names), some_bytes()) for _ in range(rnd.randint(0, 5))]
        varied = {
            **scope,
            "method": rnd.choice(["GET", "HEAD", "POST"]),
            "root_path": rnd.choice(["", "/v1"]),
            "raw_path": rnd.choice([scope.get("raw_path"), None]),
            "query_string": b"&".join(some_bytes() for _ in range(rnd.randint(0, 4))),
        }
        sample_headers: Headers = {}
        for name, value in raw:
            sample_headers.setdefault(name, []).append(value)
        cases.append((varied, sample_headers, rnd.choice([None, b"", b'{"b": 1, "a": 2}', some_bytes()])))
    try:
        return all(
            current(rule, s, h, b, credentials) == canonical_request(rule, s, h, b, credentials)
            for s, h, b in cases
        )
    except TypeError:
        return False

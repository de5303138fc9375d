"""Canonical request keys: `{prefix}:{namespace}:{version}:{rule}:{digest}`.

The digest is BLAKE2b-128 over length-prefixed fields, so no two different field lists encode alike:
method (HEAD as GET), scheme and Host (unless the rule opts out), root path and raw path, the query as
percent-decoded pairs sorted by name only, Content-Type, the body (JSON canonicalised), and the rule's
`vary` headers (every occurrence, absent distinct from empty), the URL-rewriting headers that proxies set,
and for private rules the credentials.
"""

from __future__ import annotations

import re
from hashlib import blake2b
from operator import itemgetter
from urllib.parse import unquote_to_bytes

import orjson
from starlette.types import Scope

from .rules import CacheRule

Headers = dict[bytes, list[bytes]]

# Fields that proxies and frameworks use to rewrite the URL, host, scheme or method. An app may reflect
# them into a response, so they are always keyed: a request carrying one never shares an entry with one
# that does not (web cache poisoning through unkeyed headers).
URL_REWRITING_HEADERS = (
    b"forwarded",
    b"x-forwarded-host",
    b"x-forwarded-proto",
    b"x-forwarded-scheme",
    b"x-forwarded-port",
    b"x-forwarded-prefix",
    b"x-forwarded-server",
    b"x-host",
    b"x-original-url",
    b"x-rewrite-url",
    b"x-http-method-override",
    b"x-http-method",
    b"x-method-override",
)

_URL_REWRITING = frozenset(URL_REWRITING_HEADERS)
_NO_URL_REWRITING = b"\x00\x00" * len(URL_REWRITING_HEADERS)  # each absent: a zero count
_GET = b"\x00\x00\x00\x03GET"  # HEAD looks up the GET entry

# orjson turns integer literals of 20+ digits into floats, where the app's json.loads keeps them exact.
_LONG_NUMBER = re.compile(rb"\d{20}")


def canonical_query(query_string: bytes) -> list[tuple[bytes, bytes]]:
    """Percent-decoded (name, value) pairs sorted by name only: a repeated name keeps its values' order."""
    pairs: list[tuple[bytes, bytes]] = []
    for part in query_string.split(b"&"):
        if not part:
            continue
        name, _, value = part.partition(b"=")
        if b"%" in part or b"+" in part:
            name = unquote_to_bytes(name.replace(b"+", b" "))
            value = unquote_to_bytes(value.replace(b"+", b" "))
        pairs.append((name, value))
    pairs.sort(key=itemgetter(0))
    return pairs


def canonical_body(content_type: bytes | None, body: bytes) -> bytes:
    """JSON bodies re-serialised with sorted keys (tag `j`); anything else as its bytes (tag `r`)."""
    if content_type is not None and _is_json(content_type) and not _LONG_NUMBER.search(body):
        try:
            return b"j" + orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS)
        except orjson.JSONDecodeError:
            pass
    return b"r" + body


def _is_json(content_type: bytes) -> bool:
    media_type = content_type.partition(b";")[0].strip().lower()
    return media_type == b"application/json" or media_type.endswith(b"+json")


def canonical_request(
    rule: CacheRule, scope: Scope, headers: Headers, body: bytes | None, credentials: tuple[bytes, ...] = ()
) -> bytes:
    """The unambiguous encoding of everything that selects a response for this request under `rule`."""
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

    method = str(scope["method"])
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
    if _URL_REWRITING.isdisjoint(headers):  # the usual case: one constant instead of 13 calls
        append(_NO_URL_REWRITING)
    else:
        for name in URL_REWRITING_HEADERS:
            put_header(name)
    if rule.private:
        for name in credentials:
            append(_field(name))
            put_header(name)
    return b"".join(out)


def _field(data: bytes) -> bytes:
    """A length-prefixed field."""
    return len(data).to_bytes(4, "big") + data


def request_digest(
    rule: CacheRule, scope: Scope, headers: Headers, body: bytes | None, credentials: tuple[bytes, ...] = ()
) -> str:
    """Fixed-length hex digest of the canonical request; a private rule adds the `credentials` fields."""
    return blake2b(canonical_request(rule, scope, headers, body, credentials), digest_size=16).hexdigest()


def variant_key(primary_key: str, names: tuple[bytes, ...], headers: Headers) -> str:
    """The key of the variant selected by the request's values of the response's Vary `names`."""
    base, _, digest = primary_key.rpartition(":")
    out = [digest.encode()]
    for name in names:
        values = headers.get(name, ())
        out += [len(name).to_bytes(4, "big"), name, len(values).to_bytes(2, "big")]
        for value in values:
            out += [len(value).to_bytes(4, "big"), value]
    return base + ":" + blake2b(b"".join(out), digest_size=16).hexdigest()

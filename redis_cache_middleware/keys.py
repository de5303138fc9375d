"""Canonical request keys and the key space they live in: `{prefix}:{namespace}:{version}:{rule}:{digest}`.

The digest is BLAKE2b-128 over length-prefixed fields, so no two different field lists encode alike:
method (HEAD as GET), scheme and Host (unless the rule opts out), root path and raw path, the query as
percent-decoded pairs sorted by name only, Content-Type, the body (JSON canonicalised), and the rule's
`vary` headers (every occurrence, absent distinct from empty), the URL-rewriting headers that proxies set,
and for private rules the credentials.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from hashlib import blake2b
from operator import itemgetter
from urllib.parse import unquote_to_bytes

import orjson
from starlette.types import Scope

from .negotiation import normalise_vary_value
from .typed import RouteCanon

Headers = dict[bytes, list[bytes]]

TAG_SEGMENT = "tag"  # the version segment reserved for tag index sets
STATS_SEGMENT = "stats"  # the shared counters' hash, `{prefix}:{namespace}:stats`
_UNSAFE_KEY_CHARS = frozenset("{}: \t\r\n")
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\^])")
_DIGEST = re.compile(r"[0-9a-f]{32}")


def check_key_part(owner: str, label: str, part: str) -> None:
    """Raise `ValueError` unless `part` can stand between the colons of a key."""
    if not isinstance(part, str) or not part or _UNSAFE_KEY_CHARS.intersection(part):
        raise ValueError(f"{owner} {label} must be non-empty without braces, ':' or white space: {part!r}")


def glob_escape(text: str) -> str:
    """`text` with every Redis glob metacharacter escaped, so a MATCH pattern takes it literally."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


@dataclass(frozen=True, slots=True)
class KeySpec:
    """What a rule adds to a request's key beyond method, URL and body; `name` is its readable segment."""

    name: str
    key_host: bool = True
    vary_names: tuple[bytes, ...] = ()
    private: bool = False

    def __post_init__(self) -> None:
        check_key_part("CacheRule", "name", self.name)
        if self.name.startswith("@"):
            raise ValueError(f"CacheRule name must not start with '@' (row spaces do): {self.name!r}")


@dataclass(frozen=True, slots=True)
class KeySpace:
    """Owns every key string: entries `{prefix}:{namespace}:{version}:{rule}:{digest}`, their leases,
    tag index sets `{prefix}:{namespace}:tag:{tag}`, and the glob patterns that select them."""

    prefix: str = "rcm"
    namespace: str = "default"
    version: str = "1"
    head: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for label in ("prefix", "namespace", "version"):
            check_key_part("CacheMiddleware", label, getattr(self, label))
        if self.version in (TAG_SEGMENT, STATS_SEGMENT):
            raise ValueError(f"CacheMiddleware version {self.version!r} is reserved (tag sets, counters)")
        object.__setattr__(self, "head", f"{self.prefix}:{self.namespace}:{self.version}:")

    def with_version(self, version: str) -> KeySpace:
        return KeySpace(self.prefix, self.namespace, version)

    def entry(self, rule_name: str, digest: str) -> str:
        return self.head + rule_name + ":" + digest

    def row(self, space: str, digest: str) -> str:
        """A row of a row space: `{prefix}:{namespace}:{version}:@{space}:{digest}` (rule names never
        start with `@`)."""
        return self.head + "@" + space + ":" + digest

    @staticmethod
    def lease(key: str) -> str:
        """The lease that guards the computation of the entry at `key`."""
        return key + ".lock"

    def tag(self, tag: str) -> str:
        """The set that indexes the entry keys tagged `tag`, in every version of the namespace (a ':' in
        the tag is escaped, so no tag set ever looks like an entry key)."""
        escaped = tag.replace("%", "%25").replace(":", "%3A")
        return f"{self.prefix}:{self.namespace}:{TAG_SEGMENT}:{escaped}"

    def stats(self) -> str:
        """The hash of per-rule counters every process adds to (`{rule}\t{field}` -> number)."""
        return f"{self.prefix}:{self.namespace}:{STATS_SEGMENT}"

    def tags_glob(self) -> str:
        """Every tag set of the namespace."""
        return f"{glob_escape(self.prefix)}:{glob_escape(self.namespace)}:{TAG_SEGMENT}:*"

    def entries_glob(self, rule_name: str | None = None, version: str | None = None) -> str:
        """Entry keys (and their leases) of one rule and/or one version, None meaning any; tag sets have
        one segment too few to match."""
        head = f"{glob_escape(self.prefix)}:{glob_escape(self.namespace)}:"
        version_part = "*" if version is None else glob_escape(version)
        rule_part = "*" if rule_name is None else glob_escape(rule_name)
        return f"{head}{version_part}:{rule_part}:*"

    def parse(self, key: str) -> tuple[str, str, str] | None:
        """(version, rule, digest and any suffix) when `key` is an entry key of the namespace, else None."""
        head = f"{self.prefix}:{self.namespace}:"
        if not key.startswith(head) or key.startswith(f"{head}{TAG_SEGMENT}:"):
            return None
        parts = key[len(head) :].split(":", 2)
        if len(parts) != 3 or not parts[0] or not parts[1] or not _DIGEST.match(parts[2]):
            return None
        return parts[0], parts[1], parts[2]


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


# JSON bodies larger than this are keyed on their bytes: canonicalising them would hold the event loop
# for milliseconds per request (a 50 MiB body: about a second).
CANONICAL_JSON_LIMIT = 1024 * 1024


def canonical_body(content_type: bytes | None, body: bytes, canon: RouteCanon | None = None) -> bytes:
    """JSON bodies up to `CANONICAL_JSON_LIMIT` re-serialised with sorted keys (tag `j`), values typed by
    the route's `canon` when given; anything else as its bytes (tag `r`)."""
    if (
        content_type is not None
        and len(body) <= CANONICAL_JSON_LIMIT
        and _is_json(content_type)
        and not _LONG_NUMBER.search(body)
    ):
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            return b"r" + body
        if canon is None:
            return b"j" + orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        return b"t" + orjson.dumps(canon.canonical_json(value), option=orjson.OPT_SORT_KEYS)
    return b"r" + body


def _is_json(content_type: bytes) -> bool:
    media_type = content_type.partition(b";")[0].strip().lower()
    return media_type == b"application/json" or media_type.endswith(b"+json")


def canonical_request(
    rule: KeySpec,
    scope: Scope,
    headers: Headers,
    body: bytes | None,
    credentials: tuple[bytes, ...] = (),
    canon: RouteCanon | None = None,
) -> bytes:
    """The unambiguous encoding of everything that selects a response for this request under `rule`;
    with the route's `canon` (typed keys), query values and JSON body values as the app will parse them."""
    out: list[bytes] = []
    append = out.append

    def put_header(name: bytes) -> None:
        _put_header(out, headers, name)

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
    if canon is not None:
        pairs = canon.canonical_query(pairs)
    append(b"t" if canon is not None else b"q")
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
        append(_field(canonical_body(content_type[0] if content_type else None, body, canon)))
    _put_context(out, rule, headers, credentials)
    return b"".join(out)


def row_context(
    spec: KeySpec, scope: Scope, headers: Headers, other: bytes, credentials: tuple[bytes, ...] = ()
) -> bytes:
    """What, besides the row itself, selects a row's answer: scheme and Host (unless the rule opts out),
    `other` (the canonical rest of the request: every other body field and query pair), the `vary`
    headers, URL-rewriting headers and, on private rules, the credentials. Method and path are left out,
    so that every route of one row space shares its rows."""
    out: list[bytes] = [b"row"]
    if spec.key_host:
        out.append(_field(str(scope.get("scheme", "http")).encode("ascii", "replace")))
        _put_header(out, headers, b"host")
    out.append(_field(other))
    _put_context(out, spec, headers, credentials)
    return b"".join(out)


def row_digest(context: bytes, row: bytes) -> str:
    """The digest of one row (its canonical bytes) in its context."""
    return blake2b(_field(context) + row, digest_size=16).hexdigest()


def _put_context(out: list[bytes], spec: KeySpec, headers: Headers, credentials: tuple[bytes, ...]) -> None:
    for name in spec.vary_names:
        out.append(_field(name))
        _put_header(out, headers, name)
    if _URL_REWRITING.isdisjoint(headers):  # the usual case: one constant instead of 13 calls
        out.append(_NO_URL_REWRITING)
    else:
        for name in URL_REWRITING_HEADERS:
            _put_header(out, headers, name)
    if spec.private:
        for name in credentials:
            out.append(_field(name))
            _put_header(out, headers, name)


def _put_header(out: list[bytes], headers: Headers, name: bytes) -> None:
    values = headers.get(name)
    if not values:
        out.append(b"\x00\x00")
        return
    out.append(len(values).to_bytes(2, "big"))
    for value in values:
        out.append(len(value).to_bytes(4, "big"))
        out.append(value)


def _field(data: bytes) -> bytes:
    """A length-prefixed field."""
    return len(data).to_bytes(4, "big") + data


def request_digest(
    rule: KeySpec,
    scope: Scope,
    headers: Headers,
    body: bytes | None,
    credentials: tuple[bytes, ...] = (),
    canon: RouteCanon | None = None,
) -> str:
    """Fixed-length hex digest of the canonical request; a private rule adds the `credentials` fields."""
    encoded = canonical_request(rule, scope, headers, body, credentials, canon)
    return blake2b(encoded, digest_size=16).hexdigest()


def variant_key(primary_key: str, names: tuple[bytes, ...], headers: Headers) -> str:
    """The key of the variant selected by the request's values of the response's Vary `names`, each
    normalised (RFC 9110 section 12.5: `en, fr` and `fr,en` select alike); an absent field stays distinct
    from an empty one."""
    base, _, digest = primary_key.rpartition(":")
    out = [digest.encode()]
    for name in names:
        out += [len(name).to_bytes(4, "big"), name]
        values = headers.get(name)
        if values is None:
            out.append(b"\x00")
        else:
            value = normalise_vary_value(name, values)
            out += [b"\x01", len(value).to_bytes(4, "big"), value]
    return base + ":" + blake2b(b"".join(out), digest_size=16).hexdigest()

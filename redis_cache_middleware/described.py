"""Requests described from outside the request path (`invalidate(url=...)`, the operators' CLI), turned
into what the middleware would see: a scope, a header map, the body it keys on, and the digest."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import quote, unquote, urlsplit

from starlette.types import Scope

from .keys import Headers, KeySpec, request_digest

_DEFAULT_PORTS = {"http": 80, "https": 443}
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"


def request_scope(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    root_path: str = "",
) -> tuple[Scope, Headers, bytes | None]:
    """A request described from outside (invalidation, operators) as the middleware would see it: an
    ASGI-like scope, its header map and the body it keys on. Host comes from the URL (default port
    dropped) unless a Host header is given; the body counts for every method but GET and HEAD, and for
    those too when there is a body or a Content-Length."""
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.netloc:
        raise ValueError(f"url must be absolute http(s)://host/path, got {url!r}")
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or ())
    header_map: Headers = {}
    for name, value in pairs:
        header_map.setdefault(name.strip().lower().encode("latin-1"), []).append(_header_bytes(value.strip()))
    if b"host" not in header_map:
        host = parts.netloc.rpartition("@")[2]
        if parts.port is not None and parts.port == _DEFAULT_PORTS[parts.scheme] and not host.endswith("]"):
            host = host.rpartition(":")[0]
        header_map[b"host"] = [host.encode("idna") if not host.isascii() else host.encode("ascii")]
    method = method.upper()
    reads_body = method not in ("GET", "HEAD") or b"content-length" in header_map
    reads_body = reads_body or b"transfer-encoding" in header_map or body is not None
    raw_path = quote(parts.path or "/", safe=_PATH_SAFE)
    scope: Scope = {
        "type": "http",
        "method": method,
        "scheme": parts.scheme,
        "root_path": root_path,
        "path": unquote(raw_path),
        "raw_path": raw_path.encode("ascii"),
        "query_string": parts.query.encode("utf-8"),
        "headers": [(name, value) for name, values in header_map.items() for value in values],
    }
    return scope, header_map, (body or b"") if reads_body else None


def described_digest(
    spec: KeySpec,
    method: str,
    url: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    root_path: str = "",
    credentials: tuple[bytes, ...] = (),
) -> str:
    """The digest the middleware keys this described request on under `spec` (every version alike)."""
    scope, header_map, key_body = request_scope(method, url, body, headers, root_path)
    return request_digest(spec, scope, header_map, key_body, credentials)


def _header_bytes(value: str) -> bytes:
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")

"""Invalidation after unsafe requests (RFC 9111 section 4.4), as plain functions."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urljoin, urlsplit

# RFC 9110 section 9.2.1 defines GET, HEAD, OPTIONS and TRACE as safe; the QUERY method is safe by definition.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "QUERY"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def is_unsafe(method: str) -> bool:
    """RFC 9110 section 9.2.1: every method not known to be safe, unknown ones included (case-sensitive)."""
    return method not in SAFE_METHODS


def invalidates(method: str, status: int) -> bool:
    """RFC 9111 section 4.4: a non-error (2xx or 3xx) response to an unsafe method invalidates."""
    return is_unsafe(method) and 200 <= status < 400


def invalidation_targets(
    request_host: bytes, scheme: str, response_headers: Iterable[tuple[bytes, bytes]], request_path: str = "/"
) -> list[str]:
    """The request-targets (`/path` or `/path?query`, as sent) named by the response's Location and
    Content-Location that share the request's origin (RFC 9111 section 4.4), relative references resolved
    against the request's URI (RFC 3986 section 5)."""
    base = f"{scheme}://{request_host.decode('latin-1')}{request_path}"
    try:
        origin = _origin(base)
    except ValueError:  # a Host the URL grammar rejects names no origin
        return []
    targets: list[str] = []
    for name, value in response_headers:
        if name.lower() not in (b"location", b"content-location"):
            continue
        try:
            url = urlsplit(urljoin(base, value.decode("latin-1").strip(" \t")))
            same = origin is not None and _origin(url.geturl()) == origin
        except ValueError:
            continue
        if same:
            target = (url.path or "/") + (f"?{url.query}" if url.query else "")
            if target not in targets:
                targets.append(target)
    return targets


def _origin(url: str) -> tuple[str, str, int] | None:
    """RFC 6454 origin of an absolute http(s) URL, default ports made explicit."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), parts.port or _DEFAULT_PORTS[scheme]

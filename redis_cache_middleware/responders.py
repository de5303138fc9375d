"""Answers that need no computation: from a stored entry, a bypass, an invalidating unsafe request.

Each is given the `Parts` the middleware built once (app, cache, configuration, metrics) and the request;
never the middleware itself. The miss path, which calls the app and stores, is in `miss.py`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from urllib.parse import quote, unquote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import invalidation, policy, response
from .cache import Cache, Unavailable
from .coalesce import RowFlights, SingleFlight
from .config import CacheConfig
from .entry import Entry
from .keys import Headers, request_digest
from .metrics import Metrics, Outcome
from .request import Request, route_path
from .response import CacheStatus, StatusHeaders
from .rules import CacheRule, RuleMatcher
from .typed import RouteCanon


@dataclass(frozen=True, slots=True)
class Parts:
    """What every responder works with, built once per middleware."""

    app: ASGIApp
    cache: Cache
    config: CacheConfig
    flights: SingleFlight
    row_flights: RowFlights
    metrics: Metrics
    status_headers: StatusHeaders
    rules: RuleMatcher
    canon: Callable[[CacheRule, str, Scope], RouteCanon | None]  # the typed canonicaliser keys are made with


async def answer_from_entry(
    parts: Parts, request: Request, entry: Entry, age: float, status: CacheStatus, may_range: bool = True
) -> None:
    """Send `entry` as the answer (304 when the request's conditions hold, a 206 or 416 for a GET's Range
    unless `may_range` is false (RFC 9110 section 14.2: GET only), no body for HEAD)."""
    hidden, head = parts.config.hidden_fields, request.head
    ranged = may_range and b"range" in request.headers and request.scope["method"] == "GET"  # section 14.2
    code, headers, body = response.render(entry, request.headers, age, hidden, ranged)
    headers += parts.status_headers(status, request.key)
    await request.send({"type": "http.response.start", "status": code, "headers": headers})
    await request.send({"type": "http.response.body", "body": b"" if head else body})
    if status.outcome is not Outcome.MISS:
        seconds = time.perf_counter() - request.started
        parts.metrics.served(request.rule.key_name, status.outcome, seconds, entry.delta)
        parts.metrics.touched(request.key)


async def only_if_cached(parts: Parts, request: Request) -> None:
    """RFC 9111 section 5.2.1.7: nothing stored to answer with, so 504."""
    headers = [(b"content-length", b"0"), *parts.status_headers(response.miss("fwd=miss"), request.key)]
    await response.send_response(request.send, 504, headers, b"")


async def bypass(
    parts: Parts, rule: CacheRule, reason: str, scope: Scope, receive: Receive, send: Send
) -> None:
    """Run the app untouched but for the cache's own headers (and tag headers removed)."""
    parts.metrics.bypassed(rule.key_name, reason)
    extra = parts.status_headers(response.bypass(reason), "")

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = policy.client_headers(message.get("headers", ()), parts.config.hidden_fields)
            message = {**message, "headers": headers + extra}
        await send(message)

    await parts.app(scope, receive, send_with_headers)


class InvalidatingResponder:
    """Runs an unsafe request; after a non-error response, drops the stored GET responses of its URL and of
    the same-origin URLs its Location and Content-Location name (RFC 9111 section 4.4), before the
    response's last message goes out."""

    def __init__(self, parts: Parts, scope: Scope, headers: Headers, send: Send) -> None:
        self.parts = parts
        self.scope = scope
        self.headers = {name: values for name, values in headers.items() if name != b"content-type"}
        self.send = send
        self.status = 0
        self.targets: list[Scope] = []

    async def __call__(self, receive: Receive) -> None:
        await self.parts.app(self.scope, receive, self.send_and_invalidate)

    async def send_and_invalidate(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            fields = message.get("headers", ())
            if invalidation.invalidates(self.scope["method"], self.status):
                self.targets = [{**self.scope, "method": "GET"}, *self._named_targets(fields)]
            message = {**message, "headers": policy.client_headers(fields, self.parts.config.hidden_fields)}
        elif message["type"] == "http.response.body" and not message.get("more_body", False) and self.targets:
            keys = [key for key in map(self._get_key, self.targets) if key is not None]
            self.targets = []
            with suppress(Unavailable):
                await self.parts.cache.delete(keys)
        await self.send(message)

    def _named_targets(self, fields: Iterable[tuple[bytes, bytes]]) -> list[Scope]:
        """GETs of the Location and Content-Location URLs on the request's own origin (none without a
        Host), as the server would hand them to the app: `raw_path` as sent, `path` decoded."""
        host = self.headers.get(b"host")
        if not host:
            return []
        scope = self.scope
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1") if isinstance(raw_path, bytes) else quote(scope["path"])
        scheme = str(scope.get("scheme", "http"))
        targets: list[Scope] = []
        for target in invalidation.invalidation_targets(host[0], scheme, fields, path):
            target_path, _, query = target.partition("?")
            raw = target_path.encode("latin-1")
            query_bytes = query.encode("latin-1")
            if raw == raw_path and query_bytes == scope.get("query_string", b""):
                continue  # the request's own URL, dropped anyway
            targets.append(
                {
                    **scope,
                    "method": "GET",
                    "path": unquote(target_path),
                    "raw_path": raw,
                    "query_string": query_bytes,
                }
            )
        return targets

    def _get_key(self, get_scope: Scope) -> str | None:
        """The key this client's GET `get_scope` is stored under, by the rule that covers it (keyed as the
        middleware keys it, typed keys included); None when no rule caches it."""
        rule = self.parts.rules.match("GET", route_path(get_scope))
        if rule is None:
            return None
        canon = self.parts.canon(rule, "GET", get_scope)
        credentials = self.parts.config.credential_headers
        digest = request_digest(rule.keying, get_scope, self.headers, None, credentials, canon)
        return self.parts.cache.keys.entry(rule.key_name, digest)

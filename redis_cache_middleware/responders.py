"""Answers that need no computation: from a stored entry, a bypass, an invalidating unsafe request.

Each is given the `Parts` the middleware built once (app, cache, configuration, metrics) and the request;
never the middleware itself. The miss path, which calls the app and stores, is in `miss.py`.
"""

from __future__ import annotations

import time
from contextlib import suppress
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import policy, response
from .cache import Cache, Unavailable
from .coalesce import RowFlights, SingleFlight
from .config import CacheConfig
from .entry import Entry
from .keys import Headers, request_digest
from .metrics import Metrics, Outcome
from .request import Request
from .response import CacheStatus, StatusHeaders
from .rules import CacheRule


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


async def answer_from_entry(
    parts: Parts, request: Request, entry: Entry, age: float, status: CacheStatus
) -> None:
    """Send `entry` as the answer (304 when the request's conditions hold, no body for HEAD)."""
    code, headers, body = response.render(entry, request.headers, age)
    headers += parts.status_headers(status, request.key)
    await request.send({"type": "http.response.start", "status": code, "headers": headers})
    await request.send({"type": "http.response.body", "body": b"" if request.head else body})
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
            message = {**message, "headers": policy.without_tag_headers(message.get("headers", ())) + extra}
        await send(message)

    await parts.app(scope, receive, send_with_headers)


class InvalidatingResponder:
    """Runs an unsafe request; after a 2xx/3xx, drops the GET entry of its URL (RFC 9111 section 4.4)
    before the response's last message goes out."""

    def __init__(self, parts: Parts, rule: CacheRule, scope: Scope, headers: Headers, send: Send) -> None:
        self.parts = parts
        get_headers = {name: values for name, values in headers.items() if name != b"content-type"}
        get_scope = {**scope, "method": "GET"}
        credentials = parts.config.credential_headers
        digest = request_digest(rule.keying, get_scope, get_headers, None, credentials)
        self.key = parts.cache.keys.entry(rule.key_name, digest)
        self.send = send
        self.status = 0

    async def __call__(self, scope: Scope, receive: Receive) -> None:
        await self.parts.app(scope, receive, self.send_and_invalidate)

    async def send_and_invalidate(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif (
            message["type"] == "http.response.body"
            and not message.get("more_body", False)
            and 200 <= self.status < 400
        ):
            with suppress(Unavailable):
                await self.parts.cache.delete([self.key])
        await self.send(message)

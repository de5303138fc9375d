"""The miss path: call the app at most once per key at a time, store what may be shared, and answer.

`run_miss` decides who computes (single-flight in this process, a lease across processes with `lock`);
`fetch` calls the app through a `MissResponder`, which wraps `send` the way Starlette's GZip responder
does: a response that cannot be stored passes through exactly as the app sends it, at the moment it is
sent; a storable one is copied while within the rule's limit and stored before its last message.
"""

from __future__ import annotations

import logging
import time

import anyio
from starlette.types import Message

from . import decision, policy, response
from .cache import OverBudget
from .coalesce import Flight, follow, outcome
from .detach import after_response, run_detached
from .entry import REVALIDATABLE, Entry
from .keys import variant_key
from .metrics import Outcome
from .request import Request
from .responders import Parts, answer_from_entry

logger = logging.getLogger(__name__)

_CONDITIONAL_HEADERS = frozenset({b"if-none-match", b"if-modified-since"})
_NOT_FOLLOWING = frozenset({b"if-none-match", b"if-modified-since", b"range", b"if-range"})


class ClientGone(OSError):
    """The client left and no one else needs the rest of the response: the app may stop."""


async def run_miss(parts: Parts, request: Request, stale: Entry | None, fwd: str, revalidate: bool) -> None:
    """Answer a request that the stored entry (if any) cannot: wait for an identical computation in
    flight, or lead one whose result waiters and the cache share, or compute alone."""
    config, flights, key = parts.config, parts.flights, request.key
    if request.head or not config.coalesce or flights.known_uncacheable(key):
        await fetch(parts, request, stale, fwd, revalidate, None)
        return
    flight = flights.in_flight(key)
    if flight is not None:
        may_follow = _NOT_FOLLOWING.isdisjoint(request.headers)
        shared = await outcome(flight, config.coalesce_timeout, may_follow)
        if isinstance(shared, Flight):
            extra = parts.status_headers(response.COLLAPSED, key)
            await follow(shared, request.send, extra)
            parts.metrics.served(request.rule.key_name, Outcome.COLLAPSED, _since(request))
        elif shared is not None and shared.key == _entry_key(request, shared.vary):
            await answer_from_entry(parts, request, shared, shared.age(time.time()), response.COLLAPSED)
        else:
            await fetch(parts, request, stale, fwd, revalidate, None)
        return
    flight = flights.lead(key)

    async def lead() -> None:
        try:
            await _lead(parts, request, stale, fwd, revalidate, flight)
        finally:
            flights.finish(key, flight, None)  # nothing shareable, unless the leader finished it first

    def needed() -> bool:  # the leader's client is gone: go on only for waiters or a response being stored
        flight.orphaned = True
        return not flight.done and (flight.followers > 0 or flight.shareable is not False)

    await run_detached(lead, needed)


async def refresh(parts: Parts, request: Request) -> None:
    """Recompute the entry after the client has its (stale or early) answer, once per key at a time."""
    key = request.key
    if parts.flights.in_flight(key) is not None:
        return
    flight = parts.flights.lead(key)
    background = request.for_background(time.perf_counter())

    async def work() -> None:
        try:
            if parts.config.lock:
                async with parts.cache.lease(key, parts.config.lock_lease, background.budget) as held:
                    if held is not False:
                        await fetch(parts, background, None, "fwd=stale", False, flight)
            else:
                await fetch(parts, background, None, "fwd=stale", False, flight)
        except Exception as exc:
            logger.debug("background refresh of %s failed: %r", key, exc)
        finally:
            parts.flights.finish(key, flight, None)

    await after_response(work)


async def _lead(
    parts: Parts, request: Request, stale: Entry | None, fwd: str, revalidate: bool, flight: Flight
) -> None:
    """The computation others wait for; with `lock`, at most one across processes: while another process
    holds the key's lease, wait for its entry instead (up to the lease)."""
    if not parts.config.lock:
        await fetch(parts, request, stale, fwd, revalidate, flight)
        return
    lease = parts.config.lock_lease
    async with parts.cache.lease(request.key, lease, request.budget) as held:
        if held is False:
            entry = await parts.cache.fresh_entry(request.key, request.headers, lease)
            if entry is not None:
                parts.flights.finish(request.key, flight, entry)
                await answer_from_entry(parts, request, entry, entry.age(time.time()), response.COLLAPSED)
                return
        await fetch(parts, request, stale, fwd, revalidate, flight)


async def fetch(
    parts: Parts, request: Request, stale: Entry | None, fwd: str, revalidate: bool, flight: Flight | None
) -> None:
    """Call the app; store and forward its response, or answer from `stale` when the app fails."""
    scope = request.scope
    if revalidate and stale is not None:
        scope = {**scope, "headers": _conditional_headers(scope["headers"], stale)}
    responder = MissResponder(parts, request, stale, fwd, revalidate, flight)
    try:
        with anyio.CancelScope() as responder.work:
            await parts.app(scope, request.receive, responder.send)
        if responder.deferred is not None:  # the client has its answer: now the write may take its time
            entry, tags = responder.deferred
            await parts.cache.save(entry, request.rule, request.key, tags)
    except Exception:
        if responder.sent_start or not decision.serves_stale_on_error(request.rule, stale, time.time()):
            await responder.flush_start()
            raise
        assert stale is not None
        logger.debug("app failed for %s, serving the stale entry", request.key)
        await answer_from_entry(parts, request, stale, stale.age(time.time()), response.stale_if_error())
        return
    if responder.mode == "forward" and not request.background and responder.sent_start:
        parts.metrics.served(request.rule.key_name, Outcome.MISS, _since(request))


class MissResponder:
    """Wraps `send` while the app answers a miss. The start of a storable response with a Content-Length
    waits for the first body chunk (a one-chunk response is then stored and answered from its entry: ETag,
    conditional answer, `stored`); every other start goes out when the app sends it. On a revalidation 304
    it freshens the stale entry; on a 5xx within `stale_if_error` it answers from the stale entry."""

    def __init__(
        self,
        parts: Parts,
        request: Request,
        stale: Entry | None,
        fwd: str,
        revalidate: bool,
        flight: Flight | None,
    ) -> None:
        self.parts = parts
        self.request = request
        self.stale = stale
        self.fwd = fwd
        self.revalidate = revalidate
        self.flight = flight
        self.work = anyio.CancelScope()
        self.began = time.time()  # the request time of RFC 9111 section 4.2.3
        self.received = self.began  # the response time, once the start arrives
        self.held: Message | None = None
        self.sent_start = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.mode = "forward"
        self.storage = policy.Storage("head")
        self.storing = False
        self.chunks: list[bytes] = []
        self.size = 0
        self.client_gone = False
        self.deferred: tuple[Entry, tuple[str, ...]] | None = None

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            await self._start(message)
        elif kind != "http.response.body":
            self._stop_storing()
            await self.flush_start()
            await self._forward(message)
        elif self.mode != "forward":
            if not message.get("more_body", False):
                await self._answer_from_stale()
        else:
            await self._body(message.get("body", b""), message.get("more_body", False))

    async def _start(self, message: Message) -> None:
        self.status, self.headers = message["status"], list(message.get("headers", ()))
        self.received = time.time()
        request = self.request
        if self.revalidate and self.status == 304:
            self.mode = "freshen"
            return
        if self.status in decision.ERROR_STATUSES and decision.serves_stale_on_error(
            request.rule, self.stale, time.time()
        ):
            self.mode = "stale"
            return
        if not request.head and not message.get("trailers", False):
            self.storage = self._storage(self.status, self.headers, self.received)
            self.storing = self.storage.reason is None
        self.held = message
        if not (self.storing and any(name.lower() == b"content-length" for name, _ in self.headers)):
            await self.flush_start()

    async def _body(self, chunk: bytes, more: bool) -> None:
        if self.storing:
            self.size += len(chunk)
            if self.size > self.request.rule.max_body_bytes:
                self._stop_storing()
            else:
                self.chunks.append(chunk)
        if self.storing and not more and self.held is not None:  # one chunk: answer from the entry
            entry, stored = await self._store(b"".join(self.chunks))
            self.held, self.sent_start = None, True
            status = response.miss(self.fwd, stored)
            await answer_from_entry(self.parts, self.request, entry, entry.initial_age, status, stored)
            return
        await self.flush_start()
        if self.flight is not None and self.flight.shareable:
            self.flight.publish_chunk(chunk, not more)
        if self.storing and not more:
            await self._store(b"".join(self.chunks))
        await self._forward({"type": "http.response.body", "body": chunk, "more_body": more})

    def _stop_storing(self) -> None:
        self.storing, self.chunks = False, []
        if self.flight is not None and self.flight.shareable:
            self.flight.abort()

    async def flush_start(self) -> None:
        """Send the held start (with the cache's headers), and tell waiters whether they may follow."""
        if self.held is None:
            return
        start, self.held = self.held, None
        headers = policy.client_headers(self.headers, self.parts.config.hidden_fields)
        if self.flight is not None:
            self.flight.publish_start({**start, "headers": headers} if self.storing else None)
        self.sent_start = True
        status_headers = self.parts.status_headers(response.miss(self.fwd), self.request.key)
        await self._forward({**start, "headers": headers + status_headers})

    async def _store(self, body: bytes) -> tuple[Entry, bool]:
        """Build and write the entry; hand it to coalesced waiters once stored."""
        storage, request = self.storage, self.request
        headers = policy.stored_headers(self.headers)
        etag = storage.etag or policy.strong_etag(body)
        if not storage.etag:
            headers.append((b"etag", etag))
        entry = Entry(
            _entry_key(request, storage.vary),
            self.status,
            headers,
            body,
            self.received,  # the age is counted from the response's arrival (section 4.2.3)
            storage.ttl,
            etag,
            time.time() - self.began,
            storage.initial_age,
            storage.flags,
            storage.last_modified,
            storage.vary,
            storage.stale_while_revalidate,
            storage.stale_if_error,
        )
        tags = (*request.rule.tags, *policy.response_tags(self.headers))
        try:
            stored = await self.parts.cache.save(entry, request.rule, request.key, tags, request.budget)
        except OverBudget:
            stored, self.deferred = False, (entry, tags)
        if self.flight is not None and (stored or self.deferred):
            self.parts.flights.finish(request.key, self.flight, entry)
        return entry, stored

    def _storage(self, status: int, headers: list[tuple[bytes, bytes]], now: float) -> policy.Storage:
        """How the app's response may be stored: received at `now`, to a request forwarded when the app was
        called (its delay counts in the entry's age, RFC 9111 section 4.2.3)."""
        return policy.storage(
            self.request.rule,
            status,
            headers,
            now,
            self.began,
            targeted_fields=self.parts.config.targeted_fields,
        )

    async def _answer_from_stale(self) -> None:
        """End of a 304 (freshen and serve the stored entry) or of a 5xx (serve the stale entry)."""
        stale, request = self.stale, self.request
        assert stale is not None
        self.sent_start = True
        if self.mode == "stale":
            status = response.stale_if_error(f"fwd-status={self.status}")
            await answer_from_entry(self.parts, request, stale, stale.age(time.time()), status)
            return
        headers = policy.freshened_headers(stale.headers, self.headers)
        now = time.time()
        storage = self._storage(stale.status, headers, now)
        entry = Entry(
            stale.key,
            stale.status,
            headers,
            stale.body,
            now,
            storage.ttl,
            stale.etag,
            stale.delta,
            storage.initial_age,
            storage.flags | (stale.flags & REVALIDATABLE),
            stale.last_modified,
            stale.vary,
            storage.stale_while_revalidate,
            storage.stale_if_error,
        )
        if storage.reason is None:
            try:
                await self.parts.cache.save(entry, request.rule, request.key, budget=request.budget)
            except OverBudget:
                self.deferred = (entry, ())
            if self.flight is not None:
                self.parts.flights.finish(request.key, self.flight, entry)
        await answer_from_entry(self.parts, request, entry, entry.initial_age, response.REVALIDATED)

    async def _forward(self, message: Message) -> None:
        """Send to the client. Once it is gone, finish quietly for the cache or for waiters, within the
        rule's size limit and `coalesce_timeout`; when nobody needs the rest, stop the app."""
        if self.client_gone or (self.flight is not None and self.flight.orphaned):
            self.client_gone = True
            if not self._needed():
                raise ClientGone("the client disconnected")
            return
        try:
            await self.request.send(message)
        except OSError:
            self.client_gone = True
            if not self._needed():
                raise
            self.work.deadline = anyio.current_time() + self.parts.config.coalesce_timeout

    def _needed(self) -> bool:
        return self.storing or (self.flight is not None and self.flight.followers > 0)


def _entry_key(request: Request, vary: tuple[bytes, ...]) -> str:
    return variant_key(request.key, vary, request.headers) if vary else request.key


def _since(request: Request) -> float:
    return time.perf_counter() - request.started


def _conditional_headers(headers: list[tuple[bytes, bytes]], stale: Entry) -> list[tuple[bytes, bytes]]:
    """Request headers that ask the app whether the stale entry is still current (RFC 9111 section 4.3.1)."""
    kept = [(name, value) for name, value in headers if name.lower() not in _CONDITIONAL_HEADERS]
    if stale.etag:
        kept.append((b"if-none-match", stale.etag))
    if stale.last_modified:
        kept.append((b"if-modified-since", stale.last_modified))
    return kept

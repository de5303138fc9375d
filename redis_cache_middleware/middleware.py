"""CacheMiddleware: match a rule, look the request up, then answer a hit, run a miss, or bypass."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import ops, policy
from .backends import Backend, BackendError, LockingBackend, MemoryBackend, PartialBackendError, RedisBackend
from .breaker import CircuitBreaker
from .coalesce import SingleFlight, wait
from .entry import MUST_REVALIDATE, REVALIDATABLE, Entry, VaryMarker, decode, encode, encode_marker
from .keys import Headers, request_digest, variant_key
from .metrics import Metrics, Outcome
from .rules import CacheRule, RuleMatcher

logger = logging.getLogger(__name__)

_SAFE_KEY_PART = frozenset("{}: \t\r\n")
_BODYLESS_METHODS = frozenset({"GET", "HEAD"})
_CONDITIONAL_HEADERS = frozenset({b"if-none-match", b"if-modified-since"})


@dataclass(slots=True)
class _Request:
    """What the middleware knows of one matched request."""

    scope: Scope
    receive: Receive
    send: Send
    rule: CacheRule
    headers: Headers
    body: bytes | None
    primary_key: str
    head: bool
    started: float


class CacheMiddleware:
    """Answers requests that match a `CacheRule` from the backend; everything else passes straight through.

    Give either `redis_url` (a client is made with `timeout` as its bound and no retries) or `backend`.
    Keys read `{prefix}:{namespace}:{version}:{rule}:{digest}`; a new `version` orphans every old entry.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        rules: Sequence[CacheRule],
        redis_url: str | None = None,
        backend: Backend | None = None,
        namespace: str = "default",
        version: str = "1",
        prefix: str = "rcm",
        timeout: float = 0.05,
        connect_timeout: float | None = None,
        cache_name: str = "redis-cache",
        breaker: CircuitBreaker | None = None,
        credential_headers: Sequence[str] = ("authorization", "cookie", "x-api-key"),
        allow_client_refresh: bool = False,
        cache_headers: bool = True,
        debug: bool = False,
        signing_key: bytes | str | None = None,
        coalesce: bool = True,
        coalesce_timeout: float = 10.0,
        hit_for_miss: float = 0.0,
        lock: bool = False,
        lock_lease: float = 5.0,
    ) -> None:
        if (redis_url is None) == (backend is None):
            raise ValueError("CacheMiddleware needs exactly one of redis_url= or backend=")
        for label, part in (("prefix", prefix), ("namespace", namespace), ("version", version)):
            if not part or _SAFE_KEY_PART.intersection(part):
                raise ValueError(f"CacheMiddleware {label} must be non-empty without braces, ':' or spaces")
        if version == "tag":
            raise ValueError("CacheMiddleware version 'tag' is reserved for tag index keys")
        if isinstance(credential_headers, str):
            raise ValueError("CacheMiddleware credential_headers must be a sequence of header names")
        if not coalesce_timeout > 0 or hit_for_miss < 0:
            raise ValueError(
                "CacheMiddleware coalesce_timeout must be positive and hit_for_miss non-negative"
            )
        self.app = app
        self.rules = RuleMatcher(rules)
        self.backend: Backend = (
            backend
            if backend is not None
            else RedisBackend.from_url(str(redis_url), timeout=timeout, connect_timeout=connect_timeout)
        )
        if isinstance(self.backend, RedisBackend) and _loop_running():
            self.backend.warm()  # Starlette builds middleware at lifespan startup or the first request
        if lock and not isinstance(self.backend, LockingBackend):
            raise ValueError(
                "CacheMiddleware lock=True needs a backend with acquire/release (LockingBackend)"
            )
        if not lock_lease > 0:
            raise ValueError("CacheMiddleware lock_lease must be positive")
        self.prefix, self.namespace, self.version = prefix, namespace, version
        self.key_prefix = f"{prefix}:{namespace}:{version}:"
        self.cache_name = cache_name
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self.credential_headers = tuple(h.lower().encode("latin-1") for h in credential_headers)
        self.allow_client_refresh = allow_client_refresh
        self.cache_headers = cache_headers
        self.debug = debug
        self.signing_key = signing_key.encode() if isinstance(signing_key, str) else signing_key
        self.coalesce = coalesce
        self.coalesce_timeout = coalesce_timeout
        self.flights = SingleFlight(hit_for_miss)
        self.metrics = Metrics()
        self.lock = lock
        self.lock_lease = lock_lease
        self._background: set[asyncio.Task[None]] = set()
        self._registered = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._registered:
            self._register(scope)
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        rule = self.rules.match(method, _route_path(scope))
        if rule is None:
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        headers = policy.headers_map(scope["headers"])
        if method in rule.invalidating_methods:
            await self._forward_invalidating(scope, receive, send, rule, headers)
            return
        if not rule.private and any(name in headers for name in self.credential_headers):
            await self._bypass(scope, receive, send, rule, "credentials")
            return
        directives = (
            policy.parse_cache_control(headers[b"cache-control"]) if b"cache-control" in headers else {}
        )
        if self.allow_client_refresh and "no-store" in directives:
            await self._bypass(scope, receive, send, rule, "request-no-store")
            return

        body: bytes | None = None
        if method not in _BODYLESS_METHODS or b"content-length" in headers or b"transfer-encoding" in headers:
            body, receive = await _read_body(receive, headers, rule.max_request_bytes)
            if body is None:
                await self._bypass(scope, receive, send, rule, "request-too-large")
                return

        if not self.breaker.allow():
            await self._bypass(scope, receive, send, rule, "circuit-open")
            return
        digest = request_digest(rule, scope, headers, body, self.credential_headers)
        request = _Request(
            scope,
            receive,
            send,
            rule,
            headers,
            body,
            self.key_prefix + rule.key_name + ":" + digest,
            method == "HEAD",
            started,
        )
        try:
            entry = await self._lookup(request)
        except BackendError as exc:
            self._backend_failed(exc)
            await self._bypass(scope, receive, send, rule, "backend-error")
            return
        self.breaker.success()

        if entry is not None:
            now = time.time()
            age = entry.age(now)
            if self._client_refuses(directives, entry, age):
                await self._miss(request, entry, "fwd=request")
                return
            if age < entry.ttl:
                if rule.early_refresh is not None and _xfetch(entry, age, rule.early_refresh):
                    self._refresh(request)
                await self._send_entry(request, entry, age, "HIT", "hit", f"ttl={math.ceil(entry.ttl - age)}")
                return
            if not entry.flags & MUST_REVALIDATE and age < entry.ttl + rule.stale_while_revalidate:
                self._refresh(request)
                await self._send_entry(
                    request, entry, age, "STALE", "hit", f"ttl={math.floor(entry.ttl - age)}"
                )
                return
            if entry.flags & REVALIDATABLE:
                await self._miss(request, entry, "fwd=stale", revalidate=True)
                return
        if "only-if-cached" in directives:
            await self._send_only_if_cached(request)
            return
        await self._miss(request, entry, "fwd=uri-miss" if entry is None else "fwd=stale")

    def set_version(self, version: str) -> None:
        """Key new requests under `version`: every entry stored under the old one is out of reach at once
        (in this process; other processes must be given the same version)."""
        if not version or version == "tag" or _SAFE_KEY_PART.intersection(version):
            raise ValueError("CacheMiddleware version: non-empty, not 'tag', no braces, ':' or spaces")
        self.version = version
        self.key_prefix = f"{self.prefix}:{self.namespace}:{version}:"
        logger.info("cache version is now %s", version, extra={"event": "version", "version": version})

    def _backend_failed(self, exc: BackendError) -> None:
        """Count a failure towards the breaker, unless only part of the backend (one cluster node) failed."""
        if not isinstance(exc, PartialBackendError):
            self.breaker.failure(exc)

    def _register(self, scope: Scope) -> None:
        """Make this instance reachable as `app.state.cache`, on lifespan startup or the first request."""
        state = getattr(scope.get("app"), "state", None)
        if state is not None:
            state.cache = self
        self._registered = True

    def stats(self) -> dict[str, object]:
        """What the cache did, per rule (outcomes, bypass reasons, bytes stored, latency bounds), the
        circuit breaker's state, and computations in flight."""
        return {
            "rules": self.metrics.snapshot(),
            "breaker": self.breaker.snapshot(),
            "in_flight": len(self.flights),
        }

    async def aclose(self) -> None:
        """Wait for background refreshes, then close the backend's connections."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.backend.aclose()

    async def _lookup(self, request: _Request) -> Entry | None:
        """The stored entry for the request, following a Vary marker to the selected variant."""
        key = request.primary_key
        data = await self.backend.get(key)
        record = decode(data, key, self.signing_key) if data is not None else None
        if isinstance(record, VaryMarker):
            key = variant_key(key, record.names, request.headers)
            data = await self.backend.get(key)
            record = decode(data, key, self.signing_key) if data is not None else None
        return record if isinstance(record, Entry) else None

    def _client_refuses(self, directives: dict[str, str | None], entry: Entry, age: float) -> bool:
        """Whether the request's own Cache-Control rules out the stored entry (RFC 9111 section 5.2.1);
        only when clients are allowed to force a refresh."""
        if not directives or not self.allow_client_refresh:
            return False
        if "no-cache" in directives:
            return True
        max_age = policy.delta_seconds(directives.get("max-age"))
        if max_age is not None and age > max_age:
            return True
        min_fresh = policy.delta_seconds(directives.get("min-fresh"))
        return min_fresh is not None and entry.ttl - age < min_fresh

    async def _miss(self, request: _Request, stale: Entry | None, fwd: str, revalidate: bool = False) -> None:
        """Run the app for the request, at most once per key at a time in this process when coalescing."""
        if request.head or not self.coalesce or self.flights.known_uncacheable(request.primary_key):
            await self._fetch(request, stale, fwd, revalidate, None)
            return
        flight = self.flights.in_flight(request.primary_key)
        if flight is not None:
            entry = await wait(flight, self.coalesce_timeout)
            if entry is not None and entry.key == self._entry_key(request, entry.vary):
                await self._send_entry(request, entry, 0.0, "HIT", "fwd=uri-miss", "collapsed")
            else:
                await self._fetch(request, stale, fwd, revalidate, None)
            return
        future = self.flights.lead(request.primary_key)
        task = asyncio.create_task(self._lead(request, stale, fwd, revalidate, future))
        task.add_done_callback(lambda done: self._flight_done(request.primary_key, future, done))
        await asyncio.shield(task)

    async def _lead(
        self,
        request: _Request,
        stale: Entry | None,
        fwd: str,
        revalidate: bool,
        flight: asyncio.Future[Entry | None],
    ) -> None:
        """The computation others in this process wait for; with `lock`, at most one across processes: if
        another process holds the key's lease, wait for its entry instead (up to the lease)."""
        if not self.lock:
            await self._fetch(request, stale, fwd, revalidate, flight)
            return
        lease, token = request.primary_key + ".lock", secrets.token_hex(8)
        held = await self._acquire(lease, token)
        if held is False:
            entry = await self._entry_from_other_process(request)
            if entry is not None:
                self.flights.finish(request.primary_key, flight, entry)
                await self._send_entry(
                    request, entry, entry.age(time.time()), "HIT", "fwd=uri-miss", "collapsed"
                )
                return
        try:
            await self._fetch(request, stale, fwd, revalidate, flight)
        finally:
            if held:
                await self._release(lease, token)

    async def _acquire(self, lease: str, token: str) -> bool | None:
        """True when this process now holds the lease, False when another does, None when unknown."""
        assert isinstance(self.backend, LockingBackend)
        if not self.breaker.allow():
            return None
        try:
            held = await self.backend.acquire(lease, token, self.lock_lease)
        except BackendError as exc:
            self._backend_failed(exc)
            return None
        self.breaker.success()
        return held

    async def _release(self, lease: str, token: str) -> None:
        assert isinstance(self.backend, LockingBackend)
        try:
            await self.backend.release(lease, token)
        except BackendError as exc:
            self._backend_failed(exc)

    async def _entry_from_other_process(self, request: _Request) -> Entry | None:
        """Poll, backing off, for the fresh entry the lease holder is computing."""
        deadline = time.monotonic() + self.lock_lease
        delay = 0.005
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
            try:
                entry = await self._lookup(request)
            except BackendError as exc:
                self._backend_failed(exc)
                return None
            if entry is not None and entry.is_fresh(time.time()):
                return entry
        return None

    def _flight_done(self, key: str, future: asyncio.Future[Entry | None], task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.debug("computation for %s failed: %r", key, task.exception())
        self.flights.finish(key, future, None)

    async def _fetch(
        self,
        request: _Request,
        stale: Entry | None,
        fwd: str,
        revalidate: bool,
        flight: asyncio.Future[Entry | None] | None,
    ) -> None:
        """Call the app; store and forward its response, or answer from `stale` when the app fails."""
        scope = request.scope
        if revalidate and stale is not None:
            scope = {**scope, "headers": _conditional_headers(scope["headers"], stale)}
        responder = MissResponder(self, request, stale, fwd, revalidate, flight)
        try:
            await self.app(scope, request.receive, responder.send)
            if responder.mode == "forward" and request.send is not _discard:
                self.metrics.served(
                    request.rule.key_name, Outcome.MISS, time.perf_counter() - request.started
                )
        except Exception:
            if responder.started or not self._serves_stale_on_error(request.rule, stale):
                raise
            assert stale is not None
            logger.debug("app failed for %s, serving stale entry", request.primary_key)
            await self._send_entry(
                request, stale, stale.age(time.time()), "STALE", "fwd=stale", "detail=stale-if-error"
            )

    def _serves_stale_on_error(self, rule: CacheRule, stale: Entry | None) -> bool:
        return (
            stale is not None
            and not stale.flags & MUST_REVALIDATE
            and stale.age(time.time()) < stale.ttl + rule.stale_if_error
        )

    def _refresh(self, request: _Request) -> None:
        """Recompute the entry in the background, once per key at a time; the client is not waiting."""
        if self.flights.in_flight(request.primary_key) is not None:
            return
        future = self.flights.lead(request.primary_key)
        body = request.body if request.body is not None else b""
        background = _Request(
            dict(request.scope),
            _replay([{"type": "http.request", "body": body, "more_body": False}], _never),
            _discard,
            request.rule,
            request.headers,
            request.body,
            request.primary_key,
            False,
            time.perf_counter(),
        )
        task = asyncio.create_task(self._refresh_once(background, future))
        self._background.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._background.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                logger.debug("background refresh of %s failed: %r", request.primary_key, finished.exception())
            self.flights.finish(request.primary_key, future, None)

        task.add_done_callback(done)

    async def _refresh_once(self, request: _Request, flight: asyncio.Future[Entry | None]) -> None:
        """A background refresh; with `lock`, skipped when another process already refreshes the key."""
        if not self.lock:
            await self._fetch(request, None, "fwd=stale", False, flight)
            return
        lease, token = request.primary_key + ".lock", secrets.token_hex(8)
        held = await self._acquire(lease, token)
        if held is False:
            return
        try:
            await self._fetch(request, None, "fwd=stale", False, flight)
        finally:
            if held:
                await self._release(lease, token)

    def _entry_key(self, request: _Request, vary: tuple[bytes, ...]) -> str:
        return variant_key(request.primary_key, vary, request.headers) if vary else request.primary_key

    def _status_headers(self, request: _Request, x_cache: bytes, *params: str) -> list[tuple[bytes, bytes]]:
        if not self.cache_headers:
            return []
        if self.debug:
            params = (*params, f'key="{request.primary_key}"')
        return [(b"x-cache", x_cache), (b"cache-status", policy.cache_status(self.cache_name, *params))]

    async def _send_entry(
        self, request: _Request, entry: Entry, age: float, x_cache: str, *params: str
    ) -> None:
        """Answer from a stored entry: 304 when the request's conditions hold, no body for HEAD."""
        if (
            200 <= entry.status < 300
            and not _CONDITIONAL_HEADERS.isdisjoint(request.headers)
            and (policy.not_modified(request.headers, entry.etag, entry.last_modified))
        ):
            status, headers, body = 304, policy.not_modified_headers(entry.headers), b""
        else:
            status, headers, body = entry.status, list(entry.headers), entry.body
            if status in policy.BODYLESS_STATUSES:
                body = b""
            else:
                headers.append((b"content-length", str(len(body)).encode()))
        headers.append((b"age", str(int(age)).encode()))
        headers += self._status_headers(request, x_cache.encode(), *params)
        await request.send({"type": "http.response.start", "status": status, "headers": headers})
        await request.send({"type": "http.response.body", "body": b"" if request.head else body})
        if x_cache != "MISS":
            outcome = (
                "collapsed"
                if "collapsed" in params
                else "revalidated"
                if "fwd-status=304" in params
                else None
            )
            self.metrics.served(
                request.rule.key_name,
                Outcome(outcome or x_cache.lower()),
                time.perf_counter() - request.started,
            )

    async def _send_only_if_cached(self, request: _Request) -> None:
        """RFC 9111 section 5.2.1.7: nothing stored to answer with, so 504."""
        headers = [(b"content-length", b"0"), *self._status_headers(request, b"MISS", "fwd=miss")]
        await request.send({"type": "http.response.start", "status": 504, "headers": headers})
        await request.send({"type": "http.response.body", "body": b""})

    async def _bypass(self, scope: Scope, receive: Receive, send: Send, rule: CacheRule, reason: str) -> None:
        self.metrics.bypassed(rule.key_name, reason)
        extra = []
        if self.cache_headers:
            status = policy.cache_status(self.cache_name, "fwd=bypass", f"detail={reason}")
            extra = [(b"x-cache", b"BYPASS"), (b"cache-status", status)]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = policy.without_tag_headers(message.get("headers", ()))
                message = {**message, "headers": headers + extra}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _forward_invalidating(
        self, scope: Scope, receive: Receive, send: Send, rule: CacheRule, headers: Headers
    ) -> None:
        """Run an unsafe request; after a 2xx/3xx, drop the GET entry for its URL (RFC 9111 section 4.4)
        before the response ends."""
        get_headers = {name: values for name, values in headers.items() if name != b"content-type"}
        digest = request_digest(rule, {**scope, "method": "GET"}, get_headers, None, self.credential_headers)
        key = self.key_prefix + rule.key_name + ":" + digest
        status = 0

        async def send_and_invalidate(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif (
                message["type"] == "http.response.body"
                and not message.get("more_body", False)
                and 200 <= status < 400
                and self.breaker.allow()
            ):
                try:
                    await self.backend.delete([key])
                except BackendError as exc:
                    self._backend_failed(exc)
                else:
                    self.breaker.success()
            await send(message)

        await self.app(scope, receive, send_and_invalidate)

    async def store(self, entry: Entry, rule: CacheRule, primary_key: str, tags: Sequence[str] = ()) -> bool:
        """Write an entry (and the Vary marker that leads to it) and index it under `tags`; a failure is
        counted by the breaker and dropped, never retried or raised."""
        keep = max(entry.ttl, rule.ttl if entry.flags & REVALIDATABLE else 0.0)
        if not entry.flags & MUST_REVALIDATE:
            keep += max(rule.stale_while_revalidate, rule.stale_if_error)
        if keep <= 0 or not self.breaker.allow():
            self.metrics.stored(rule.key_name, len(entry.body), False)
            return False
        try:
            if entry.vary:
                marker = encode_marker(VaryMarker(primary_key, entry.vary), self.signing_key)
                await self.backend.set(primary_key, marker, keep)
            await self.backend.set(entry.key, encode(entry, self.signing_key), keep)
        except BackendError as exc:
            self._backend_failed(exc)
            self.metrics.stored(rule.key_name, len(entry.body), False)
            return False
        self.breaker.success()
        self.metrics.stored(rule.key_name, len(entry.body), True)
        if tags:
            await self._index_tags(entry, primary_key, tags, keep)
        return True

    async def _index_tags(self, entry: Entry, primary_key: str, tags: Sequence[str], keep: float) -> None:
        """Add the entry (and its Vary marker) to its tags' sets, within the backend timeout."""
        client = _redis_client(self.backend)
        if client is None:
            return
        try:
            async with asyncio.timeout(getattr(self.backend, "timeout", 0.05)):
                for key in (entry.key, primary_key) if entry.vary else (entry.key,):
                    await ops.index_tags(client, self.prefix, self.namespace, key, tags, keep)
        except (RedisError, OSError, TimeoutError) as exc:
            logger.debug("could not index tags %s of %s: %r", tags, entry.key, exc)

    async def invalidate(
        self,
        *,
        url: str | None = None,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        path: str | None = None,
        tags: Sequence[str] = (),
        everything: bool = False,
    ) -> int:
        """Drop cached responses; the number deleted. One of: the request `method url` (with its `body`
        and `headers`); every entry of the rule that routes `path`; every entry under any of `tags`; or
        `everything` in the namespace. Bulk deletion is SCAN/SSCAN + UNLINK in batches, never KEYS.
        Raises `BackendError` when Redis fails, `ValueError` when nothing matches the request."""
        if sum((url is not None, path is not None, bool(tags), everything)) != 1:
            raise ValueError("invalidate takes exactly one of url=, path=, tags= or everything=True")
        if url is not None:
            rule = self.rules.match(method.upper(), urlsplit(url).path or "/")
            if rule is None:
                raise ValueError(f"no cache rule matches {method} {url}")
            key = ops.request_key(
                prefix=self.prefix,
                namespace=self.namespace,
                version=self.version,
                rule=rule,
                method=method,
                url=url,
                body=body,
                headers=headers,
                credential_headers=self.credential_headers,
            )
            return await self.backend.delete([key])
        client = _redis_client(self.backend)
        if client is None:
            if not everything or not isinstance(self.backend, MemoryBackend):
                raise TypeError("invalidate by path or tags needs a Redis backend")
            count = len(self.backend)
            await self.backend.aclose()
            return count
        try:
            if path is not None:
                rule = next((r for r in self.rules.rules if r.path == path or r.key_name == path), None)
                rule = rule or self.rules.match("GET", path)
                if rule is None:
                    raise ValueError(f"no cache rule for path {path!r}")
                count = await ops.purge(
                    client, prefix=self.prefix, namespace=self.namespace, rule=rule.key_name
                )
            elif tags:
                count = 0
                for tag in tags:
                    count += await ops.purge(client, prefix=self.prefix, namespace=self.namespace, tag=tag)
            else:
                count = await ops.purge(client, prefix=self.prefix, namespace=self.namespace, all=True)
        except (RedisError, OSError) as exc:
            raise BackendError(f"invalidate failed: {exc!r}") from exc
        what = path or (tags and f"tags {list(tags)}") or "everything"
        logger.info("invalidated %d entries (%s)", count, what, extra={"event": "purge", "deleted": count})
        return count


class MetricsEndpoint:
    """Serves a cache's metrics in the Prometheus text format: `Route("/metrics", MetricsEndpoint())`.
    Without a `cache` it serves the one the app reaches as `app.state.cache`. Needs `prometheus-client`."""

    def __init__(self, cache: CacheMiddleware | None = None) -> None:
        from prometheus_client import CollectorRegistry

        self.cache = cache
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def collect(self) -> Iterator[Any]:
        if self.cache is None:
            return iter(())
        return self.cache.metrics.collect(self.cache.breaker.snapshot())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if self.cache is None:
            self.cache = getattr(getattr(scope.get("app"), "state", None), "cache", None)
        body = generate_latest(self.registry)
        headers = [
            (b"content-type", CONTENT_TYPE_LATEST.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class MissResponder:
    """Wraps `send` while the app answers a miss. Holds the start message until the first body chunk (so a
    one-chunk response gets its ETag and conditional answer), copies the body while within the rule's
    limit, and stores the entry before the last chunk goes out. On a revalidation 304 it freshens the
    stale entry; on a 5xx within `stale_if_error` it answers from the stale entry instead."""

    def __init__(
        self,
        cache: CacheMiddleware,
        request: _Request,
        stale: Entry | None,
        fwd: str,
        revalidate: bool,
        flight: asyncio.Future[Entry | None] | None,
    ) -> None:
        self.cache = cache
        self.request = request
        self.stale = stale
        self.fwd = fwd
        self.revalidate = revalidate
        self.flight = flight
        self.began = time.time()
        self.start: Message | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.started = False
        self.mode = "forward"
        self.storage = policy.Storage("head")
        self.storing = False
        self.chunks: list[bytes] = []
        self.size = 0
        self.client_gone = False

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.started = True
            self.start = message
            status: int = message["status"]
            self.status, self.headers = status, list(message.get("headers", ()))
            if self.revalidate and status == 304:
                self.mode = "freshen"
            elif status >= 500 and self.cache._serves_stale_on_error(self.request.rule, self.stale):
                self.mode = "stale"
            elif not self.request.head and not message.get("trailers", False):
                self.storage = policy.storage(self.request.rule, status, self.headers, time.time())
                self.storing = self.storage.reason is None
            return
        if kind != "http.response.body":
            self.storing = False
            await self._flush_start()
            await self._forward(message)
            return

        more = message.get("more_body", False)
        if self.mode != "forward":
            if not more:
                await self._answer_from_stale()
            return
        chunk: bytes = message.get("body", b"")
        if self.storing:
            self.size += len(chunk)
            if self.size > self.request.rule.max_body_bytes:
                self.storing = False
                self.chunks = []
            else:
                self.chunks.append(chunk)
        if self.storing and not more:
            entry, stored = await self._store(b"".join(self.chunks))
            if self.start is not None:
                params = (self.fwd, "stored") if stored else (self.fwd,)
                await self.cache._send_entry(self.request, entry, entry.initial_age, "MISS", *params)
                return
        await self._flush_start()
        await self._forward(message)

    async def _store(self, body: bytes) -> tuple[Entry, bool]:
        """Build and write the entry; hand it to coalesced waiters once stored."""
        storage = self.storage
        headers = policy.stored_headers(self.headers)
        etag = storage.etag
        if not etag:
            etag = policy.strong_etag(body)
            headers.append((b"etag", etag))
        now = time.time()
        entry = Entry(
            self.cache._entry_key(self.request, storage.vary),
            self.status,
            headers,
            body,
            now,
            storage.ttl,
            etag,
            now - self.began,
            storage.initial_age,
            storage.flags,
            storage.last_modified,
            storage.vary,
        )
        tags = (*self.request.rule.tags, *policy.response_tags(self.headers))
        stored = await self.cache.store(entry, self.request.rule, self.request.primary_key, tags)
        if self.flight is not None and stored:
            self.cache.flights.finish(self.request.primary_key, self.flight, entry)
        return entry, stored

    async def _answer_from_stale(self) -> None:
        """End of a 304 (freshen and serve the stored entry) or of a 5xx (serve the stale entry)."""
        stale = self.stale
        assert stale is not None
        if self.mode == "stale":
            await self.cache._send_entry(
                self.request,
                stale,
                stale.age(time.time()),
                "STALE",
                "fwd=stale",
                f"fwd-status={self.status}",
                "detail=stale-if-error",
            )
            return
        headers = policy.freshened_headers(stale.headers, self.headers)
        now = time.time()
        storage = policy.storage(self.request.rule, stale.status, headers, now)
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
        )
        if storage.reason is None:
            await self.cache.store(entry, self.request.rule, self.request.primary_key)
            if self.flight is not None:
                self.cache.flights.finish(self.request.primary_key, self.flight, entry)
        await self.cache._send_entry(
            self.request, entry, entry.initial_age, "HIT", "fwd=stale", "fwd-status=304"
        )

    async def _flush_start(self) -> None:
        if self.start is None:
            return
        params = (self.fwd, "stored") if self.storing else (self.fwd,)
        headers = policy.without_tag_headers(self.headers) + self.cache._status_headers(
            self.request, b"MISS", *params
        )
        start, self.start = {**self.start, "headers": headers}, None
        await self._forward(start)

    async def _forward(self, message: Message) -> None:
        """Send to the client; once it is gone, keep quiet so the computation can finish for the cache."""
        if self.client_gone:
            return
        try:
            await self.request.send(message)
        except OSError:
            self.client_gone = True


def _xfetch(entry: Entry, age: float, beta: float) -> bool:
    """Probabilistic early expiration (Vattani et al., VLDB 2015): true ever more often as expiry nears."""
    return age - entry.delta * beta * math.log(1.0 - random.random()) >= entry.ttl


def _conditional_headers(headers: list[tuple[bytes, bytes]], stale: Entry) -> list[tuple[bytes, bytes]]:
    """Request headers that ask the app whether the stale entry is still current (RFC 9111 section 4.3.1)."""
    kept = [(name, value) for name, value in headers if name.lower() not in _CONDITIONAL_HEADERS]
    if stale.etag:
        kept.append((b"if-none-match", stale.etag))
    if stale.last_modified:
        kept.append((b"if-modified-since", stale.last_modified))
    return kept


async def _read_body(receive: Receive, headers: Headers, limit: int) -> tuple[bytes | None, Receive]:
    """The whole request body (None when over `limit` or cut short) and a `receive` that replays it."""
    declared = headers.get(b"content-length")
    if declared is not None:
        try:
            if int(declared[0]) > limit:
                return None, receive
        except ValueError:
            return None, receive
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None, _replay(messages, receive)
        size += len(message.get("body", b""))
        if size > limit:
            return None, _replay(messages, receive)
        if not message.get("more_body", False):
            break
    body = b"".join(m.get("body", b"") for m in messages)
    return body, _replay([{"type": "http.request", "body": body, "more_body": False}], receive)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A `receive` that returns `messages` first, then whatever the client sends next."""
    pending = list(reversed(messages))

    async def replay() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replay


async def _never() -> Message:
    """The `receive` of a background refresh after its body: no client, so nothing ever arrives."""
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def _discard(message: Message) -> None:
    """The `send` of a background refresh: nobody is listening."""


def _route_path(scope: Scope) -> str:
    """The path the app routes on: `path` without the `root_path` it was mounted under."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        return path[len(root_path) :] or "/"
    return path


def _redis_client(backend: Backend) -> Redis | RedisCluster | None:
    """The Redis client behind a backend (a TieredBackend's L2 included), or None for an in-process one."""
    target = getattr(backend, "l2", backend)
    return target.client if isinstance(target, RedisBackend) else None


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True

"""CacheMiddleware: match a rule, look the request up, decide, and hand it to a responder."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from . import policy, response
from .backends import Backend, BackendError, LockingBackend, RedisBackend
from .breaker import CircuitBreaker
from .budget import Budget
from .cache import Cache, Unavailable
from .coalesce import RowFlights, SingleFlight
from .config import CacheConfig, credential_names, signing_key_bytes, targeted_names
from .decision import Decision, Hit, OnlyIfCached, Revalidate, Stale, bypass_reason, decide
from .described import described_digest
from .detach import wait_for_background
from .heap import freezing_startup
from .keys import KeySpace, request_digest
from .metrics import Metrics
from .miss import refresh, run_miss
from .request import Request, read_body, route_path
from .responders import InvalidatingResponder, Parts, answer_from_entry, bypass, only_if_cached
from .response import StatusHeaders
from .rowpath import answer_rows
from .rules import CacheRule, RuleMatcher
from .targeted import DEFAULT_TARGETED_FIELDS
from .typed import RouteCanon, RouteTypes, route_types
from .upkeep import Upkeep

logger = logging.getLogger(__name__)

_BODYLESS_METHODS = frozenset({"GET", "HEAD"})


class CacheMiddleware:
    """Answers requests that match a `CacheRule` from the backend; everything else passes straight through.

    Give either `redis_url` (a client is made with `timeout` as its bound and no retries) or `backend`.
    Keys read `{prefix}:{namespace}:{version}:{rule}:{digest}`; a new `version` orphans every old entry.
    `timeout` also bounds the backend time of one request in total. `freeze_startup_heap` calls
    `gc.freeze()` when the app's lifespan start-up completes (heap.py: the switch for tail latency).
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
        typed_keys: bool = True,
        targeted_fields: Sequence[str] = DEFAULT_TARGETED_FIELDS,
        forward_targeted: bool = False,
        freeze_startup_heap: bool = False,
    ) -> None:
        if (redis_url is None) == (backend is None):
            raise ValueError("CacheMiddleware needs exactly one of redis_url= or backend=")
        self.config = CacheConfig(
            cache_name=cache_name,
            credential_headers=credential_names(credential_headers),
            allow_client_refresh=allow_client_refresh,
            cache_headers=cache_headers,
            debug=debug,
            signing_key=signing_key_bytes(signing_key),
            coalesce=coalesce,
            coalesce_timeout=coalesce_timeout,
            hit_for_miss=hit_for_miss,
            lock=lock,
            lock_lease=lock_lease,
            targeted_fields=targeted_names(targeted_fields),
            forward_targeted=forward_targeted,
        )
        keys = KeySpace(prefix, namespace, version)
        store: Backend = (
            backend
            if backend is not None
            else RedisBackend.from_url(str(redis_url), timeout=timeout, connect_timeout=connect_timeout)
        )
        if lock and not isinstance(store, LockingBackend):
            raise ValueError(
                "CacheMiddleware lock=True needs a backend with acquire/release (LockingBackend)"
            )
        self.app = app
        self.rules = RuleMatcher(rules)
        self.backend = store
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self.metrics = Metrics()
        self.cache = Cache(store, keys, self.breaker, self.metrics, self.config.signing_key)
        self.flights = SingleFlight(hit_for_miss)
        status_headers = StatusHeaders(self.config)
        self.parts = Parts(
            app,
            self.cache,
            self.config,
            self.flights,
            RowFlights(),
            self.metrics,
            status_headers,
            self.rules,
            self._key_canon,
        )
        self.upkeep = Upkeep(self.cache, self.metrics)
        self.typed_keys = typed_keys
        self.freeze_startup_heap = freeze_startup_heap
        self._route_types: RouteTypes | None = None
        self._canons: dict[tuple[str, str], RouteCanon | None] = {}
        self._budget = float(getattr(store, "timeout", math.inf))
        self._registered = False
        adopt_prefix = getattr(store, "adopt_prefix", None)
        if callable(adopt_prefix):  # a TieredBackend keeps and watches only this cache's keys
            adopt_prefix(f"{prefix}:")
        warm = getattr(store, "warm", None)
        if callable(warm):
            warm()  # Starlette builds middleware at lifespan startup or the first request: connect now

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._registered:
            self._register(scope)
        if scope["type"] != "http":
            if scope["type"] == "lifespan" and self.freeze_startup_heap:
                send = freezing_startup(send)
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        rule = self.rules.match(method, route_path(scope))
        if rule is None:
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        headers = policy.headers_map(scope["headers"])
        if method not in rule.method_set:  # an unsafe method that invalidates (RFC 9111 section 4.4)
            await InvalidatingResponder(self.parts, scope, headers, send)(receive)
            return
        directives = (
            policy.parse_cache_control(headers[b"cache-control"]) if b"cache-control" in headers else {}
        )
        config = self.config
        reason = bypass_reason(
            rule, headers, directives, config.credential_headers, config.allow_client_refresh
        )
        body: bytes | None = None
        if reason is None and (
            method not in _BODYLESS_METHODS or b"content-length" in headers or b"transfer-encoding" in headers
        ):
            read, receive = await read_body(receive, headers, rule.max_request_bytes)
            reason, body = (read, None) if isinstance(read, str) else (None, read)
        if reason is not None:
            await bypass(self.parts, rule, reason, scope, receive, send)
            return

        canon = self._canon(rule, method, scope) if self.typed_keys else None
        by_rows = rule.batch is not None or rule.row is not None
        if by_rows:  # keyed row by row (rowpath.py): no whole-request key
            key = ""
        else:
            digest = request_digest(rule.keying, scope, headers, body, config.credential_headers, canon)
            key = self.cache.keys.entry(rule.key_name, digest)
        request = Request(
            scope=scope,
            receive=receive,
            send=send,
            rule=rule,
            headers=headers,
            body=body,
            key=key,
            started=started,
            directives=directives,
            head=method == "HEAD",
            budget=Budget(self._budget),
        )
        if by_rows:
            await answer_rows(self.parts, request, canon)
        else:
            try:
                entry = await self.cache.lookup(request.key, headers, request.budget)
            except Unavailable as exc:
                await bypass(self.parts, rule, exc.reason, scope, receive, send)
                return
            now = time.time()
            await self._respond(request, decide(entry, now, rule, directives, config.allow_client_refresh))
        await self.upkeep.after_response()

    async def _respond(self, request: Request, decision: Decision) -> None:
        """Carry out the decision for a looked-up request."""
        if isinstance(decision, Hit):
            entry = decision.entry
            status = response.hit(math.ceil(entry.ttl - decision.age))
            await answer_from_entry(self.parts, request, entry, decision.age, status)
            if decision.refresh:
                await refresh(self.parts, request)
        elif isinstance(decision, Stale):
            entry = decision.entry
            status = response.stale(math.floor(entry.ttl - decision.age))
            await answer_from_entry(self.parts, request, entry, decision.age, status)
            await refresh(self.parts, request)
        elif isinstance(decision, Revalidate):
            await run_miss(self.parts, request, decision.entry, "fwd=stale", True)
        elif isinstance(decision, OnlyIfCached):
            await only_if_cached(self.parts, request)
        else:
            await run_miss(self.parts, request, decision.stale, decision.fwd, False)

    def _key_canon(self, rule: CacheRule, method: str, scope: Scope) -> RouteCanon | None:
        """The canonicaliser requests of `rule` are keyed with (None without typed keys)."""
        return self._canon(rule, method, scope) if self.typed_keys else None

    def _canon(self, rule: CacheRule, method: str, scope: Scope) -> RouteCanon | None:
        """The typed canonicaliser of the route a rule covers, learnt once from the app's own routes."""
        known = (rule.key_name, method)
        if known in self._canons:
            return self._canons[known]
        if self._route_types is None:
            self._route_types = route_types(scope.get("app") or self.app)
        canon = self._route_types.for_request(method, route_path(scope))
        if canon is not None and rule.round_floats is not None:
            canon = canon.with_rounding(rule.round_floats)
        self._canons[known] = canon
        return canon

    def _register(self, scope: Scope) -> None:
        """Make this instance reachable as `app.state.cache`, on lifespan startup or the first request."""
        state = getattr(scope.get("app"), "state", None)
        if state is not None:
            state.cache = self
        self._registered = True

    @property
    def keys(self) -> KeySpace:
        return self.cache.keys

    def set_version(self, version: str) -> None:
        """Key new requests under `version`: every entry stored under the old one is out of reach at once
        (in this process; other processes must be given the same version)."""
        self.cache.keys = self.cache.keys.with_version(version)
        logger.info("cache version is now %s", version, extra={"event": "version", "version": version})

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
        await wait_for_background()
        await self.cache.aclose()

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
        Raises `BackendError` when the backend fails, `ValueError` when nothing matches the request."""
        if sum((url is not None, path is not None, bool(tags), everything)) != 1:
            raise ValueError("invalidate takes exactly one of url=, path=, tags= or everything=True")
        cache = self.cache
        if url is not None:
            rule = self.rules.match(method.upper(), urlsplit(url).path or "/")
            if rule is None:
                raise ValueError(f"no cache rule matches {method} {url}")
            digest = described_digest(
                rule.keying, method, url, body, headers, "", self.config.credential_headers
            )
            return await cache.backend.delete([cache.keys.entry(rule.key_name, digest)])
        if path is not None:
            rule = next((r for r in self.rules.rules if path in (r.path, r.key_name)), None)
            rule = rule or self.rules.match("GET", path)
            if rule is None:
                raise ValueError(f"no cache rule for path {path!r}")
            count = await cache.purge(cache.keys.entries_glob(rule.key_name))
        elif tags:
            count = await cache.purge_tags(tags)
        else:
            count = await cache.purge_everything()
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
        await response.send_response(send, 200, headers, body)


__all__ = ["BackendError", "CacheMiddleware", "MetricsEndpoint"]

"""CacheMiddleware: match a rule, look the request up, then answer a hit, run a miss, or bypass."""

from __future__ import annotations

import time
from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import policy
from .backends import Backend, BackendError, RedisBackend
from .breaker import CircuitBreaker
from .entry import Entry, decode, encode
from .keys import Headers, request_digest
from .rules import CacheRule, RuleMatcher

_SAFE_KEY_PART = frozenset("{}: \t\r\n")
_BODYLESS_METHODS = frozenset({"GET", "HEAD"})


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
        cache_name: str = "redis-cache",
        breaker: CircuitBreaker | None = None,
    ) -> None:
        if (redis_url is None) == (backend is None):
            raise ValueError("CacheMiddleware needs exactly one of redis_url= or backend=")
        for label, part in (("prefix", prefix), ("namespace", namespace), ("version", version)):
            if not part or _SAFE_KEY_PART.intersection(part):
                raise ValueError(f"CacheMiddleware {label} must be non-empty without braces, ':' or spaces")
        self.app = app
        self.rules = RuleMatcher(rules)
        self.backend: Backend = (
            backend if backend is not None else RedisBackend.from_url(str(redis_url), timeout=timeout)
        )
        self.key_prefix = f"{prefix}:{namespace}:{version}:"
        self.cache_name = cache_name
        self.breaker = breaker if breaker is not None else CircuitBreaker()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        rule = self.rules.match(method, _route_path(scope))
        if rule is None:
            await self.app(scope, receive, send)
            return

        headers: Headers = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.lower(), []).append(value)
        if not policy.CREDENTIAL_HEADERS.isdisjoint(headers):
            await self._bypass(scope, receive, send, "credentials")
            return

        body: bytes | None = None
        if method not in _BODYLESS_METHODS or b"content-length" in headers or b"transfer-encoding" in headers:
            body, receive = await _read_body(receive, headers, rule.max_request_bytes)
            if body is None:
                await self._bypass(scope, receive, send, "request-too-large")
                return

        if not self.breaker.allow():
            await self._bypass(scope, receive, send, "circuit-open")
            return
        key = self.key_prefix + rule.key_name + ":" + request_digest(rule, scope, headers, body)
        try:
            data = await self.backend.get(key)
        except BackendError as exc:
            self.breaker.failure(exc)
            await self._bypass(scope, receive, send, "backend-error")
            return
        self.breaker.success()

        now = time.time()
        entry = decode(data, key) if data is not None else None
        if entry is not None and entry.is_fresh(now):
            await self._send_hit(entry, method == "HEAD", now, send)
            return
        responder = MissResponder(self, send, rule, key, store=method != "HEAD")
        await self.app(scope, receive, responder.send)

    def stats(self) -> dict[str, object]:
        """Counters and state for operators: currently the circuit breaker's."""
        return {"breaker": self.breaker.snapshot()}

    async def aclose(self) -> None:
        """Close the backend's connections."""
        await self.backend.aclose()

    async def _send_hit(self, entry: Entry, head: bool, now: float, send: Send) -> None:
        age = entry.age(now)
        headers = [
            *entry.headers,
            (b"content-length", str(len(entry.body)).encode()),
            (b"age", str(int(age)).encode()),
            (b"x-cache", b"HIT"),
            (b"cache-status", policy.cache_status(self.cache_name, "hit", f"ttl={int(entry.ttl - age)}")),
        ]
        await send({"type": "http.response.start", "status": entry.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else entry.body})

    async def _bypass(self, scope: Scope, receive: Receive, send: Send, reason: str) -> None:
        extra = [
            (b"x-cache", b"BYPASS"),
            (b"cache-status", policy.cache_status(self.cache_name, "fwd=bypass", f"detail={reason}")),
        ]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def store(self, key: str, entry: Entry) -> None:
        """Write an entry; a failure is counted by the breaker and dropped, never retried or raised."""
        if not self.breaker.allow():
            return
        try:
            await self.backend.set(key, encode(entry), entry.ttl)
        except BackendError as exc:
            self.breaker.failure(exc)
        else:
            self.breaker.success()


class MissResponder:
    """Wraps `send` on a miss: marks the response, and stores it before its last body message goes out."""

    def __init__(self, cache: CacheMiddleware, send: Send, rule: CacheRule, key: str, *, store: bool) -> None:
        self.cache = cache
        self.downstream = send
        self.rule = rule
        self.key = key
        self.storing = store
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.size = 0

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            headers = list(message.get("headers", ()))
            if self.storing and not message.get("trailers", False):
                self.storing = policy.unstorable_reason(self.rule, self.status, headers) is None
            else:
                self.storing = False
            self.headers = policy.stored_headers(headers) if self.storing else []
            params = ("fwd=uri-miss", "stored") if self.storing else ("fwd=uri-miss",)
            headers.append((b"x-cache", b"MISS"))
            headers.append((b"cache-status", policy.cache_status(self.cache.cache_name, *params)))
            message = {**message, "headers": headers}
        elif kind == "http.response.body" and self.storing:
            chunk: bytes = message.get("body", b"")
            self.size += len(chunk)
            if self.size > self.rule.max_body_bytes:
                self.storing = False
                self.chunks = []
            else:
                self.chunks.append(chunk)
                if not message.get("more_body", False):
                    entry = Entry(
                        self.key, self.status, self.headers, b"".join(self.chunks), time.time(), self.rule.ttl
                    )
                    await self.cache.store(self.key, entry)
        elif kind != "http.response.body":
            self.storing = False
        await self.downstream(message)


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


def _route_path(scope: Scope) -> str:
    """The path the app routes on: `path` without the `root_path` it was mounted under."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        return path[len(root_path) :] or "/"
    return path

"""`CacheDashboard`: a live page of what the cache does, as an ASGI app the user mounts.

    app.mount("/cache", CacheDashboard(token=os.environ["CACHE_DASHBOARD_TOKEN"]))

GET / serves one self-contained HTML page (inline script and SVG, no network beyond this app) that polls
GET /stats.json every second. Off unless mounted; with a `token`, both need `?token=` or the
`X-Dashboard-Token` header, and answer 401 otherwise.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson
from starlette.types import Receive, Scope, Send

from .dashboard_page import PAGE

if TYPE_CHECKING:
    from .middleware import CacheMiddleware

RedisInfo = Callable[[], Awaitable[dict[str, Any]]]
HOT_KEYS_SHOWN = 10


class CacheDashboard:
    """The dashboard of `cache` (default: `app.state.cache`, as `MetricsEndpoint` finds it). `info`, when
    given, is awaited on each poll for Redis figures (`used_memory`, `used_memory_human`, `evicted_keys`,
    `maxmemory_policy`: e.g. `lambda: ops.redis_info(client)`); failures show as unavailable."""

    def __init__(
        self, cache: CacheMiddleware | None = None, token: str | None = None, info: RedisInfo | None = None
    ) -> None:
        self.cache = cache
        self.token = token.encode() if token else None
        self.info = info

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if self.cache is None:
            self.cache = getattr(getattr(scope.get("app"), "state", None), "cache", None)
        if not self._authorised(scope):
            await _respond(send, 401, b"text/plain; charset=utf-8", b"dashboard token required\n")
            return
        path = _route_path(scope)
        if scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, b"text/plain; charset=utf-8", b"method not allowed\n")
        elif path in ("", "/"):
            await _respond(send, 200, b"text/html; charset=utf-8", PAGE.encode())
        elif path == "/stats.json":
            body = orjson.dumps(await self.data(), option=orjson.OPT_NON_STR_KEYS)
            await _respond(send, 200, b"application/json", body)
        else:
            await _respond(send, 404, b"text/plain; charset=utf-8", b"not found\n")

    async def data(self) -> dict[str, Any]:
        """What the page shows: `stats()` plus the time, the hottest keys and Redis figures."""
        if self.cache is None:
            return {"time": time.time(), "error": "no CacheMiddleware found (pass cache= or add one)"}
        stats = self.cache.stats()
        redis: dict[str, Any] | None = None
        if self.info is not None:
            try:
                redis = await self.info()
            except Exception as exc:  # shown on the page; a dashboard must not fail with Redis
                redis = {"error": f"{type(exc).__name__}: {exc}"}
        return {
            "time": time.time(),
            **stats,
            "hot_keys": self.cache.metrics.hot.top(HOT_KEYS_SHOWN),
            "redis": redis,
        }

    def _authorised(self, scope: Scope) -> bool:
        if self.token is None:
            return True
        given = dict(scope.get("headers", ())).get(b"x-dashboard-token")
        if given is None:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            given = query.get("token", [""])[0].encode("latin-1")
        return hmac.compare_digest(given, self.token)


def _route_path(scope: Scope) -> str:
    path, root = str(scope.get("path", "")), str(scope.get("root_path", ""))
    return path[len(root) :] if root and path.startswith(root) else path


async def _respond(send: Send, status: int, content_type: bytes, body: bytes) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

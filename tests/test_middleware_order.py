"""Where the cache goes among other middleware (docs/operators.md): each recommended order, tested.

Starlette's `add_middleware` wraps what is there, so the middleware added last is the outermost.
Recommended, outermost first: CORS, GZip, authentication, cache, app.
"""

from __future__ import annotations

import orjson
import redis
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from redis_cache_middleware import CacheMiddleware, RedisBackend
from redis_cache_middleware.entry import Entry, decode

from .apps import DEFAULT_RULES, CountingApp
from .support import client_for

SESSION = "x-session"  # a header the cache does not treat as a credential: the content is public


class RequireSession:
    """Authentication as a pure ASGI middleware: 401 unless the request carries the session header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (SESSION.encode(), b"valid") not in scope["headers"]:
            await PlainTextResponse("unauthorised", status_code=401)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def cached(backend: RedisBackend) -> tuple[Starlette, CountingApp]:
    counting = CountingApp()
    app = counting.starlette()
    app.add_middleware(CacheMiddleware, backend=backend, rules=list(DEFAULT_RULES), namespace="order")
    return app, counting


async def test_authentication_outside_the_cache_checks_every_cached_answer(backend: RedisBackend) -> None:
    app, counting = cached(backend)
    app.add_middleware(RequireSession)  # outside the cache
    async with client_for(app) as client:
        first = await client.get("/predict?x=1", headers={SESSION: "valid"})
        again = await client.get("/predict?x=1", headers={SESSION: "valid"})
        anonymous = await client.get("/predict?x=1")
    assert (first.headers["x-cache"], again.headers["x-cache"]) == ("MISS", "HIT")
    assert anonymous.status_code == 401 and "x-cache" not in anonymous.headers
    assert counting.calls["predict"] == 1


async def test_authentication_inside_the_cache_is_skipped_by_a_hit(backend: RedisBackend) -> None:
    """Why the order matters: the wrong way round, a stored answer reaches a caller the app would refuse."""
    counting = CountingApp()
    app = counting.starlette()
    app.add_middleware(RequireSession)
    app.add_middleware(CacheMiddleware, backend=backend, rules=list(DEFAULT_RULES), namespace="order")
    async with client_for(app) as client:
        await client.get("/predict?x=1", headers={SESSION: "valid"})
        anonymous = await client.get("/predict?x=1")
    assert anonymous.status_code == 200 and anonymous.headers["x-cache"] == "HIT"


async def test_gzip_outside_the_cache_stores_identity_bodies_and_compresses_each_answer(
    backend: RedisBackend, redis_client: redis.Redis
) -> None:
    app, counting = cached(backend)
    app.add_middleware(GZipMiddleware, minimum_size=10)
    async with client_for(app) as client:
        zipped = await client.get("/predict?x=1", headers={"accept-encoding": "gzip"})
        plain = await client.get("/predict?x=1", headers={"accept-encoding": "identity"})
    assert zipped.headers["content-encoding"] == "gzip" and zipped.headers["x-cache"] == "MISS"
    assert "content-encoding" not in plain.headers and plain.headers["x-cache"] == "HIT"
    assert zipped.json() == plain.json() and counting.calls["predict"] == 1  # one entry serves both
    (key,) = [k.decode() for k in redis_client.scan_iter("rcm:order:*") if not k.endswith(b":stats")]
    stored = redis_client.get(key)
    assert isinstance(stored, bytes)
    entry = decode(stored, key)
    assert isinstance(entry, Entry) and orjson.loads(entry.body) == plain.json()  # identity body
    assert b"content-encoding" not in dict(entry.headers)


async def test_cors_outside_the_cache_answers_preflights_and_each_origin(backend: RedisBackend) -> None:
    app, counting = cached(backend)
    origins = ["https://a.example", "https://b.example"]
    app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET"], allow_headers=[SESSION])
    async with client_for(app) as client:
        preflight = await client.options(
            "/predict?x=1",
            headers={"origin": origins[0], "access-control-request-method": "GET"},
        )
        from_a = await client.get("/predict?x=1", headers={"origin": origins[0]})
        from_b = await client.get("/predict?x=1", headers={"origin": origins[1]})
    assert preflight.status_code == 200 and "x-cache" not in preflight.headers
    assert from_a.headers["access-control-allow-origin"] == origins[0]
    assert from_b.headers["access-control-allow-origin"] == origins[1]  # not the origin stored first
    assert from_b.headers["x-cache"] == "HIT" and counting.calls["predict"] == 1


async def test_the_whole_recommended_stack(backend: RedisBackend) -> None:
    app, counting = cached(backend)
    app.add_middleware(RequireSession)
    app.add_middleware(GZipMiddleware, minimum_size=10)
    app.add_middleware(CORSMiddleware, allow_origins=["https://a.example"], allow_headers=[SESSION])
    headers = {"origin": "https://a.example", "accept-encoding": "gzip", SESSION: "valid"}
    async with client_for(app) as client:
        first = await client.get("/predict?x=1", headers=headers)
        second = await client.get("/predict?x=1", headers=headers)
        refused = await client.get("/predict?x=1", headers={"origin": "https://a.example"})
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert second.headers["content-encoding"] == "gzip"
    assert second.headers["access-control-allow-origin"] == "https://a.example"
    assert refused.status_code == 401 and counting.calls["predict"] == 1

"""Invalidation from code: by request, by rule, by tag (static and from the app), everything; on one Redis
and on a Redis Cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from redis_cache_middleware import CacheMiddleware, CacheRule, MemoryBackend, RedisBackend

from .apps import cached_app
from .redis_cluster import LocalCluster
from .support import client_for

RULES = [
    CacheRule("/predict", ttl=60, methods=("GET", "POST"), tags=("model",)),
    CacheRule("/headers", ttl=60),
    CacheRule("/items/{item_id}", ttl=60),
]


def entries(client: redis.Redis) -> int:
    return sum(
        1 for key in client.scan_iter("rcm:test:*") if b":tag:" not in key and not key.endswith(b":stats")
    )


async def test_tag_headers_are_stripped_and_indexed(backend: RedisBackend, redis_client: redis.Redis) -> None:
    app, _counting = cached_app(backend, rules=RULES)
    async with client_for(app) as client:
        first = await client.get("/headers?cache-tag=iris,setosa")
        second = await client.get("/headers?surrogate-key=iris%20virginica")
        hit = await client.get("/headers?cache-tag=iris,setosa")
        cache: CacheMiddleware = app.state.cache
        assert "cache-tag" not in first.headers and "surrogate-key" not in second.headers
        assert "cache-tag" not in hit.headers and hit.headers["x-cache"] == "HIT"
        assert await cache.invalidate(tags=["setosa"]) == 1
        assert (await client.get("/headers?cache-tag=iris,setosa")).headers["x-cache"] == "MISS"
        assert (await client.get("/headers?surrogate-key=iris%20virginica")).headers["x-cache"] == "HIT"
        assert await cache.invalidate(tags=["iris"]) == 2
    assert entries(redis_client) == 0


async def test_invalidate_by_request_rule_static_tag_and_everything(
    backend: RedisBackend, redis_client: redis.Redis
) -> None:
    app, _counting = cached_app(backend, rules=RULES)
    async with client_for(app) as client:
        for x in (1, 2, 3):
            await client.get(f"/predict?x={x}")
        await client.post("/predict", json={"x": 1})
        await client.get("/items/a")
        cache: CacheMiddleware = app.state.cache
        assert await cache.invalidate(url="http://testserver/predict?x=1") == 1
        assert (
            await cache.invalidate(
                url="http://testserver/predict",
                method="POST",
                body=b'{ "x": 1 }',
                headers={"content-type": "application/json"},
            )
            == 1
        )
        assert (await client.get("/predict?x=1")).headers["x-cache"] == "MISS"
        assert (await client.get("/predict?x=2")).headers["x-cache"] == "HIT"
        assert await cache.invalidate(tags=["model"]) == 3  # x=1 again, x=2, x=3
        assert entries(redis_client) == 1
        await client.get("/predict?x=9")
        assert await cache.invalidate(path="/items/{item_id}") == 1
        assert await cache.invalidate(everything=True) == 1
        with pytest.raises(ValueError, match="exactly one"):
            await cache.invalidate()
        with pytest.raises(ValueError, match="no cache rule"):
            await cache.invalidate(url="http://testserver/other")
    assert entries(redis_client) == 0


async def test_an_endpoint_invalidates_through_app_state(backend: RedisBackend) -> None:
    app, _counting = cached_app(backend, rules=RULES)

    async def purge(request: Request) -> JSONResponse:
        return JSONResponse({"deleted": await request.app.state.cache.invalidate(path="/predict")})

    app.router.routes.append(Route("/purge", purge, methods=["POST"]))
    async with client_for(app) as client:
        await client.get("/predict?x=1")
        purged = await client.post("/purge")
        again = await client.get("/predict?x=1")
    assert purged.json() == {"deleted": 1} and again.headers["x-cache"] == "MISS"


async def test_memory_backend_supports_every_kind_of_invalidation() -> None:
    app, _counting = cached_app(MemoryBackend(), rules=RULES)
    async with client_for(app) as client:
        await client.get("/predict?x=1")
        await client.get("/predict?x=2")
        cache: CacheMiddleware = app.state.cache
        assert await cache.invalidate(url="http://testserver/predict?x=1") == 1
        assert await cache.invalidate(everything=True) == 1
        await client.get("/predict?x=3")
        assert await cache.invalidate(tags=["model"]) == 1  # the backend protocol purges sets too
        await client.get("/predict?x=4")
        assert await cache.invalidate(path="/predict") == 1
        assert (await client.get("/predict?x=4")).headers["x-cache"] == "MISS"


async def test_invalidation_on_a_redis_cluster(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, primaries=3).start()
    backend = RedisBackend.from_url(cluster.url, timeout=0.5)
    app, _counting = cached_app(backend, rules=RULES)
    try:
        async with client_for(app) as client:
            for x in range(20):
                await client.get(f"/predict?x={x}")
                await client.get(f"/items/{x}")
            cache: CacheMiddleware = app.state.cache
            assert await cache.invalidate(url="http://testserver/predict?x=0") == 1
            assert await cache.invalidate(tags=["model"]) == 19
            assert await cache.invalidate(path="/items/{item_id}") == 20
            assert (await client.get("/items/3")).headers["x-cache"] == "MISS"
            assert await cache.invalidate(everything=True) == 1
    finally:
        await backend.aclose()
        cluster.stop()


async def test_state_changes_log_one_structured_line_each(
    backend: RedisBackend, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = cached_app(backend, rules=RULES)
    caplog.set_level("INFO", logger="redis_cache_middleware")
    async with client_for(app) as client:
        for x in range(5):
            await client.get(f"/predict?x={x}")
            await client.get(f"/predict?x={x}")
        cache: CacheMiddleware = app.state.cache
        await cache.invalidate(tags=["model"])
        cache.set_version("v2")
    # the start-up check of Redis's memory settings (this test Redis has no maxmemory) logs once, apart
    records = [r for r in caplog.records if getattr(r, "event", None) != "redis_memory"]
    events = [(r.event, getattr(r, "deleted", None)) for r in records if hasattr(r, "event")]
    assert events == [("purge", 5), ("version", None)]
    assert len(records) == 2, "nothing is logged per request"

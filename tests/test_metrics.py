"""Observability: `stats()`, the Prometheus exposition, and the middleware reachable from the app."""

from __future__ import annotations

import redis
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from redis_cache_middleware import CacheMiddleware, MetricsEndpoint, RedisBackend

from .apps import cached_app
from .support import client_for


async def test_stats_count_outcomes_per_rule(backend: RedisBackend, redis_client: redis.Redis) -> None:
    app, _ = cached_app(backend)
    async with client_for(app) as client:
        await client.get("/predict?x=1")
        await client.get("/predict?x=1")
        await client.get("/predict?x=1")
        await client.get("/predict?x=1", headers={"authorization": "Bearer a"})
        await client.get("/headers?set-cookie=a%3Db")
        cache: CacheMiddleware = app.state.cache
    stats = cache.stats()
    predict = stats["rules"]["/predict"]  # type: ignore[index]
    assert (predict["hit"], predict["miss"], predict["bypass"]) == (2, 1, 1)
    assert predict["bypass_reasons"] == {"credentials": 1}
    assert predict["stored"] == 1 and predict["bytes_stored"] > 0
    assert predict["hit_p99_s"] is not None and predict["hit_p99_s"] <= predict["miss_p99_s"] * 100
    assert stats["rules"]["/headers"]["stored"] == 0  # type: ignore[index]
    assert stats["breaker"]["state"] == "closed"  # type: ignore[index]


async def test_prometheus_exposition(backend: RedisBackend) -> None:
    app, _ = cached_app(backend)
    async with client_for(app) as client:
        await client.get("/predict?x=1")
        await client.get("/predict?x=1")
        app.router.routes.append(Route("/metrics", MetricsEndpoint()))  # finds app.state.cache itself
        text = (await client.get("/metrics")).text
    assert 'rcm_responses_total{outcome="hit",rule="/predict"} 1.0' in text
    assert 'rcm_responses_total{outcome="miss",rule="/predict"} 1.0' in text
    assert 'rcm_latency_seconds_count{path="hit",rule="/predict"} 1.0' in text
    assert "rcm_breaker_open 0.0" in text


async def test_an_endpoint_reaches_the_cache_through_app_state(backend: RedisBackend) -> None:
    app, _ = cached_app(backend)

    async def inspect(request: Request) -> JSONResponse:
        return JSONResponse({"in_flight": request.app.state.cache.stats()["in_flight"]})

    app.router.routes.append(Route("/inspect", inspect))
    async with client_for(app) as client:
        response = await client.get("/inspect")
    assert response.json() == {"in_flight": 0}

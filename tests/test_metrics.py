"""Observability: `stats()`, the Prometheus exposition, and the middleware reachable from the app."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from redis_cache_middleware import CacheMiddleware, CacheRule, MetricsEndpoint, RedisBackend
from redis_cache_middleware.metrics import Metrics, Outcome

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


def test_time_saved_rows_and_hot_keys_are_counted_per_rule() -> None:
    metrics = Metrics(hot_keys=2)
    metrics.served("/predict", Outcome.MISS, 0.2)
    metrics.served("/predict", Outcome.HIT, 0.001, saved=0.2)
    metrics.served("/predict", Outcome.STALE, 0.001, saved=0.3)
    metrics.rows("/batch", hit=7, computed=3)
    for key in ("a", "a", "a", "b", "c"):  # c replaces b, the least counted, and inherits its count
        metrics.touched(key)
    snapshot = metrics.snapshot()
    assert snapshot["/predict"]["saved_seconds"] == 0.2 + 0.3
    assert (snapshot["/batch"]["rows_hit"], snapshot["/batch"]["rows_computed"]) == (7, 3)
    assert metrics.hot.top() == [("a", 3), ("c", 2)]


def test_redis_counters_carry_what_grew_at_most_once_per_interval() -> None:
    metrics = Metrics()
    metrics.served("/predict", Outcome.HIT, 0.001, saved=0.5)
    first = metrics.counters_due(now=100.0)
    assert first == {"/predict\thit": 1, "/predict\tsaved_seconds": 0.5}
    metrics.served("/predict", Outcome.HIT, 0.001, saved=0.5)
    assert metrics.counters_due(now=100.5) is None  # not yet due
    second = metrics.counters_due(now=101.0)
    assert second == {"/predict\thit": 1, "/predict\tsaved_seconds": 0.5}
    metrics.counters_lost(second)  # the write failed: the next flush carries it again
    assert metrics.counters_due(now=102.0) == second
    assert metrics.counters_due(now=103.0) is None  # nothing grew


def test_prometheus_exposes_time_saved_and_rows() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    metrics = Metrics()
    metrics.served("/predict", Outcome.HIT, 0.001, saved=1.5)
    metrics.rows("/batch", hit=4, computed=1)
    registry = CollectorRegistry(auto_describe=False)

    class Collector:
        def collect(self) -> Iterator[Any]:
            return metrics.collect({"state": "closed", "total_failures": 0})

    registry.register(Collector())
    text = generate_latest(registry).decode()
    assert 'rcm_saved_seconds_total{rule="/predict"} 1.5' in text
    assert 'rcm_rows_total{result="hit",rule="/batch"} 4.0' in text
    assert 'rcm_rows_total{result="computed",rule="/batch"} 1.0' in text


async def test_each_process_adds_its_counters_to_the_shared_hash(
    backend: RedisBackend, redis_client: redis.Redis
) -> None:
    app = Starlette(routes=[Route("/predict", lambda request: JSONResponse({"p": 1}))])
    cache = CacheMiddleware(app, backend=backend, rules=[CacheRule("/predict", ttl=60)], namespace="shared")
    cache.upkeep.interval = 0.0  # flush after every response rather than once a second
    async with client_for(cache) as client:
        for _ in range(3):
            await client.get("/predict")
    counters = redis_client.hgetall(cache.keys.stats())
    assert counters[b"/predict\tmiss"] == b"1" and counters[b"/predict\thit"] == b"2"
    assert float(counters[b"/predict\tsaved_seconds"]) > 0


async def test_one_startup_warning_when_redis_would_fill_up(
    backend: RedisBackend, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    redis_client.config_set("maxmemory", 0)  # the test Redis: no limit at all
    caplog.set_level("WARNING", logger="redis_cache_middleware")
    app = Starlette(routes=[Route("/predict", lambda request: JSONResponse({"p": 1}))])
    cache = CacheMiddleware(app, backend=backend, rules=[CacheRule("/predict", ttl=60)], namespace="memory")
    async with client_for(cache) as client:
        for _ in range(3):
            await client.get("/predict")
    warnings = [r.message for r in caplog.records if getattr(r, "event", None) == "redis_memory"]
    assert len(warnings) == 1 and "no maxmemory" in warnings[0]

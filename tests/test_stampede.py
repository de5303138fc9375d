"""Stampede protection: one model call per key under a burst, stale serving, early refresh."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from redis_cache_middleware import CacheMiddleware, CacheRule, MemoryBackend, RedisBackend

from .support import http_scope


class SlowModel:
    """An endpoint that takes `delay` seconds, counts its calls and its peak concurrency, and can fail."""

    def __init__(self, delay: float = 0.2) -> None:
        self.delay = delay
        self.calls = 0
        self.running = 0
        self.peak = 0
        self.fail: str | None = None  # "raise" or "500"
        self.failures_left = -1  # how many calls fail before it recovers; -1: as long as `fail` is set
        self.set_cookie = False

    async def predict(self, request: Request) -> Response:
        self.calls += 1
        call = self.calls
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.running -= 1
        failing = self.fail
        self.failures_left -= 1
        if self.failures_left == 0:
            self.fail = None
        if failing == "raise":
            raise RuntimeError("model crashed")
        if failing == "500":
            return JSONResponse({"error": "model down"}, status_code=500)
        response = JSONResponse({"x": request.query_params.get("x"), "call": call})
        if self.set_cookie:
            response.set_cookie("session", str(call))
        return response


def build(
    backend: RedisBackend, rule: CacheRule | None = None, **options: Any
) -> tuple[Starlette, SlowModel]:
    model = SlowModel()
    app = Starlette(routes=[Route("/predict", model.predict)])
    app.add_middleware(
        CacheMiddleware,
        backend=backend,
        rules=[rule or CacheRule("/predict", ttl=60)],
        namespace="stampede",
        **options,
    )
    return app, model


def client(app: Starlette) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30)


async def burst(app: Starlette, n: int, url: str = "/predict?x=1") -> list[httpx.Response]:
    async with client(app) as c:
        return list(await asyncio.gather(*(c.get(url) for _ in range(n))))


async def test_one_model_call_for_a_burst_of_identical_cold_requests(backend: RedisBackend) -> None:
    app, model = build(backend)
    responses = await burst(app, 100)
    assert model.calls == 1
    assert {r.status_code for r in responses} == {200}
    assert {r.content for r in responses} == {responses[0].content}
    caches = sorted(r.headers["x-cache"] for r in responses)
    assert caches == ["HIT"] * 99 + ["MISS"]
    collapsed = [r for r in responses if r.headers["x-cache"] == "HIT"]
    assert all(r.headers["cache-status"] == "redis-cache; fwd=uri-miss; collapsed" for r in collapsed)


async def test_different_keys_are_not_coalesced(backend: RedisBackend) -> None:
    app, model = build(backend)
    async with client(app) as c:
        responses = await asyncio.gather(*(c.get(f"/predict?x={i % 5}") for i in range(50)))
    assert model.calls == 5
    assert all(r.json()["x"] == r.request.url.params["x"] for r in responses)


async def test_without_coalescing_every_request_calls_the_model(backend: RedisBackend) -> None:
    app, model = build(backend, coalesce=False)
    await burst(app, 20)
    assert model.calls == 20


async def test_leader_exception_leaves_waiters_answered(backend: RedisBackend) -> None:
    app, model = build(backend)
    model.fail, model.failures_left = "raise", 1
    responses = await burst(app, 10)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 9 + [500]
    assert model.calls == 10


async def test_uncacheable_leader_response_is_not_handed_to_waiters(backend: RedisBackend) -> None:
    app, model = build(backend)
    model.set_cookie = True
    responses = await burst(app, 10)
    assert model.calls == 10
    assert len({r.headers["set-cookie"] for r in responses}) == 10


async def test_hit_for_miss_stops_queueing_behind_uncacheable_keys(backend: RedisBackend) -> None:
    app, model = build(backend, hit_for_miss=10)
    model.set_cookie = True
    await burst(app, 5)
    assert model.peak == 4  # the first burst queued behind its leader, then called the app itself
    model.peak = 0
    await burst(app, 5)
    assert model.peak == 5  # now the key is known uncacheable: nobody waits for a leader


async def test_waiters_fall_back_when_the_leader_is_too_slow(backend: RedisBackend) -> None:
    app, model = build(backend, coalesce_timeout=0.05)
    responses = await burst(app, 5)
    assert {r.status_code for r in responses} == {200}
    assert model.calls == 5


async def test_leader_client_disconnecting_does_not_cancel_the_shared_computation(
    backend: RedisBackend,
) -> None:
    app, model = build(backend)
    scope = http_scope("/predict", b"x=1")

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    leader = asyncio.create_task(app(scope, receive, send))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    async with client(app) as c:
        waiter = asyncio.create_task(c.get("/predict?x=1"))
        await asyncio.sleep(0.02)
        leader.cancel()  # the leader's server gives up on it, as when its client disconnects
        response = await waiter
    assert response.status_code == 200 and response.headers["x-cache"] == "HIT"
    assert model.calls == 1


async def test_stale_while_revalidate_serves_stale_and_refreshes_once(backend: RedisBackend) -> None:
    rule = CacheRule("/predict", ttl=0.3, stale_while_revalidate=5)
    app, model = build(backend, rule)
    first = (await burst(app, 1))[0]
    await asyncio.sleep(0.35)
    stale = await burst(app, 20)
    assert {r.headers["x-cache"] for r in stale} == {"STALE"}
    assert {r.json()["call"] for r in stale} == {first.json()["call"]}
    assert all(r.headers["cache-status"].startswith("redis-cache; hit; ttl=-") for r in stale)
    await asyncio.sleep(model.delay + 0.1)
    refreshed = (await burst(app, 1))[0]
    assert refreshed.headers["x-cache"] == "HIT" and refreshed.json()["call"] == 2
    assert model.calls == 2


async def test_nothing_stale_is_served_after_the_windows(backend: RedisBackend) -> None:
    rule = CacheRule("/predict", ttl=0.2, stale_while_revalidate=0.2, stale_if_error=0.2)
    app, model = build(backend, rule)
    await burst(app, 1)
    await asyncio.sleep(0.5)
    model.fail = "500"
    response = (await burst(app, 1))[0]
    assert response.status_code == 500 and response.headers["x-cache"] == "MISS"


@pytest.mark.parametrize("failure", ["raise", "500"])
async def test_stale_if_error_serves_the_stale_entry_when_the_app_fails(
    backend: RedisBackend, failure: str
) -> None:
    rule = CacheRule("/predict", ttl=0.2, stale_if_error=30)
    app, model = build(backend, rule)
    good = (await burst(app, 1))[0]
    await asyncio.sleep(0.25)
    model.fail = failure
    fallback = (await burst(app, 1))[0]
    assert fallback.status_code == 200 and fallback.content == good.content
    assert fallback.headers["x-cache"] == "STALE"
    assert "detail=stale-if-error" in fallback.headers["cache-status"]


async def test_early_refresh_renews_hot_keys_before_they_expire(backend: RedisBackend) -> None:
    rule = CacheRule("/predict", ttl=2, early_refresh=50.0)  # a large beta: refresh almost at once
    app, model = build(backend, rule)
    await burst(app, 1)
    async with client(app) as c:
        hits = [await c.get("/predict?x=1") for _ in range(5)]
        await asyncio.sleep(model.delay + 0.1)
        after = await c.get("/predict?x=1")
    assert {r.headers["x-cache"] for r in hits} == {"HIT"}
    assert model.calls == 2, "one background refresh, however many hits asked for it"
    assert after.json()["call"] == 2


@pytest.mark.parametrize(("lock", "expected_calls"), [(True, 1), (False, 2)])
async def test_lock_makes_one_computation_across_instances(lock: bool, expected_calls: int) -> None:
    shared = MemoryBackend()
    model = SlowModel()
    apps = []
    for _ in range(2):  # two instances sharing one store, as two processes share one Redis
        app = Starlette(routes=[Route("/predict", model.predict)])
        app.add_middleware(CacheMiddleware, backend=shared, rules=[CacheRule("/predict", ttl=60)], lock=lock)
        apps.append(app)
    async with client(apps[0]) as first, client(apps[1]) as second:
        responses = await asyncio.gather(*(c.get("/predict?x=1") for c in [first, second] * 10))
    assert model.calls == expected_calls
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["call"] for r in responses}) == expected_calls


def test_lock_needs_a_locking_backend() -> None:
    class PlainBackend:
        async def get(self, key: str) -> bytes | None:
            return None

        async def set(self, key: str, value: bytes, ttl: float) -> None:
            return None

        async def delete(self, keys: Any) -> int:
            return 0

        async def aclose(self) -> None:
            return None

    with pytest.raises(ValueError, match="lock=True"):
        CacheMiddleware(Starlette(), rules=[], backend=PlainBackend(), lock=True)  # type: ignore[arg-type]

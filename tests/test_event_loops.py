"""The middleware runs wherever Starlette runs: the core cases on asyncio and on trio (AnyIO)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from redis_cache_middleware import CacheMiddleware, CacheRule, MemoryBackend, RedisBackend

from .redis_server import RedisServer

LOOPS = ["asyncio", "trio"]


class Model:
    """Endpoints that count their calls; `delay` makes concurrent requests overlap."""

    def __init__(self) -> None:
        self.calls = 0
        self.delay = 0.05
        self.fail = False

    async def predict(self, request: Request) -> Response:
        self.calls += 1
        call = self.calls
        await anyio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("model crashed")
        body = (await request.body()).decode()
        return JSONResponse({"x": request.query_params.get("x"), "body": body, "call": call})

    async def stream(self, request: Request) -> Response:
        self.calls += 1

        async def parts() -> AsyncIterator[bytes]:
            for part in (b"a", b"b", b"c"):
                await anyio.sleep(0.01)
                yield part

        return StreamingResponse(parts())


def build(model: Model, *rules: CacheRule, **options: Any) -> Starlette:
    app = Starlette(
        routes=[Route("/predict", model.predict, methods=["GET", "POST"]), Route("/stream", model.stream)]
    )
    app.add_middleware(
        CacheMiddleware,
        rules=list(rules) or [CacheRule("/predict", ttl=60, methods=("GET", "POST"))],
        **({"backend": MemoryBackend()} | options),
    )
    return app


def run(loop: str, test: Callable[[], Awaitable[None]]) -> None:
    anyio.run(test, backend=loop)


def client(app: Starlette) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.mark.parametrize("loop", LOOPS)
def test_miss_then_hit_for_get_and_post(loop: str) -> None:
    model = Model()
    app = build(model)

    async def scenario() -> None:
        async with client(app) as c:
            first = await c.get("/predict?x=1")
            second = await c.get("/predict?x=1")
            posted = await c.post("/predict", json={"a": 1, "b": 2})
            reposted = await c.post(
                "/predict", content=b'{ "b": 2, "a": 1 }', headers={"content-type": "application/json"}
            )
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
        assert second.json() == first.json()
        assert (posted.headers["x-cache"], reposted.headers["x-cache"]) == ("MISS", "HIT")
        assert model.calls == 2

    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_burst_of_identical_misses_calls_the_model_once(loop: str) -> None:
    model = Model()
    app = build(model)
    responses: list[httpx.Response] = []

    async def scenario() -> None:
        async with client(app) as c, anyio.create_task_group() as group:
            for _ in range(20):
                group.start_soon(lambda: _append(responses, c.get("/predict?x=7")))

    run(loop, scenario)
    assert model.calls == 1
    assert {r.status_code for r in responses} == {200} and len(responses) == 20
    assert {r.json()["call"] for r in responses} == {1}


async def _append(into: list[httpx.Response], request: Awaitable[httpx.Response]) -> None:
    into.append(await request)


@pytest.mark.parametrize("loop", LOOPS)
def test_stale_while_revalidate_refreshes_in_the_background(loop: str) -> None:
    model = Model()
    app = build(model, CacheRule("/predict", ttl=0.2, stale_while_revalidate=30))

    async def scenario() -> None:
        async with client(app) as c:
            await c.get("/predict?x=1")
            await anyio.sleep(0.25)
            stale = await c.get("/predict?x=1")
            fresh = stale
            with anyio.fail_after(5):
                while fresh.headers["x-cache"] != "HIT":  # the refresh ends after the stale answer
                    await anyio.sleep(0.02)
                    fresh = await c.get("/predict?x=1")
        assert stale.headers["x-cache"] == "STALE" and stale.json()["call"] == 1
        assert fresh.json()["call"] == 2 and model.calls == 2

    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_stale_if_error_answers_for_a_crashed_model(loop: str) -> None:
    model = Model()
    app = build(model, CacheRule("/predict", ttl=0.1, stale_if_error=30))

    async def scenario() -> None:
        async with client(app) as c:
            good = await c.get("/predict?x=1")
            await anyio.sleep(0.15)
            model.fail = True
            fallback = await c.get("/predict?x=1")
        assert fallback.status_code == 200 and fallback.content == good.content
        assert fallback.headers["x-cache"] == "STALE"

    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_streamed_response_is_stored_and_replayed(loop: str) -> None:
    model = Model()
    app = build(model, CacheRule("/stream", ttl=60))

    async def scenario() -> None:
        async with client(app) as c:
            first = await c.get("/stream")
            second = await c.get("/stream")
        assert first.content == second.content == b"abc"
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
        assert model.calls == 1

    run(loop, scenario)


def test_an_asyncio_only_backend_under_trio_bypasses_with_one_log_line(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    model = Model()
    app = build(model, backend=RedisBackend.from_url(redis_server.url, timeout=0.5))

    async def scenario() -> None:
        async with client(app) as c:
            answers = [await c.get("/predict?x=1") for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert {a.headers["x-cache"] for a in answers} == {"BYPASS"}
        assert all("detail=event-loop" in a.headers["cache-status"] for a in answers)

    with caplog.at_level(logging.WARNING, logger="redis_cache_middleware"):
        run("trio", scenario)
    assert model.calls == 3
    warnings = [r.message for r in caplog.records if "needs asyncio" in r.message]
    assert warnings == [
        "cache backend RedisBackend needs asyncio, but the app runs on another event loop: "
        "serving without the cache"
    ]

"""What a hit leaves for the garbage collector: no reference cycles, nothing that outlives the request, and
few tracked objects while it waits for Redis.

Under load, every request waiting for Redis when a young collection runs is promoted; promoted objects
are what make the interpreter walk the whole heap (a model, numpy, FastAPI) in a full collection, the
p99 of a hit (docs/benchmarks.md, "The tail").
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from redis_cache_middleware import CacheMiddleware, CacheRule, MemoryBackend, RedisBackend
from tests.redis_server import RedisServer
from tests.support import http_scope


def make_app(backend: Any) -> ASGIApp:
    async def predict(request: Request) -> JSONResponse:
        return JSONResponse({"prediction": request.query_params.get("x", "")})

    app = Starlette(routes=[Route("/predict", predict)])
    return CacheMiddleware(app, backend=backend, rules=[CacheRule("/predict", ttl=60)], namespace="gc")


async def hit(app: ASGIApp) -> bytes:
    """One GET /predict?x=1 driven by hand (no HTTP client in the way); the body sent."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(http_scope("/predict", b"x=1"), receive, send)
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


@pytest.fixture
def collector_off() -> Iterator[None]:
    """Automatic collection off for the test, and back on after it, whatever happens."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


@pytest.mark.parametrize("kind", ["redis", "memory"])
async def test_hits_make_no_reference_cycles(
    redis_server: RedisServer, collector_off: None, kind: str
) -> None:
    backend = RedisBackend.from_url(redis_server.url, timeout=0.5) if kind == "redis" else MemoryBackend()
    app = make_app(backend)
    if kind == "redis":
        redis_server.client().flushall()
    assert await hit(app) == b'{"prediction":"1"}'  # stored
    for _ in range(20):
        await hit(app)  # everything made once (connection, caches) is made now
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds unreachable is kept here, to be looked at
    bodies = await asyncio.gather(*(hit(app) for _ in range(300)))
    gc.collect()
    garbage = [type(o).__qualname__ for o in gc.garbage]
    gc.set_debug(0)
    gc.garbage.clear()
    assert bodies == [b'{"prediction":"1"}'] * 300
    assert garbage == []  # freed by reference counting alone: no collection needed after a hit
    await backend.aclose()


async def test_hits_leave_nothing_behind(redis_server: RedisServer, collector_off: None) -> None:
    backend = RedisBackend.from_url(redis_server.url, timeout=0.5)
    app = make_app(backend)

    async def bursts(count: int) -> None:
        for _ in range(count):
            await asyncio.gather(*(hit(app) for _ in range(50)))

    await bursts(2)
    gc.collect()
    before = len(gc.get_objects())
    await bursts(20)
    gc.collect()
    assert len(gc.get_objects()) - before < 20  # 1,000 hits later: no per-request object outlived its request
    await backend.aclose()


async def tracked_per_waiting_call(
    app: ASGIApp, pause: Callable[[], None], resume: Callable[[], None]
) -> float:
    """GC-tracked objects alive per call of `app` while `pause` keeps every call waiting."""
    waiting = 200
    pause()
    try:
        gc.collect()
        before = gc.get_count()[0]
        tasks = [asyncio.ensure_future(hit(app)) for _ in range(waiting)]
        for _ in range(5):
            await asyncio.sleep(0)  # every call has started and waits
        per_call = (gc.get_count()[0] - before) / waiting
    finally:
        resume()
    await asyncio.gather(*tasks)
    return per_call


async def test_a_hit_waiting_for_redis_holds_few_tracked_objects(
    fresh_redis: RedisServer, collector_off: None
) -> None:
    """What a hit keeps alive while it waits for Redis, beyond what any app waiting on I/O keeps (the
    task, the scope, `receive` and `send`): 28 objects before issue 15 (a timer per call, closures, seven
    nested coroutines); 10 now."""
    backend = RedisBackend.from_url(fresh_redis.url, timeout=5.0)
    app = make_app(backend)
    assert await hit(app) == b'{"prediction":"1"}'
    await hit(app)
    per_hit = await tracked_per_waiting_call(app, fresh_redis.pause, fresh_redis.resume)
    await backend.aclose()

    gate = asyncio.Event()

    async def waiting_app(scope: Scope, receive: Receive, send: Send) -> None:
        await gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    baseline = await tracked_per_waiting_call(waiting_app, gate.clear, gate.set)
    assert per_hit - baseline <= 12, (per_hit, baseline)


async def run_lifespan(app: ASGIApp) -> tuple[list[str], int]:
    """The lifespan messages `app` sends through start-up and shutdown, and the objects frozen when it
    reported start-up complete."""
    incoming: list[Message] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []
    frozen = -1

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        nonlocal frozen
        sent.append(message["type"])
        if message["type"] == "lifespan.startup.complete":
            frozen = gc.get_freeze_count()

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    return sent, frozen


@pytest.mark.parametrize("switch", [True, False])
async def test_freeze_startup_heap_freezes_what_start_up_loaded(switch: bool) -> None:
    """The documented switch for tail latency: off by default; on, what the app's lifespan loaded (here a
    stand-in for a model, 50,000 tracked objects) is frozen before the first request."""
    model: dict[str, list[list[int]]] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        model["weights"] = [[i] for i in range(50_000)]
        yield

    async def predict(request: Request) -> JSONResponse:
        return JSONResponse({"prediction": request.query_params.get("x", "")})

    app = Starlette(routes=[Route("/predict", predict)], lifespan=lifespan)
    app.add_middleware(
        CacheMiddleware,
        backend=MemoryBackend(),
        rules=[CacheRule("/predict", ttl=60)],
        freeze_startup_heap=switch,
    )
    assert gc.get_freeze_count() == 0
    try:
        sent, frozen = await run_lifespan(app)
        assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
        if switch:
            assert frozen > len(model["weights"])  # the model's objects among them
        else:
            assert frozen == 0
        assert await hit(app) == b'{"prediction":"1"}'
    finally:
        gc.unfreeze()

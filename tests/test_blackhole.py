"""Issue 11 at middleware level, through a loopback proxy in front of real Redis: a black hole (twice in a
row) is served without 5xx and with bounded BYPASS answers, and hits resume within `reset_timeout + 1 s`
of the path healing; a single swallowed reply does not leave the pipelined connection out of step; a
request's Redis time is bounded by `timeout` in total, the store that finds it spent made after the
response."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Message

from redis_cache_middleware import CacheMiddleware, CacheRule, CircuitBreaker

from .netproxy import NetProxy
from .redis_server import RedisServer
from .support import client_for, http_scope

TIMEOUT = 0.1
CONNECT_TIMEOUT = 0.3  # a probe can give up (at TIMEOUT) while its connection is still opening
RESET_TIMEOUT = 0.5
COMPUTE = 0.02
# What a loaded 2-core machine may add on top of a bound; far below the hangs these tests guard against.
SLACK = 2.0
PASSWORD = "s3cret"


def body_for(x: str) -> str:
    return f"answer for {x}"


def slow_app(compute: float, during_compute: Callable[[], None] = lambda: None) -> Starlette:
    """`/work?x=...` takes `compute` s (calling `during_compute` first), then answers for `x`."""

    async def work(request: Request) -> Response:
        during_compute()
        await asyncio.sleep(compute)
        return PlainTextResponse(body_for(request.query_params["x"]))

    return Starlette(routes=[Route("/work", work)])


def cached(app: Starlette, proxy: NetProxy, timeout: float = TIMEOUT) -> CacheMiddleware:
    return CacheMiddleware(
        app,
        redis_url=proxy.url_with(f":{PASSWORD}@"),
        rules=[CacheRule("/work", ttl=60)],
        namespace="blackhole",
        timeout=timeout,
        connect_timeout=CONNECT_TIMEOUT,
        breaker=CircuitBreaker(failure_threshold=2, reset_timeout=RESET_TIMEOUT),
    )


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A password-protected Redis: opening a connection takes a reply (AUTH), which a black hole keeps."""
    server = RedisServer(tmp_path_factory.mktemp("secured"), password=PASSWORD).start()
    yield server
    server.kill()


@pytest.fixture
def redis_client(secured: RedisServer) -> Iterator[redis.Redis]:
    client = secured.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
async def proxy(secured: RedisServer, redis_client: redis.Redis) -> AsyncIterator[NetProxy]:
    """A proxy in front of the emptied password-protected Redis."""
    proxy = await NetProxy(secured.port).start()
    yield proxy
    await proxy.aclose()


async def get(client: httpx.AsyncClient, x: str) -> tuple[str, float]:
    """X-Cache of `/work?x=...` and the client-observed seconds; asserts a 200 with `x`'s own body."""
    started = time.perf_counter()
    response = await client.get("/work", params={"x": x})
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    assert response.text == body_for(x)
    return response.headers["x-cache"], elapsed


async def first_hit_within(client: httpx.AsyncClient, x: str, bound: float) -> float:
    """Seconds until a request for `x` is a HIT; fails after `bound` s (the cache never recovered)."""
    started = time.monotonic()
    while (cache := (await get(client, x))[0]) != "HIT":
        assert time.monotonic() - started < bound, f"still {cache} {bound:.1f} s after the path healed"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


@pytest.mark.parametrize("where", ["connected", "opening"])
async def test_hits_resume_within_reset_timeout_after_each_of_two_black_holes(
    proxy: NetProxy, where: str
) -> None:
    """Issue 11, defect 1: a probe that was never answered (above all one whose connection was still
    opening) used to keep the breaker half-open for good. "connected": the open connections' traffic is
    swallowed; "opening": they are reset too, so every new connection's AUTH goes unanswered."""
    middleware = cached(slow_app(COMPUTE), proxy)
    async with client_for(middleware) as client:
        try:
            await get(client, "hot")
            await first_hit_within(client, "hot", SLACK)
            for round_ in range(2):
                proxy.up = proxy.down = "swallow"
                if where == "opening":
                    proxy.reset_all()
                hole_began = time.monotonic()
                served = 0
                while time.monotonic() - hole_began < 3 * RESET_TIMEOUT:  # the probes meet the hole too
                    for x in ("hot", f"new-{round_}-{served}"):
                        cache, elapsed = await get(client, x)
                        assert cache == "BYPASS"
                        assert elapsed < 10 * TIMEOUT + COMPUTE + SLACK / 4, f"{elapsed:.2f} s"
                        served += 1
                assert proxy.swallowed > 0
                together = await asyncio.gather(*(get(client, f"burst-{round_}-{i}") for i in range(8)))
                assert all(elapsed < 10 * TIMEOUT + COMPUTE + SLACK / 4 for _, elapsed in together)
                proxy.heal()
                await first_hit_within(client, "hot", RESET_TIMEOUT + 1 + SLACK)
                assert middleware.cache.breaker.state == "closed"
        finally:
            await middleware.aclose()


async def test_a_single_swallowed_reply_leaves_the_cache_serving_hits(proxy: NetProxy) -> None:
    """Issue 11, defect 2: with one reply lost on the pipelined connection, every later reply used to go
    to an earlier caller; the embedded key check turned them into misses, for good."""
    heal_once: list[bool] = []

    def heal_during_compute() -> None:  # the lookup's reply was swallowed; its successors get through
        if proxy.down == "swallow":
            heal_once.append(True)
            proxy.heal()

    middleware = cached(slow_app(COMPUTE, heal_during_compute), proxy)
    inputs = [f"item-{i}" for i in range(10)]
    async with client_for(middleware) as client:
        try:
            for x in inputs:
                await get(client, x)
            for x in inputs:
                await first_hit_within(client, x, SLACK)
            proxy.down = "swallow"
            cache, _ = await get(client, "lost-reply")
            assert cache == "BYPASS" and heal_once == [True]
            await first_hit_within(client, inputs[0], RESET_TIMEOUT + 1 + SLACK)
            for _ in range(3):
                results = await asyncio.gather(*(get(client, x) for x in inputs))
                assert [cache for cache, _ in results] == ["HIT"] * len(inputs)
        finally:
            await middleware.aclose()


def entry_count(middleware: CacheMiddleware, redis_client: redis.Redis) -> int:
    keys = redis_client.scan_iter(match=middleware.cache.keys.entries_glob(), count=1000)
    return sum(not key.endswith(b".lock") for key in keys)


async def test_a_miss_waits_on_redis_at_most_timeout_in_total_and_is_stored_after_the_response(
    proxy: NetProxy, redis_client: redis.Redis
) -> None:
    """Issue 11, defect 10: each command had its own `timeout`, so a miss on a slow Redis waited for the
    lookup and then for the store. With every reply 0.9 s late and `timeout` 1 s, the lookup fits the
    budget and the store does not: the response goes out about `timeout` after the request came in (plus
    the app's time), and the store is made after it. The ASGI app is driven by hand to time the moment the
    response's last body message is sent, as a server would send it."""
    timeout, delay, compute = 1.0, 0.9, 0.05
    middleware = cached(slow_app(compute), proxy, timeout=timeout)
    async with client_for(middleware) as client:
        await get(client, "warm-up")  # the pipelined connection is open before replies are delayed
        await first_hit_within(client, "warm-up", SLACK)
    stored_before = entry_count(middleware, redis_client)
    sent: list[Message] = []
    answered = asyncio.Event()
    finished = asyncio.Event()

    async def receive() -> Message:
        if not sent and not answered.is_set():
            return {"type": "http.request", "body": b"", "more_body": False}
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            answered.set()
            proxy.heal()  # from now on only the store after the response meets Redis

    try:
        proxy.delay, proxy.down = delay, "delay"
        started = time.perf_counter()
        call = asyncio.ensure_future(middleware(http_scope("/work", b"x=slow"), receive, send))
        await asyncio.wait_for(answered.wait(), timeout=2 * delay + compute + SLACK)
        waited_on_redis = time.perf_counter() - started - compute
        headers = dict(sent[0]["headers"])
        assert sent[0]["status"] == 200 and headers[b"x-cache"] == b"MISS"
        assert b"".join(m.get("body", b"") for m in sent[1:]) == body_for("slow").encode()
        # the lookup took `delay`; without a per-request budget the store would add another `delay`
        assert delay <= waited_on_redis < timeout + 0.4, f"{waited_on_redis:.2f} s"
        started = time.monotonic()
        while entry_count(middleware, redis_client) == stored_before:  # the write made after the response
            assert time.monotonic() - started < timeout + SLACK, "the entry was never stored"
            await asyncio.sleep(0.05)
        finished.set()
        await asyncio.wait_for(call, timeout=timeout + SLACK)
        async with client_for(middleware) as client:
            assert (await get(client, "slow"))[0] == "HIT"
    finally:
        finished.set()
        await middleware.aclose()

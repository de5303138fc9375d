"""Fail open against real faults: Redis killed, paused, evicting, cut mid-reply, or answering errors."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from redis_cache_middleware import BackendError, CacheMiddleware, CacheRule, CircuitBreaker, RedisBackend

from .redis_server import RedisServer, free_port
from .support import client_for

TIMEOUT = 0.05
BYPASS_BOUND = 0.5


def body_for(x: str, size: int) -> str:
    """What the app answers for input `x`: the input itself, then `size` bytes derived from it."""
    seed = hashlib.sha256(x.encode()).hexdigest()
    return f"x={x};" + (seed * (size // len(seed) + 1))[:size]


def echo_app() -> Starlette:
    async def work(request: Request) -> Response:
        x = request.query_params["x"]
        return PlainTextResponse(body_for(x, int(request.query_params.get("size", "64"))))

    return Starlette(routes=[Route("/work", work)])


def cached(backend: RedisBackend, *, reset_timeout: float = 0.2) -> CacheMiddleware:
    return CacheMiddleware(
        echo_app(),
        backend=backend,
        rules=[CacheRule("/work", ttl=60)],
        namespace="resilience",
        breaker=CircuitBreaker(failure_threshold=5, reset_timeout=reset_timeout),
    )


class Outcome:
    """One request's result: the input it asked for, status, X-Cache, body check and latency."""

    def __init__(self, x: str, size: int, response: httpx.Response, seconds: float) -> None:
        self.x = x
        self.status = response.status_code
        self.cache = response.headers.get("x-cache")
        self.detail = response.headers.get("cache-status", "")
        self.correct = response.text == body_for(x, size)
        self.seconds = seconds


async def fetch(client: httpx.AsyncClient, x: str, size: int = 64) -> Outcome:
    started = time.perf_counter()
    response = await client.get("/work", params={"x": x, "size": size})
    return Outcome(x, size, response, time.perf_counter() - started)


async def wave(client: httpx.AsyncClient, inputs: list[str], size: int = 64) -> list[Outcome]:
    """All of `inputs` requested at once."""
    return list(await asyncio.gather(*(fetch(client, x, size) for x in inputs)))


def assert_served(outcomes: list[Outcome]) -> None:
    """No 5xx, and every body is the answer to its own request's input."""
    assert [o.status for o in outcomes if o.status != 200] == []
    assert [o.x for o in outcomes if not o.correct] == []


async def until_hit(client: httpx.AsyncClient, x: str, within: float) -> None:
    """Ask for `x` every 20 ms until it is a HIT; fails after `within` s."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        outcome = await fetch(client, x)
        assert_served([outcome])
        if outcome.cache == "HIT":
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no HIT for {x!r} within {within} s")


@contextlib.contextmanager
def paused(server: RedisServer) -> Iterator[None]:
    server.pause()
    try:
        yield
    finally:
        server.resume()


async def test_redis_killed_under_load_then_restarted(fresh_redis: RedisServer) -> None:
    backend = RedisBackend.from_url(fresh_redis.url, timeout=TIMEOUT)
    cache = cached(backend)
    inputs = [f"input-{i % 40}" for i in range(200)]
    async with client_for(cache) as client:
        await fetch(client, "connect")  # the pipelined connection opens before the burst, as at startup
        assert_served(await wave(client, inputs))
        warm = await wave(client, inputs)
        assert_served(warm)
        assert {o.cache for o in warm} == {"HIT"}

        fresh_redis.kill()
        down = await wave(client, random.sample(inputs, len(inputs)))
        assert_served(down)
        assert {o.cache for o in down} == {"BYPASS"}
        assert max(o.seconds for o in down) < BYPASS_BOUND
        assert cache.stats()["breaker"]["state"] == "open"  # type: ignore[index]

        fresh_redis.start()
        await until_hit(client, "input-0", within=2.0)
        after = await wave(client, inputs)
        assert_served(after)
        assert cache.stats()["breaker"]["state"] == "closed"  # type: ignore[index]
    await backend.aclose()


async def test_paused_redis_bypasses_within_the_timeout_and_the_breaker_opens_then_closes(
    fresh_redis: RedisServer,
) -> None:
    backend = RedisBackend.from_url(fresh_redis.url, timeout=TIMEOUT)
    cache = cached(backend)
    async with client_for(cache) as client:
        await fetch(client, "a")
        with paused(fresh_redis):
            sequential = [await fetch(client, "a") for _ in range(7)]
            state_while_paused = cache.stats()["breaker"]["state"]  # type: ignore[index]
            concurrent = await wave(client, [f"c{i}" for i in range(50)])
        assert_served(sequential + concurrent)
        assert {o.cache for o in sequential + concurrent} == {"BYPASS"}
        assert [o.detail.rpartition("detail=")[2] for o in sequential] == ["backend-error"] * 5 + [
            "circuit-open"
        ] * 2
        assert max(o.seconds for o in sequential + concurrent) < BYPASS_BOUND
        assert state_while_paused == "open"

        await until_hit(client, "a", within=2.0)
        assert cache.stats()["breaker"]["state"] == "closed"  # type: ignore[index]
    await backend.aclose()


@pytest.mark.parametrize("stall", ["sigstop", "debug-sleep"])
async def test_a_timed_out_command_never_leaves_its_reply_for_the_next_one(
    tmp_path: Path, stall: str
) -> None:
    server = RedisServer(tmp_path, "--enable-debug-command", "yes").start()
    values = {f"k{i}": f"value-{i}".encode() for i in range(8)}
    with server.client() as sync_client:
        sync_client.mset(values)
    backend = RedisBackend.from_url(server.url, timeout=TIMEOUT, max_connections=1)
    try:
        assert await backend.get("k0") == values["k0"]
        for late, next_key in (("k1", "k2"), ("k3", "k4"), ("k5", "k6")):
            if stall == "sigstop":
                with paused(server), pytest.raises(BackendError):
                    await backend.get(late)
            else:
                sleeper = asyncio.create_task(asyncio.to_thread(_debug_sleep, server, 0.2))
                await asyncio.sleep(0.05)
                with pytest.raises(BackendError):
                    await backend.get(late)
                await sleeper
            await asyncio.sleep(0.05)
            assert await backend.get(next_key) == values[next_key]
            assert await backend.get("k7") == values["k7"]
    finally:
        await backend.aclose()
        server.kill()


def _debug_sleep(server: RedisServer, seconds: float) -> None:
    with server.client() as client:
        client.execute_command("DEBUG", "SLEEP", seconds)


async def test_eviction_at_maxmemory_never_serves_a_wrong_body(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, "--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru").start()
    backend = RedisBackend.from_url(server.url, timeout=0.5)
    cache = cached(backend)
    inputs = [f"big-{i}" for i in range(300)]
    shuffled = random.Random(1).sample(inputs, len(inputs))
    first: list[Outcome] = []
    again: list[Outcome] = []
    try:
        async with client_for(cache) as client:
            for start in range(0, len(inputs), 10):
                first += await wave(client, inputs[start : start + 10], size=16_000)
                again += await wave(client, shuffled[start : start + 10], size=16_000)
        with server.client() as sync_client:
            evicted = sync_client.info("stats")["evicted_keys"]
    finally:
        await backend.aclose()
        server.kill()
    assert_served(first + again)
    assert evicted > 0
    assert {o.cache for o in again} == {"HIT", "MISS"}
    assert cache.stats()["breaker"]["total_failures"] == 0  # type: ignore[index]


class CuttingProxy:
    """A TCP proxy to Redis; while `cut_after` is set, it resets any connection that has relayed that many
    bytes of replies, in the middle of the reply that crosses the mark."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.cut_after: int | None = None
        self.cuts = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        pair = (writer, upstream_writer)
        self._writers.update(pair)
        pumps = [
            asyncio.create_task(self._pump(reader, upstream_writer, replies=False)),
            asyncio.create_task(self._pump(upstream_reader, writer, replies=True)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            for w in pair:
                w.transport.abort()
                self._writers.discard(w)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, replies: bool) -> None:
        relayed = 0
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                limit = self.cut_after if replies else None
                if limit is not None and relayed + len(data) > limit:
                    sink.write(data[: max(0, limit - relayed)])
                    await sink.drain()
                    self.cuts += 1
                    return
                sink.write(data)
                await sink.drain()
                relayed += len(data)

    async def aclose(self) -> None:
        for w in list(self._writers):
            w.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def proxy(fresh_redis: RedisServer) -> AsyncIterator[CuttingProxy]:
    proxy = await CuttingProxy(fresh_redis.port).start()
    yield proxy
    await proxy.aclose()


async def test_connection_reset_mid_reply_is_a_bypass_and_the_next_request_hits(
    proxy: CuttingProxy,
) -> None:
    backend = RedisBackend.from_url(proxy.url, timeout=0.5)
    cache = cached(backend)
    async with client_for(cache) as client:
        await fetch(client, "large", size=50_000)
        assert (await fetch(client, "large", size=50_000)).cache == "HIT"
        proxy.cut_after = 2_000
        cut = [await fetch(client, "large", size=50_000) for _ in range(3)]
        proxy.cut_after = None
        healed = await fetch(client, "large", size=50_000)
    assert proxy.cuts >= 3
    assert_served([*cut, healed])
    assert {o.cache for o in cut} == {"BYPASS"}
    assert healed.cache == "HIT"
    await backend.aclose()


async def test_connections_killed_by_the_server_are_replaced_without_a_failed_request(
    fresh_redis: RedisServer,
) -> None:
    backend = RedisBackend.from_url(fresh_redis.url, timeout=TIMEOUT)
    cache = cached(backend)
    inputs = [f"k{i}" for i in range(20)]
    async with client_for(cache) as client:
        await wave(client, inputs)
        with fresh_redis.client() as admin:
            killed = admin.client_kill_filter(_type="normal", skipme=True)
        await asyncio.sleep(0.05)
        after = await wave(client, inputs)
    assert killed >= 1
    assert_served(after)
    assert {o.cache for o in after} == {"HIT"}
    await backend.aclose()


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("--maxmemory", "1", "--maxmemory-policy", "noeviction"), "OOM"),
        (("--replicaof", "127.0.0.1", "{dead_port}"), "READONLY"),
    ],
    ids=["oom", "readonly"],
)
async def test_error_replies_serve_from_the_app_and_drop_the_write(
    tmp_path: Path, args: tuple[str, ...], error: str
) -> None:
    dead_port = str(free_port())
    server = RedisServer(tmp_path, *(a.format(dead_port=dead_port) for a in args)).start()
    backend = RedisBackend.from_url(server.url, timeout=0.5)
    try:
        with pytest.raises(BackendError, match=error):
            await backend.set("probe", b"value", 60)
        cache = cached(backend)
        async with client_for(cache) as client:
            outcomes = [await fetch(client, x) for x in ("a", "a", "b", "a")]
            outcomes += await wave(client, ["a", "b"] * 20)
        with server.client() as sync_client:
            assert sync_client.dbsize() == 0
    finally:
        await backend.aclose()
        server.kill()
    assert_served(outcomes)
    assert {o.cache for o in outcomes} <= {"MISS", "BYPASS"}


async def test_an_outage_logs_one_warning_and_one_recovery_line(
    fresh_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    backend = RedisBackend.from_url(fresh_redis.url, timeout=TIMEOUT)
    cache = cached(backend)
    caplog.set_level(logging.DEBUG, logger="redis_cache_middleware")
    caplog.set_level(logging.INFO)
    async with client_for(cache) as client:
        await fetch(client, "a")
        fresh_redis.kill()
        for _ in range(3):
            assert_served(await wave(client, [f"x{i}" for i in range(30)]))
            await asyncio.sleep(0.25)
        fresh_redis.start()
        await until_hit(client, "a", within=2.0)
        assert_served(await wave(client, [f"x{i}" for i in range(30)]))
    records = [
        (r.name, r.levelno)
        for r in caplog.records
        if r.levelno >= logging.INFO
        and not r.name.startswith(("httpx", "httpcore"))
        and getattr(r, "event", None) != "redis_memory"  # the start-up check: once, apart
    ]
    assert records == [
        ("redis_cache_middleware.breaker", logging.WARNING),
        ("redis_cache_middleware.breaker", logging.INFO),
    ]
    await backend.aclose()


async def test_max_connections_bounds_sockets_and_extra_requests_wait_their_turn(
    fresh_redis: RedisServer,
) -> None:
    backend = RedisBackend.from_url(fresh_redis.url, timeout=0.5, max_connections=4)
    cache = cached(backend)
    inputs = [f"k{i % 50}" for i in range(300)]
    with fresh_redis.client() as admin:
        async with client_for(cache) as client:
            await wave(client, inputs)
            outcomes = await wave(client, inputs)
        clients = admin.client_list(_type="normal")
    assert_served(outcomes)
    assert {o.cache for o in outcomes} == {"HIT"}
    assert len(clients) - 1 <= 4 + 1  # the pool, plus the one pipelined connection every GET shares
    await backend.aclose()


@contextlib.contextmanager
def unresponsive_port() -> Iterator[int]:
    """A port whose accept queue is full: a TCP connect to it hangs until the client gives up."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        filler = socket.create_connection(("127.0.0.1", port), timeout=1)
        try:
            yield port
        finally:
            filler.close()


@pytest.mark.parametrize(("connect_timeout", "low", "high"), [(None, 0.0, 0.2), (0.3, 0.25, 0.6)])
async def test_connect_timeout_bounds_opening_a_connection(
    connect_timeout: float | None, low: float, high: float
) -> None:
    with unresponsive_port() as port:
        backend = RedisBackend.from_url(
            f"redis://127.0.0.1:{port}/0", timeout=TIMEOUT, connect_timeout=connect_timeout
        )
        started = time.perf_counter()
        with pytest.raises(BackendError):
            await backend.get("k")
        elapsed = time.perf_counter() - started
        await backend.aclose()
    assert low <= elapsed < high


async def test_a_long_connect_timeout_does_not_lengthen_command_timeouts(fresh_redis: RedisServer) -> None:
    backend = RedisBackend.from_url(fresh_redis.url, timeout=TIMEOUT, connect_timeout=2.0)
    await backend.set("k", b"v", 60)
    with paused(fresh_redis):
        started = time.perf_counter()
        with pytest.raises(BackendError):
            await backend.get("k")
        elapsed = time.perf_counter() - started
    assert elapsed < 0.3
    assert await backend.get("k") == b"v"
    await backend.aclose()


@pytest.mark.parametrize("backend_timeout", [0.0, -1.0])
def test_timeouts_must_be_positive(backend_timeout: float) -> None:
    with pytest.raises(ValueError):
        RedisBackend.from_url("redis://127.0.0.1:1/0", timeout=backend_timeout)
    with pytest.raises(ValueError):
        RedisBackend.from_url("redis://127.0.0.1:1/0", connect_timeout=backend_timeout)

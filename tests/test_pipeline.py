"""The pipelined GET connection: in step under timeouts, authenticated, any db, unix sockets, reconnects."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import uvloop

from redis_cache_middleware import BackendError, RedisBackend
from redis_cache_middleware.backends.pipeline import Pipeline

from .netproxy import NetProxy
from .redis_server import RedisServer


async def test_concurrent_gets_share_one_connection_and_each_gets_its_own_value(
    redis_server: RedisServer,
) -> None:
    backend = RedisBackend.from_url(redis_server.url, timeout=0.5)
    for i in range(50):
        await backend.set(f"pipe:{i}", str(i).encode(), 60)
    clients_before = len(redis_server.client().client_list(_type="normal"))
    values = await asyncio.gather(*(backend.get(f"pipe:{i % 50}") for i in range(500)))
    assert values == [str(i % 50).encode() for i in range(500)]
    assert await backend.get("pipe:absent") is None
    assert len(redis_server.client().client_list(_type="normal")) <= clients_before + 1
    await backend.aclose()


async def test_timed_out_gets_leave_the_connection_in_step(fresh_redis: RedisServer) -> None:
    backend = RedisBackend.from_url(fresh_redis.url, timeout=0.05)
    await backend.set("a", b"value-a", 60)
    await backend.set("b", b"value-b", 60)
    assert await backend.get("a") == b"value-a"
    fresh_redis.pause()
    try:
        with pytest.raises(BackendError, match="GET failed"):
            await backend.get("a")
    finally:
        fresh_redis.resume()
    # the late reply to the timed-out GET of "a" arrives first; it must not be taken for "b"
    assert await backend.get("b") == b"value-b"
    assert await backend.get("a") == b"value-a"
    await backend.aclose()


async def test_password_and_database_from_the_url(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "auth", password="s3cret").start()
    try:
        url = f"redis://:s3cret@127.0.0.1:{server.port}/3"
        backend = RedisBackend.from_url(url, timeout=0.5)
        await backend.set("k", b"in-db-3", 60)
        assert await backend.get("k") == b"in-db-3"
        wrong = RedisBackend.from_url(f"redis://:wrong@127.0.0.1:{server.port}/3", timeout=0.5)
        with pytest.raises(BackendError):
            await wrong.get("k")
        await backend.aclose()
        await wrong.aclose()
    finally:
        server.kill()


async def test_unix_socket(tmp_path: Path) -> None:
    socket_path = tmp_path / "redis.sock"
    server = RedisServer(tmp_path / "unix", "--unixsocket", str(socket_path)).start()
    try:
        backend = RedisBackend.from_url(f"unix://{socket_path}?db=1", timeout=0.5)
        await backend.set("k", b"over-unix", 60)
        assert await backend.get("k") == b"over-unix"
        await backend.aclose()
    finally:
        server.kill()


async def test_reconnects_after_redis_restarts(fresh_redis: RedisServer) -> None:
    backend = RedisBackend.from_url(fresh_redis.url, timeout=0.2)
    await backend.set("k", b"v", 60)
    assert await backend.get("k") == b"v"
    fresh_redis.kill()
    with pytest.raises(BackendError):
        await backend.get("k")
    fresh_redis.start()
    assert await backend.get("k") is None  # a new, empty server; the connection was re-opened
    await backend.set("k", b"again", 60)
    assert await backend.get("k") == b"again"
    await backend.aclose()


def test_only_plain_single_node_urls_get_a_pipeline() -> None:
    assert Pipeline.from_url("redis://127.0.0.1:6379/0") is not None
    assert Pipeline.from_url("unix:///tmp/redis.sock") is not None
    assert Pipeline.from_url("rediss://127.0.0.1:6379/0") is None
    assert Pipeline.from_url("redis://127.0.0.1:6379/0?ssl_cert_reqs=none") is None


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_stalled_event_loop_is_not_taken_for_a_slow_redis(redis_server: RedisServer, loop: str) -> None:
    """A long garbage collection or blocking call delays the timer and the reply alike: the reply that
    arrived in time is read, not thrown away as a timeout that would open the circuit breaker. Under
    both asyncio and uvloop (uvicorn's loop when installed)."""

    async def scenario() -> list[bytes | None]:
        backend = RedisBackend.from_url(redis_server.url, timeout=0.02)
        await backend.set("stall", b"still-here", 60)
        assert await backend.get("stall") == b"still-here"

        gets = [asyncio.ensure_future(backend.get("stall")) for _ in range(20)]
        await asyncio.sleep(0)  # the GETs are written in this turn of the loop...
        time.sleep(0.1)  # noqa: ASYNC251 -- ...and the loop blocks before it can read a reply
        values = await asyncio.gather(*gets)
        await backend.aclose()
        return values

    values = uvloop.run(scenario()) if loop == "uvloop" else asyncio.run(scenario())
    assert values == [b"still-here"] * 20


async def test_redis_that_really_does_not_answer_still_times_out(fresh_redis: RedisServer) -> None:
    backend = RedisBackend.from_url(fresh_redis.url, timeout=0.05)
    await backend.get("warm")
    fresh_redis.pause()
    try:
        started = time.perf_counter()
        with pytest.raises(BackendError, match=r"no reply within 0\.05"):
            await backend.get("k")
        assert time.perf_counter() - started < 0.5
    finally:
        fresh_redis.resume()
    await backend.aclose()


async def test_a_swallowed_reply_drops_the_connection_and_the_next_call_opens_a_fresh_one(
    redis_server: RedisServer,
) -> None:
    """Issue 11, defect 2: a reply lost on the path (then the path heals) used to leave every later reply
    matched to an earlier caller, for good."""
    proxy = await NetProxy(redis_server.port).start()
    backend = RedisBackend.from_url(proxy.url, timeout=0.2)
    try:
        keys = [f"swallow:{i}" for i in range(20)]
        await backend.set_many([(key, key.encode(), 60) for key in keys])
        assert await backend.get(keys[0]) == keys[0].encode()
        proxy.down = "swallow"
        lost = [asyncio.ensure_future(backend.get(key)) for key in keys[:5]]
        results = await asyncio.gather(*lost, return_exceptions=True)
        assert all(isinstance(r, BackendError) for r in results), results
        assert proxy.swallowed > 0
        proxy.heal()
        healed_at = time.monotonic()
        while True:  # the first call after healing may still meet the old connection's end
            try:
                value = await backend.get(keys[1])
                break
            except BackendError:
                assert time.monotonic() - healed_at < 0.2 + 1.0
        assert value == keys[1].encode()
        for _ in range(3):
            values = await asyncio.gather(*(backend.get(key) for key in keys), return_exceptions=True)
            assert values == [key.encode() for key in keys]
        assert await backend.get_many(keys[::-1]) == [key.encode() for key in keys[::-1]]
    finally:
        await backend.aclose()
        await proxy.aclose()


async def test_callers_behind_an_overdue_reply_fail_at_once_instead_of_taking_the_wrong_reply(
    redis_server: RedisServer,
) -> None:
    proxy = await NetProxy(redis_server.port).start()
    backend = RedisBackend.from_url(proxy.url, timeout=0.2)
    try:
        await backend.set_many([("first", b"first-value", 60), ("second", b"second-value", 60)])
        await backend.get("first")
        proxy.down = "swallow"
        first = asyncio.ensure_future(backend.get("first"))
        await asyncio.sleep(0.1)
        second = asyncio.ensure_future(backend.get("second"))  # its deadline is 0.1 s after first's
        with pytest.raises(BackendError, match="no reply within"):
            await first
        proxy.heal()
        with pytest.raises(BackendError, match="overdue"):
            await second  # failed with the connection, at first's deadline
        assert await backend.get("second") == b"second-value"
    finally:
        await backend.aclose()
        await proxy.aclose()

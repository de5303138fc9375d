"""TieredBackend: L1 hits without Redis, L1 copies that never outlive Redis, invalidation across processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from redis_cache_middleware import BackendError, RedisBackend
from redis_cache_middleware.backends import LockingBackend
from redis_cache_middleware.backends.tiered import TieredBackend

from .apps import cached_app
from .redis_server import RedisServer
from .support import client_for

# Long enough that, within a test, only an invalidation (never the L1 cap) can explain a fresh value.
LONG_L1_TTL = 30.0
INVALIDATION_BOUND = 1.0
# Commands run from a script are counted too, so a script call shows up as evalsha + what it ran.
DATA_COMMANDS = ("get", "set", "evalsha", "eval", "unlink", "pttl")


def tiered(url: str, **options: Any) -> TieredBackend:
    options.setdefault("l1_max_ttl", LONG_L1_TTL)
    options.setdefault("heartbeat", 0.2)
    return TieredBackend(RedisBackend.from_url(url, timeout=0.5), **options)


async def subscribed(*backends: TieredBackend, within: float = 3.0) -> None:
    """Start each backend's subscriber (as first use does) and wait until its subscription is confirmed."""
    deadline = time.monotonic() + within
    while not all(b.subscribed for b in backends):
        assert time.monotonic() < deadline, "subscription not confirmed"
        for backend in backends:
            with contextlib.suppress(BackendError):  # a client reconnecting after a restart
                await backend.get("rcm-test:warm-up")
        await asyncio.sleep(0.01)


async def until(condition: Callable[[], object], within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.002)


async def eventually(read: Callable[[], Awaitable[bytes | None]], expected: bytes | None) -> float:
    """Seconds until `read()` returns `expected`; fails after INVALIDATION_BOUND."""
    started = time.monotonic()
    while (value := await read()) != expected:
        assert time.monotonic() - started < INVALIDATION_BOUND, f"still {value!r}, expected {expected!r}"
        await asyncio.sleep(0.002)
    return time.monotonic() - started


def data_commands(client: redis.Redis, names: tuple[str, ...] = DATA_COMMANDS) -> int:
    """Data commands Redis has run since the last CONFIG RESETSTAT (pub/sub PINGs and INFO excluded)."""
    stats: dict[str, dict[str, int]] = client.info("commandstats")
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in names)


def round_trips(client: redis.Redis) -> int:
    """Commands sent by clients (script calls count once, whatever they run inside; the tests send no
    plain GET or PTTL)."""
    stats: dict[str, dict[str, int]] = client.info("commandstats")
    inside_scripts = ("get", "pttl")
    return data_commands(client) - sum(stats.get(f"cmdstat_{n}", {}).get("calls", 0) for n in inside_scripts)


@pytest.fixture
async def pair(
    redis_server: RedisServer, redis_client: redis.Redis
) -> AsyncIterator[tuple[TieredBackend, ...]]:
    """Two backends on separate clients: two processes as far as Redis and the L1s are concerned."""
    a, b = tiered(redis_server.url), tiered(redis_server.url)
    await subscribed(a, b)
    yield a, b
    await a.aclose()
    await b.aclose()


async def test_l1_hit_makes_no_redis_call(pair: tuple[TieredBackend, ...], redis_client: redis.Redis) -> None:
    a, b = pair
    await a.set("k", b"v1", 60)
    await until(lambda: a.stats()["invalidations"])  # a hears its own write too: it has no copy to drop
    redis_client.config_resetstat()
    assert await a.get("k") == b"v1", "a write does not fill L1: the first read does"
    assert round_trips(redis_client) == 1, "an L2 read is one script call: GET and PTTL together"
    assert data_commands(redis_client, ("get", "pttl")) == 2
    assert [await a.get("k") for _ in range(50)] == [b"v1"] * 50
    assert data_commands(redis_client) == 3
    assert a.stats()["l1_hits"] == 50

    assert await b.get("k") == b"v1"
    assert [await b.get("k") for _ in range(10)] == [b"v1"] * 10
    assert data_commands(redis_client) == 6
    assert redis_client.get("k") == b"v1"


async def test_replace_and_delete_reach_the_other_process(
    pair: tuple[TieredBackend, ...], redis_client: redis.Redis
) -> None:
    a, b = pair
    await a.set("k", b"v1", 60)
    assert await a.get("k") == b"v1"
    assert await b.get("k") == b"v1"  # both now hold v1 in L1, for up to LONG_L1_TTL
    await b.set("k", b"v2", 60)
    assert await b.get("k") == b"v2", "a writer reads its own write at once"
    await eventually(lambda: a.get("k"), b"v2")
    assert await a.delete(["k"]) == 1
    assert await a.get("k") is None
    await eventually(lambda: b.get("k"), None)
    assert redis_client.exists("k") == 0
    assert cast(int, a.stats()["invalidations"]) >= 1 and cast(int, b.stats()["invalidations"]) >= 1


async def test_l1_copy_expires_with_the_redis_key(
    pair: tuple[TieredBackend, ...], redis_client: redis.Redis
) -> None:
    a, b = pair
    await a.set("short", b"x", 0.4)
    await asyncio.sleep(0.2)
    assert await b.get("short") == b"x"  # b's L1 copy gets the remaining ~0.2 s, not LONG_L1_TTL
    redis_client.config_resetstat()
    assert await b.get("short") == b"x"
    assert data_commands(redis_client) == 0
    await until(lambda: not redis_client.exists("short"))
    assert await a.get("short") is None
    assert await b.get("short") is None
    # A key written by someone else with its own expiry: same rule.
    redis_client.set("other", b"y", px=300)
    assert await b.get("other") == b"y"
    await until(lambda: not redis_client.exists("other"))
    assert await b.get("other") is None


async def test_l1_max_ttl_bounds_staleness_when_invalidations_are_lost(
    redis_server: RedisServer, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = tiered(redis_server.url, l1_max_ttl=0.3)
    try:
        await subscribed(backend)
        redis_client.set("k", b"old")  # no expiry in Redis: the L1 copy is capped by l1_max_ttl
        await until(lambda: backend.stats()["invalidations"])
        assert await backend.get("k") == b"old"

        async def lost(keys: list[str] | None) -> None:
            pass

        monkeypatch.setattr(backend, "invalidated", lost)  # the connection stays up, the messages vanish
        redis_client.set("k", b"new")
        assert await backend.get("k") == b"old"
        waited = await eventually(lambda: backend.get("k"), b"new")
        assert 0.15 < waited < 0.35
    finally:
        await backend.aclose()


async def test_a_reply_overlapping_an_invalidation_does_not_fill_l1(
    pair: tuple[TieredBackend, ...], redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = pair
    await a.set("k", b"v1", 60)
    real_script = b._get_script
    replied, release = asyncio.Event(), asyncio.Event()

    async def slow_reply(client: Any, keys: Any, args: Any) -> Any:
        reply = await real_script(client, keys, args)
        replied.set()
        await release.wait()
        return reply

    monkeypatch.setattr(b, "_get_script", slow_reply)
    read = asyncio.create_task(b.get("k"))
    await replied.wait()  # b has read v1 from Redis but not yet stored it in L1
    await a.set("k", b"v2", 60)
    await until(lambda: b.stats()["invalidations"])
    release.set()
    assert await read == b"v1"
    monkeypatch.setattr(b, "_get_script", real_script)
    assert await b.get("k") == b"v2", "the late v1 reply must not have been kept in L1"


async def test_two_real_processes(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """A second Python process reads in a loop from its L1; this one replaces and deletes the key."""
    reader = tmp_path / "reader.py"
    reader.write_text(
        f"""
import asyncio, json, sys, time
from redis_cache_middleware import RedisBackend
from redis_cache_middleware.backends.tiered import TieredBackend

async def main():
    backend = TieredBackend(RedisBackend.from_url({redis_server.url!r}, timeout=0.5), l1_max_ttl=30)
    last, deadline = object(), time.monotonic() + 15
    while time.monotonic() < deadline:
        value = await backend.get("shared")
        if value != last:
            print(json.dumps([value and value.decode(), backend.subscribed]), flush=True)
            last = value
        if value == b"stop":
            break
        await asyncio.sleep(0.001)
    print(json.dumps(backend.stats()), flush=True)
    await backend.aclose()

asyncio.run(main())
"""
    )
    writer = tiered(redis_server.url)
    root = str(Path(__file__).parent.parent)  # this checkout's package, not the one installed
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(reader),
        stdout=asyncio.subprocess.PIPE,
        cwd=root,
        env={**os.environ, "PYTHONPATH": root},
    )
    assert process.stdout is not None
    stdout = process.stdout

    async def next_line() -> Any:
        return json.loads(await asyncio.wait_for(stdout.readline(), 10))

    try:
        await subscribed(writer)
        assert (await next_line())[0] is None
        await writer.set("shared", b"v1", 60)
        _, reader_subscribed = await next_line()
        while not reader_subscribed:  # read from Redis until its subscription is up: wait for that
            await writer.set("shared", f"v1-{time.monotonic()}".encode(), 60)
            _, reader_subscribed = await next_line()
        await asyncio.sleep(0.3)  # the reader now serves this value from its L1
        started = time.monotonic()
        await writer.set("shared", b"v2", 60)
        assert await next_line() == ["v2", True]
        replace_seen = time.monotonic() - started
        started = time.monotonic()
        await writer.delete(["shared"])
        assert await next_line() == [None, True]
        delete_seen = time.monotonic() - started
        await writer.set("shared", b"stop", 60)
        assert await next_line() == ["stop", True]
        stats = await next_line()
        assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await writer.aclose()
    assert replace_seen < INVALIDATION_BOUND and delete_seen < INVALIDATION_BOUND
    assert stats["l1_hits"] > 50, f"the reader served most reads from L1: {stats}"
    assert stats["invalidations"] >= 3


async def test_subscription_loss_empties_and_bypasses_l1(fresh_redis: RedisServer) -> None:
    backend = tiered(fresh_redis.url)
    try:
        await subscribed(backend)
        await backend.set("k", b"before", 60)
        await until(lambda: backend.stats()["invalidations"])
        assert await backend.get("k") == b"before"
        assert backend.stats()["l1_bytes"] == len(b"before")
        fresh_redis.pause()  # the connection stays open but nothing answers: only the heartbeat notices
        try:
            deadline = time.monotonic() + 2
            while backend.subscribed:
                assert time.monotonic() < deadline, "heartbeat did not notice the silent subscription"
                await asyncio.sleep(0.01)
            assert backend.stats()["l1_bytes"] == 0
        finally:
            fresh_redis.resume()
        fresh_redis.kill()
        with pytest.raises(BackendError):
            await backend.get("k")
        fresh_redis.start()  # same port, empty: an L1 copy from before would now be wrong
        await subscribed(backend, within=5)
        for _ in range(5):  # each pooled connection from before the restart fails once
            with contextlib.suppress(BackendError):
                assert await backend.get("k") is None
                break
        else:
            pytest.fail("no read succeeded after the restart")
        assert cast(int, backend.stats()["subscription_losses"]) >= 1
    finally:
        await backend.aclose()


async def test_middleware_hits_come_from_l1(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    backend = tiered(redis_server.url)
    app, counting = cached_app(backend)
    try:
        await subscribed(backend)
        async with client_for(app) as client:
            first = await client.get("/predict?a=1")
            await until(lambda: backend.stats()["invalidations"])  # its own write, heard back
            assert (await client.get("/predict?a=1")).headers["x-cache"] == "HIT"  # read from Redis
            redis_client.config_resetstat()
            again = [await client.get("/predict?a=1") for _ in range(5)]
        assert first.headers["x-cache"] == "MISS"
        assert [r.headers["x-cache"] for r in again] == ["HIT"] * 5
        assert all(r.content == first.content for r in again)
        assert counting.calls["predict"] == 1
        assert data_commands(redis_client) == 0
    finally:
        await backend.aclose()


def test_arguments_are_checked(redis_server: RedisServer) -> None:
    l2 = RedisBackend.from_url(redis_server.url)
    with pytest.raises(ValueError):
        TieredBackend(l2, l1_max_ttl=0)
    with pytest.raises(ValueError):
        TieredBackend(l2, l1_max_bytes=0)


async def test_leases_are_taken_in_redis(pair: tuple[TieredBackend, ...], redis_client: redis.Redis) -> None:
    a, b = pair
    assert isinstance(a, LockingBackend)
    assert await a.acquire("lease", "token-a", 5)
    assert not await b.acquire("lease", "token-b", 5)
    await b.release("lease", "token-b")  # not b's: stays
    assert redis_client.get("lease") == b"token-a"
    await a.release("lease", "token-a")
    assert await b.acquire("lease", "token-b", 0.05)
    assert 0 < redis_client.pttl("lease") <= 50


async def test_concurrent_misses_share_one_redis_read(
    pair: tuple[TieredBackend, ...], redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = pair
    await a.set("k", b"v1", 60)
    await until(lambda: b.stats()["invalidations"])
    redis_client.config_resetstat()
    values = await asyncio.gather(*(b.get("k") for _ in range(20)))
    assert values == [b"v1"] * 20
    assert round_trips(redis_client) == 1
    assert b.stats()["l2_reads_shared"] == 19

    # The first caller going away does not cancel the read the others wait for.
    real_script, release = b._get_script, asyncio.Event()

    async def gated(client: Any, keys: Any, args: Any) -> Any:
        await release.wait()
        return await real_script(client, keys, args)

    monkeypatch.setattr(b, "_get_script", gated)
    await b.l1.delete(["k"])
    first = asyncio.create_task(b.get("k"))
    second = asyncio.create_task(b.get("k"))
    await asyncio.sleep(0.01)
    first.cancel()
    release.set()
    assert await second == b"v1"
    with pytest.raises(asyncio.CancelledError):
        await first

    async def failing(client: Any, keys: Any, args: Any) -> Any:
        raise redis.ConnectionError("down")

    monkeypatch.setattr(b, "_get_script", failing)
    await b.l1.delete(["k"])
    results = await asyncio.gather(b.get("k"), b.get("k"), return_exceptions=True)
    assert all(isinstance(r, BackendError) for r in results)

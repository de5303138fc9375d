"""TieredBackend on one node: Redis itself announces every change to a tracked key (whoever makes it, and
expiry and eviction), keys outside the prefix stay out of L1, and a lost tracking connection bypasses L1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis
from starlette.applications import Starlette

from redis_cache_middleware import CacheMiddleware, CacheRule, RedisBackend
from redis_cache_middleware.backends.tiered import TieredBackend
from redis_cache_middleware.backends.tracking import _first_failure

from .redis_server import RedisServer
from .test_tiered import INVALIDATION_BOUND, data_commands, eventually, subscribed, tiered, until


async def in_l1(backend: TieredBackend, key: str, value: bytes) -> None:
    """Read `key` until the read fills L1 (its own write may still be on its way back), then check that
    the next read is an L1 hit."""
    deadline = time.monotonic() + 2
    while True:
        assert await backend.get(key) == value
        hits = backend.l1_hits
        assert await backend.get(key) == value
        if backend.l1_hits == hits + 1:
            return
        assert time.monotonic() < deadline, f"{key} never stayed in L1"
        await asyncio.sleep(0.01)


@pytest.fixture
async def backend(redis_server: RedisServer, redis_client: redis.Redis) -> AsyncIterator[TieredBackend]:
    backend = tiered(redis_server.url)
    await subscribed(backend)
    yield backend
    await backend.aclose()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r: r.set("k", b"by redis-cli"), b"by redis-cli"),
        (lambda r: r.delete("k"), None),
        (lambda r: r.pexpire("k", 20), None),  # an expiry set behind the cache's back, then reached
        (lambda r: r.flushall(), None),
        (lambda r: r.rename("k", "elsewhere"), None),
    ],
    ids=["set", "delete", "expire", "flushall", "rename"],
)
async def test_a_change_by_a_plain_redis_client_reaches_l1(
    backend: TieredBackend,
    redis_client: redis.Redis,
    change: Callable[[redis.Redis], object],
    expected: bytes | None,
) -> None:
    redis_client.set("k", b"v1")  # no TTL: without an invalidation the copy would live LONG_L1_TTL
    await in_l1(backend, "k", b"v1")
    change(redis_client)
    assert await eventually(lambda: backend.get("k"), expected) < INVALIDATION_BOUND


async def test_an_evicted_key_leaves_l1(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, "--maxmemory", "2mb", "--maxmemory-policy", "allkeys-random").start()
    backend = tiered(server.url)
    try:
        with server.client() as plain:
            await subscribed(backend)
            plain.set("k", b"v1")
            await in_l1(backend, "k", b"v1")
            filler = 0
            while plain.exists("k"):  # grow the data set until Redis evicts "k"
                plain.set(f"filler:{filler}", b"x" * 10_000)
                filler += 1
                assert filler < 10_000, "Redis never evicted the key"
            assert backend.subscribed
            assert await eventually(lambda: backend.get("k"), None) < INVALIDATION_BOUND
    finally:
        await backend.aclose()
        server.kill()


async def test_keys_outside_the_prefix_never_enter_l1(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    backend = tiered(redis_server.url, prefix="rcm:")
    try:
        await subscribed(backend)
        redis_client.set("rcm:entry", b"cached")
        redis_client.set("other", b"not ours")
        await until(lambda: backend.stats()["invalidations"])
        await in_l1(backend, "rcm:entry", b"cached")
        heard = backend.invalidations
        redis_client.config_resetstat()
        assert [await backend.get("other") for _ in range(3)] == [b"not ours"] * 3
        assert data_commands(redis_client, ("evalsha",)) == 3, "each read of an untracked key goes to Redis"
        redis_client.set("other", b"changed")
        redis_client.set("rcm:entry", b"changed")
        await eventually(lambda: backend.get("rcm:entry"), b"changed")
        assert backend.invalidations == heard + 1, "Redis announced the tracked key only"
        listed = [c for c in redis_client.client_list() if c.get("redir", "-1") != "-1"]
        assert len(listed) == 1 and listed[0]["flags"] == "PtB", listed
    finally:
        await backend.aclose()


async def test_a_killed_tracking_connection_bypasses_l1_until_it_is_back(
    backend: TieredBackend, redis_client: redis.Redis
) -> None:
    redis_client.set("k", b"v1")
    await in_l1(backend, "k", b"v1")
    assert redis_client.client_kill_filter(_type="pubsub") >= 1  # the tracking connection
    await until(lambda: not backend.subscribed)
    assert backend.stats()["l1_bytes"] == 0, "L1 is emptied: invalidations may have been missed"
    redis_client.set("k", b"v2")
    assert await backend.get("k") == b"v2"
    await subscribed(backend)
    assert backend.stats()["subscription_losses"] == 1
    await in_l1(backend, "k", b"v2")
    redis_client.set("k", b"v3")
    assert await eventually(lambda: backend.get("k"), b"v3") < INVALIDATION_BOUND


async def test_a_resp3_client_gets_a_resp2_tracking_connection(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    l2 = RedisBackend.from_url(redis_server.url, timeout=0.5, protocol=3)
    backend = TieredBackend(l2, l1_max_ttl=30, heartbeat=0.2)
    try:
        await subscribed(backend)
        redis_client.set("k", b"v1")
        await in_l1(backend, "k", b"v1")
        redis_client.set("k", b"v2")
        assert await eventually(lambda: backend.get("k"), b"v2") < INVALIDATION_BOUND
    finally:
        await backend.aclose()


async def test_without_client_tracking_l1_stays_bypassed_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A user whose ACL forbids CLIENT TRACKING (as some managed Redis do): correct answers, no L1."""
    server = RedisServer(tmp_path).start()
    with server.client() as admin:
        admin.acl_setuser(
            "app", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-client|tracking"]
        )
    backend = tiered(f"redis://app:pw@127.0.0.1:{server.port}/0")
    try:
        await backend.set("k", b"v1", 60)
        for _ in range(20):
            assert await backend.get("k") == b"v1"
            await asyncio.sleep(0.02)
        assert not backend.subscribed and backend.l1_hits == 0 and backend.l2_hits == 20
        refusals = [r for r in caplog.records if "refused L1 invalidation tracking" in r.getMessage()]
        assert len(refusals) == 1 and refusals[0].levelname == "WARNING"
    finally:
        await backend.aclose()
        server.kill()


async def test_a_cache_middleware_makes_its_tiered_backend_watch_only_its_own_keys(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """Without a `prefix`, the backend adopts the middleware's key prefix: Redis announces no other writes."""
    backend = tiered(redis_server.url)
    CacheMiddleware(Starlette(), backend=backend, rules=[CacheRule("/x", ttl=5)], prefix="mycache")
    chosen = tiered(redis_server.url, prefix="")
    CacheMiddleware(Starlette(), backend=chosen, rules=[CacheRule("/x", ttl=5)], prefix="mycache")
    try:
        await subscribed(backend, chosen)
        assert backend.prefix == "mycache:" and chosen.prefix == "", "a prefix given stays as it is"
        redis_client.set("mycache:entry", b"cached")
        await in_l1(backend, "mycache:entry", b"cached")
        heard = backend.invalidations
        redis_client.set("unrelated", b"x")
        redis_client.set("mycache:entry", b"changed")
        await eventually(lambda: backend.get("mycache:entry"), b"changed")
        assert backend.invalidations == heard + 1, "the unrelated write was not announced"
    finally:
        await backend.aclose()
        await chosen.aclose()


async def test_a_tracking_session_ends_even_when_a_cancellation_is_dropped() -> None:
    """When one connection's job fails, the others are cancelled; one that drops the cancellation (as
    `asyncio.wait_for` does on Python 3.11 when the write completes at once) is cancelled again."""
    dropped = asyncio.Event()

    async def drops_one_cancellation() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            dropped.set()
        await asyncio.Event().wait()

    async def fails() -> None:
        await asyncio.sleep(0.01)
        raise TimeoutError("no reply to PING")

    with pytest.raises(TimeoutError, match="no reply to PING"):
        await asyncio.wait_for(_first_failure([drops_one_cancellation(), fails()]), 2)
    assert dropped.is_set()

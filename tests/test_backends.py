"""The Backend protocol on every backend: memory, single Redis (pipelined and plain client), Redis Cluster,
tiered. Multi-get order, TTLs of multi-set, delete counts, tag sets, purge by Redis glob."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from redis_cache_middleware.backends import (
    Backend,
    BackendError,
    MemoryBackend,
    PartialBackendError,
    RedisBackend,
)
from redis_cache_middleware.backends.memory import glob_match
from redis_cache_middleware.backends.tiered import TieredBackend

from .redis_cluster import LocalCluster
from .redis_server import RedisServer

KINDS = ["memory", "redis", "redis-client", "tiered", "cluster", "tiered-cluster"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("backends-cluster"), primaries=3).start()
    yield cluster
    cluster.stop()


def _flush_cluster(cluster: LocalCluster) -> None:
    for node in cluster.primaries():
        with node.client() as client:
            client.flushall()


@pytest.fixture(params=KINDS)
async def any_backend(request: pytest.FixtureRequest, redis_server: RedisServer) -> AsyncIterator[Backend]:
    kind: str = request.param
    backend: Backend
    if kind == "memory":
        backend = MemoryBackend()
    elif kind in ("cluster", "tiered-cluster"):
        cluster: LocalCluster = request.getfixturevalue("cluster")
        _flush_cluster(cluster)
        backend = RedisBackend.from_url(cluster.url, timeout=0.5)
        if kind == "tiered-cluster":
            backend = TieredBackend(backend)
    else:
        request.getfixturevalue("redis_client")  # an emptied server
        if kind == "redis":
            backend = RedisBackend.from_url(redis_server.url, timeout=0.5)
        elif kind == "redis-client":  # any client option: no pipelined connection, redis-py does it all
            backend = RedisBackend.from_url(redis_server.url, timeout=0.5, client_name="plain")
        else:
            backend = TieredBackend(RedisBackend.from_url(redis_server.url, timeout=0.5))
    yield backend
    await backend.aclose()


async def test_get_many_keeps_order_and_gives_none_for_absent_keys(any_backend: Backend) -> None:
    keys = [f"gm:{i}" for i in range(30)]
    await any_backend.set_many([(key, f"value-{key}".encode(), 60) for key in keys[::2]])
    asked = [*keys, "gm:absent", keys[4], keys[4]]
    expected = [f"value-{k}".encode() if int(k.split(":")[1]) % 2 == 0 else None for k in keys]
    assert await any_backend.get_many(asked) == [*expected, None, expected[4], expected[4]]
    assert await any_backend.get_many([]) == []
    assert await any_backend.get_many(["gm:absent"]) == [None]


async def test_set_many_gives_each_key_its_own_ttl(any_backend: Backend) -> None:
    await any_backend.set_many([("ttl:long", b"long", 60), ("ttl:short", b"short", 0.2), ("ttl:x", b"x", 60)])
    assert await any_backend.get_many(["ttl:long", "ttl:short", "ttl:x"]) == [b"long", b"short", b"x"]
    await asyncio.sleep(0.4)
    assert await any_backend.get_many(["ttl:long", "ttl:short", "ttl:x"]) == [b"long", None, b"x"]
    await any_backend.set_many([])


async def test_delete_counts_the_keys_that_existed(any_backend: Backend) -> None:
    keys = [f"del:{i}" for i in range(12)]
    await any_backend.set_many([(key, b"v", 60) for key in keys])
    assert await any_backend.delete([*keys[:7], "del:absent"]) == 7
    assert await any_backend.delete(keys) == 5
    assert await any_backend.delete([]) == 0
    assert await any_backend.get_many(keys) == [None] * 12


async def test_purge_set_deletes_the_members_then_the_set(any_backend: Backend) -> None:
    entries = [f"rcm:t:v:r:{i}" for i in range(20)]
    await any_backend.set_many([(key, key.encode(), 60) for key in entries])
    for key in entries[:10]:
        await any_backend.add_to_sets(["rcm:t:tag:blue", "rcm:t:tag:all"], key, 60)
    for key in entries[10:]:
        await any_backend.add_to_sets(["rcm:t:tag:all"], key, 60)
    await any_backend.add_to_sets([], "ignored", 60)
    assert await any_backend.purge_set("rcm:t:tag:blue") == 10
    assert await any_backend.get_many(entries) == [None] * 10 + [k.encode() for k in entries[10:]]
    assert await any_backend.purge_set("rcm:t:tag:blue") == 0, "the set went with its members"
    assert await any_backend.purge_set("rcm:t:tag:all") == 10, "members already gone are not counted"
    assert await any_backend.get_many(entries) == [None] * 20
    assert await any_backend.purge_set("rcm:t:tag:never") == 0


async def test_purge_takes_redis_glob_patterns_with_special_characters(any_backend: Backend) -> None:
    chosen = ["rcm:ns:v[1]:a*b:1", "rcm:ns:v[1]:a*b:2", "rcm:ns:v[1]:a*b:\\x"]
    others = ["rcm:ns:v1:a*b:1", "rcm:ns:v[1]:aXb:1", "rcm:ns:v[1]:a*b", "rcm:other:v[1]:a*b:1", "x"]
    keys = chosen + others + [f"rcm:ns:v[1]:a*b:{i}" for i in range(3, 40)]
    await any_backend.set_many([(key, b"v", 60) for key in keys])
    assert await any_backend.purge("rcm:ns:v\\[1\\]:a\\*b:*") == 3 + 37
    assert await any_backend.get_many(others) == [b"v"] * len(others)
    assert await any_backend.purge("rcm:ns:v?:a[*]b:[0-9]") == 1  # rcm:ns:v1:a*b:1
    assert await any_backend.purge("rcm:[^n]*") == 1  # rcm:other:...
    assert await any_backend.get_many(["rcm:ns:v[1]:aXb:1", "rcm:ns:v[1]:a*b", "x"]) == [b"v"] * 3
    assert await any_backend.purge("nothing:*") == 0


async def test_purge_everything_empties_and_the_backend_stays_usable(any_backend: Backend) -> None:
    await any_backend.set_many([(f"all:{i}", b"v", 60) for i in range(10)])
    await any_backend.add_to_sets(["all:tag"], "all:0", 60)
    assert await any_backend.purge("all:*") == 11  # the tag set is a key like any other
    await any_backend.set("all:0", b"again", 60)
    assert await any_backend.get("all:0") == b"again"


def test_glob_matches_as_redis_does(redis_client: redis.Redis) -> None:
    """The memory backend's glob against Redis's own KEYS on the same keys."""
    keys = ["a", "ab", "a*", "a?", "a[b]", "a\\b", "abc", "a-b", "a]", "^a", "b", "a\nb", "ä"]
    patterns = ["a*", "a\\*", "a?", "a[b-c]", "a[c-b]", "a[^b]", "[\\^]a", "a\\[b\\]", "a[\\]]", "*", "a[b"]
    patterns += ["a\\\\b", "?", "??", "a*b", "a[]", "[ä]", "ä", "a\\"]
    for key in keys:
        redis_client.set(key, b"v")
    for pattern in patterns:
        expected = sorted(k.decode() if isinstance(k, bytes) else k for k in redis_client.keys(pattern))
        assert sorted(k for k in keys if glob_match(pattern, k)) == expected, pattern


async def test_memory_purge_and_clear_keep_sizes_right() -> None:
    backend = MemoryBackend(max_bytes=100)
    await backend.set_many([("a", b"x" * 40, 60), ("b", b"y" * 40, 60)])
    assert backend.size == 80
    assert await backend.purge("a") == 1
    assert backend.size == 40
    backend.clear()
    assert (len(backend), backend.size) == (0, 0)
    await backend.set("c", b"z" * 90, 60)
    assert await backend.get("c") == b"z" * 90


async def test_redis_get_many_is_one_mget_and_set_many_one_write(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    backend = RedisBackend.from_url(redis_server.url, timeout=0.5)
    await backend.get("warm")
    redis_client.config_resetstat()
    await backend.set_many([(f"k{i}", b"v", 60) for i in range(50)])
    assert await backend.get_many([f"k{i}" for i in range(50)]) == [b"v"] * 50
    stats = redis_client.info("commandstats")
    assert stats["cmdstat_mget"]["calls"] == 1
    assert stats["cmdstat_set"]["calls"] == 50
    assert "cmdstat_get" not in stats
    assert 59_000 < redis_client.pttl("k0") <= 60_000
    await backend.aclose()


async def test_tag_sets_live_as_long_as_their_longest_member(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    backend = RedisBackend.from_url(redis_server.url, timeout=0.5)
    await backend.add_to_sets(["tag:a"], "k1", 60)
    await backend.add_to_sets(["tag:a"], "k2", 5)
    assert 55_000 < redis_client.pttl("tag:a") <= 60_000
    await backend.add_to_sets(["tag:a"], "k3", 120)
    assert redis_client.pttl("tag:a") > 60_000
    assert redis_client.smembers("tag:a") == {b"k1", b"k2", b"k3"}
    await backend.aclose()


async def _wait_until(read: object, expected: bytes | None, within: float = 2.0) -> None:
    assert callable(read)
    deadline = time.monotonic() + within
    while (value := await read()) != expected:
        assert time.monotonic() < deadline, f"still {value!r}"
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("operation", ["purge", "purge_set", "delete", "set"])
async def test_tiered_writes_and_purges_reach_another_l1(
    redis_server: RedisServer, redis_client: redis.Redis, operation: str
) -> None:
    """Each way of changing an entry through one `TieredBackend` (watching only the cache's prefix) drops
    the copy in another's L1."""
    a, b = (
        TieredBackend(RedisBackend.from_url(redis_server.url, timeout=0.5), prefix="rcm:", l1_max_ttl=30)
        for _ in range(2)
    )
    try:
        deadline = time.monotonic() + 3
        while not (a.subscribed and b.subscribed):
            assert time.monotonic() < deadline
            await a.get("warm")
            await b.get("warm")
            await asyncio.sleep(0.01)
        await a.set("rcm:ns:v:r:1", b"v1", 60)
        await a.add_to_sets(["rcm:ns:tag:t"], "rcm:ns:v:r:1", 60)
        deadline = time.monotonic() + 2
        while b.stats()["invalidations"] != 2:  # the entry and the tag set: nothing more to hear
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)
        await _wait_until(lambda: b.get("rcm:ns:v:r:1"), b"v1")
        redis_client.config_resetstat()
        assert await b.get("rcm:ns:v:r:1") == b"v1"
        assert "cmdstat_evalsha" not in redis_client.info("commandstats"), "b serves its L1 copy"
        if operation == "purge":
            assert await a.purge("rcm:ns:*") == 2
        elif operation == "purge_set":
            assert await a.purge_set("rcm:ns:tag:t") == 1
        elif operation == "delete":
            assert await a.delete(["rcm:ns:v:r:1"]) == 1
        else:
            await a.set("rcm:ns:v:r:1", b"v2", 60)
        expected = b"v2" if operation == "set" else None
        await _wait_until(lambda: b.get("rcm:ns:v:r:1"), expected)
        assert await b.get_many(["rcm:ns:v:r:1"]) == [expected]
    finally:
        await a.aclose()
        await b.aclose()


async def test_memory_policy(tmp_path: Path, redis_server: RedisServer, cluster: LocalCluster) -> None:
    server = RedisServer(tmp_path, "--maxmemory", "10mb", "--maxmemory-policy", "allkeys-lru").start()
    try:
        backend = RedisBackend.from_url(server.url, timeout=0.5)
        assert await backend.memory_policy() == (10 * 1024 * 1024, "allkeys-lru")
        await backend.aclose()
        with server.client() as admin:
            admin.config_set("maxmemory", "0")
        backend = RedisBackend.from_url(server.url.replace("/0", "/0?client_name=x"), timeout=0.5)
        assert await backend.memory_policy() == (0, "allkeys-lru")
        await backend.aclose()
        with server.client() as admin:
            admin.execute_command("ACL", "SETUSER", "default", "-config")
        backend = RedisBackend.from_url(server.url, timeout=0.5)
        assert await backend.memory_policy() is None
        await backend.aclose()
    finally:
        server.kill()
    on_cluster = RedisBackend.from_url(cluster.url, timeout=0.5)
    assert await on_cluster.memory_policy() == (0, "noeviction")
    await on_cluster.aclose()
    unreachable = RedisBackend.from_url(server.url, timeout=0.1)
    assert await unreachable.memory_policy() is None
    await unreachable.aclose()


async def test_cluster_multi_key_calls_fail_partially_when_one_node_is_dead(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, primaries=3).start()
    backend = RedisBackend.from_url(cluster.url, timeout=0.5)
    try:
        keys = [f"rcm:p:{i}" for i in range(30)]
        assert len({key_slot(k.encode()) for k in keys}) > 10
        await backend.set_many([(key, key.encode(), 60) for key in keys])
        assert await backend.get_many(keys) == [k.encode() for k in keys]
        cluster.nodes[0].kill()
        with pytest.raises(PartialBackendError, match="1 of 3 nodes failed"):
            await backend.get_many(keys)
        with pytest.raises(PartialBackendError):  # the live nodes' keys are written all the same
            await backend.set_many([(key, b"v", 60) for key in keys])
        with cluster.nodes[1].client() as alive:
            on_alive = [k for k in keys if alive.execute_command("CLUSTER", "KEYSLOT", k) in _slots(alive)]
        assert on_alive and await backend.get_many(on_alive) == [b"v"] * len(on_alive)
    finally:
        await backend.aclose()
        cluster.stop()


def _slots(client: redis.Redis) -> set[int]:
    """The hash slots the node behind `client` serves."""
    me = client.execute_command("CLUSTER", "MYID").decode()  # type: ignore[no-untyped-call]
    served: set[int] = set()
    for first, last, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):  # type: ignore[no-untyped-call]
        if primary[2].decode() == me:
            served.update(range(int(first), int(last) + 1))
    return served


async def test_backend_errors_are_backend_errors(redis_server: RedisServer) -> None:
    with contextlib.closing(redis_server.client()) as admin:
        admin.set("a-list-not-a-string", b"x")
        admin.delete("a-list-not-a-string")
        admin.rpush("a-list-not-a-string", b"x")
    backend = RedisBackend.from_url(redis_server.url, timeout=0.5)
    with pytest.raises(BackendError, match=r"\(error-reply\)"):
        await backend.add_to_sets(["a-list-not-a-string"], "m", 60)
    with pytest.raises(ValueError):
        await backend.purge("*", batch=0)
    await backend.aclose()

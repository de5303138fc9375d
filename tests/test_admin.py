"""Operator functions against real Redis (a private server, and a private 3-primary cluster)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
from redis.asyncio import Redis, RedisCluster

from redis_cache_middleware import CacheMiddleware, CacheRule, RedisBackend
from redis_cache_middleware.backends.tiered import TieredBackend
from redis_cache_middleware.ops import (
    follow_vary,
    index_tags,
    inspect,
    namespace_stats,
    purge,
    purge_request,
    request_key,
    sample_keys,
    tag_key,
)

from .apps import DEFAULT_RULES, CountingApp, entry_keys, populate, store_signed_variants
from .redis_cluster import LocalCluster
from .redis_server import RedisServer
from .support import ROOT, client_for

PREDICT, ITEMS = DEFAULT_RULES[0], DEFAULT_RULES[-1]


@pytest.fixture
async def client(backend: RedisBackend) -> Redis | RedisCluster:
    """The async client on the emptied private Redis that the middleware writes through too."""
    return backend.client


async def test_request_key_is_the_key_the_middleware_wrote(
    backend: RedisBackend, client: Redis, redis_client: redis.Redis
) -> None:
    vary = CacheRule("/predict", ttl=60, methods=("GET", "POST"), vary=("accept-language",))
    rules = [vary, ITEMS]
    app = CountingApp().starlette()
    app.add_middleware(CacheMiddleware, backend=backend, rules=rules, namespace="test", version="v2")
    async with client_for(app) as http:
        await http.get("/predict?b=%20x&a=1&a=2", headers={"accept-language": "fr"})
        await http.post("/predict?q=1", json={"b": 2, "a": 1})
        await http.get("/items/caf\u00e9 1")
    assert len(entry_keys(redis_client)) == 3

    def key(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> str:
        rule = ITEMS if "/items/" in url else vary
        return request_key(
            namespace="test", version="v2", rule=rule, method=method, url=url, body=body, headers=headers
        )

    expected = [
        key("GET", "http://testserver/predict?a=1&b=+x&a=2", headers={"Accept-Language": "fr"}),
        key(
            "POST", "http://testserver/predict?q=1", b'{"a": 1, "b": 2}', {"content-type": "application/json"}
        ),
        key("GET", "http://testserver:80/items/caf\u00e9 1"),
    ]
    assert sorted(expected) == entry_keys(redis_client)
    assert key("GET", "http://testserver/predict?a=1&b=+x&a=2") not in entry_keys(redis_client)
    assert key("GET", "https://testserver/items/caf\u00e9 1") not in entry_keys(redis_client)
    with pytest.raises(ValueError, match="absolute"):
        key("GET", "/predict")


async def test_purge_by_rule_across_versions_or_in_one(
    backend: RedisBackend, client: Redis, redis_client: redis.Redis
) -> None:
    await populate(backend, version="1")
    await populate(backend, version="2")
    await populate(backend, namespace="other")

    assert await purge(client, namespace="test", rule="/predict", version="1") == 4
    assert len(entry_keys(redis_client)) == 8
    assert await purge(client, namespace="test", rule="/predict") == 4
    remaining = entry_keys(redis_client)
    assert len(remaining) == 4 and all(":/items/<item_id>:" in key for key in remaining)
    assert len(entry_keys(redis_client, "other")) == 6


async def test_purge_by_version_and_all(
    backend: RedisBackend, client: Redis, redis_client: redis.Redis
) -> None:
    await populate(backend, version="1")
    await populate(backend, version="2")
    await populate(backend, namespace="other")
    await index_tags(client, "rcm", "test", entry_keys(redis_client)[0], ["t"], 60)

    assert await purge(client, namespace="test", version="1") == 6
    assert {key.split(":")[2] for key in entry_keys(redis_client)} == {"2"}
    assert redis_client.exists(tag_key("rcm", "test", "t"))
    assert await purge(client, namespace="test", all=True) == 6
    assert list(redis_client.scan_iter("rcm:test:*")) == []
    assert len(entry_keys(redis_client, "other")) == 6


async def test_purge_by_tag_deletes_its_entries_and_the_tag_set(
    backend: RedisBackend, client: Redis, redis_client: redis.Redis
) -> None:
    await populate(backend)
    predict = [key for key in entry_keys(redis_client) if ":/predict:" in key]
    for key in predict[:3]:
        await index_tags(client, "rcm", "test", key, ["model", "iris"], 30)
    await index_tags(client, "rcm", "test", predict[3], ["iris"], 120)
    await index_tags(client, "rcm", "test", predict[3], ["iris"], 10)
    assert 110_000 < redis_client.pttl(tag_key("rcm", "test", "iris")) <= 120_000
    assert 20_000 < redis_client.pttl(tag_key("rcm", "test", "model")) <= 30_000

    assert await purge(client, namespace="test", tag="model") == 3
    assert not redis_client.exists(tag_key("rcm", "test", "model"))
    assert entry_keys(redis_client) == sorted(
        [*[k for k in entry_keys(redis_client) if "/items/" in k], predict[3]]
    )
    assert await purge(client, namespace="test", tag="iris") == 1
    assert await purge(client, namespace="test", tag="absent") == 0
    assert len(entry_keys(redis_client)) == 2


async def test_dry_run_counts_without_deleting(
    backend: RedisBackend, client: Redis, redis_client: redis.Redis
) -> None:
    await populate(backend, version="1")
    await populate(backend, version="2")
    await index_tags(client, "rcm", "test", entry_keys(redis_client)[0], ["t"], 60)
    before = sorted(redis_client.scan_iter("*"))

    assert await purge(client, namespace="test", all=True, dry_run=True) == 12
    assert await purge(client, namespace="test", version="2", dry_run=True) == 6
    assert await purge(client, namespace="test", rule="/items/<item_id>", dry_run=True) == 4
    assert await purge(client, namespace="test", tag="t", dry_run=True) == 1
    assert sorted(redis_client.scan_iter("*")) == before


async def test_purge_in_small_batches_and_with_glob_characters_in_names(
    backend: RedisBackend, client: Redis, redis_client: redis.Redis
) -> None:
    tricky = CacheRule("/items/{item_id}", ttl=60, name="/i[t]e*m?s\\")
    plain = CacheRule("/predict", ttl=60, methods=("GET", "POST"), name="/items")
    await populate(backend, namespace="n*", items=5, rules=[plain, tricky])
    await populate(backend, namespace="nx", items=5, rules=[plain, tricky])

    assert await purge(client, namespace="n*", rule="/i[t]e*m?s\\", batch=2) == 5
    assert await purge(client, namespace="n*", rule="/i?ems", batch=2) == 0
    assert len(entry_keys(redis_client, "n[*]")) == 4
    assert await purge(client, namespace="n*", all=True, batch=3) == 4
    assert len(entry_keys(redis_client, "nx")) == 9


async def test_purge_needs_exactly_one_selector(client: Redis) -> None:
    with pytest.raises(ValueError, match="needs a selector"):
        await purge(client, namespace="test")
    with pytest.raises(ValueError, match="one selector"):
        await purge(client, namespace="test", rule="/predict", tag="t")
    with pytest.raises(ValueError, match="one selector"):
        await purge(client, namespace="test", all=True, rule="/predict")
    with pytest.raises(ValueError, match="version"):
        await purge(client, namespace="test", tag="t", version="1")


async def test_inspect_and_purge_one_request(
    backend: RedisBackend, client: Redis, redis_client: redis.Redis
) -> None:
    await populate(backend)
    key = request_key(
        namespace="test", version="1", rule=ITEMS, method="GET", url="http://testserver/items/1"
    )

    entry = await inspect(client, key)
    assert entry is not None
    assert entry["kind"] == "response" and entry["status"] == 200 and entry["fresh"]
    assert ["content-type", "application/json"] in entry["headers"]
    assert entry["body_preview"] == '{"item":"1","call":2}'
    assert entry["body_bytes"] == len(entry["body_preview"])
    assert entry["ttl"] == 60 and 0 <= entry["age"] < 5 and 55 < entry["redis_ttl"] <= 60

    assert await purge_request(client, key) is True
    assert await purge_request(client, key) is False
    assert await inspect(client, key) is None
    redis_client.set("rcm:test:1:/predict:" + "0" * 32, b"garbage", px=5000)
    broken = await inspect(client, "rcm:test:1:/predict:" + "0" * 32)
    assert broken is not None and broken["kind"] == "invalid" and broken["size"] == 7


async def test_sample_keys_lists_entry_keys_only(
    backend: RedisBackend, client: Redis, redis_client: redis.Redis
) -> None:
    await populate(backend, items=6)
    await populate(backend, namespace="other")
    await index_tags(client, "rcm", "test", entry_keys(redis_client)[0], ["t"], 60)

    keys = await sample_keys(client, namespace="test", limit=100)
    assert keys == entry_keys(redis_client)
    few = await sample_keys(client, namespace="test", limit=3)
    assert len(few) == 3 and set(few) <= set(keys) and few == sorted(few)
    assert await sample_keys(client, namespace="absent") == []


async def test_namespace_stats_counts_and_estimates(
    backend: RedisBackend, client: Redis, redis_client: redis.Redis
) -> None:
    await populate(backend, version="1", items=3)
    await populate(backend, version="2", items=1)
    await populate(backend, namespace="other")
    await index_tags(client, "rcm", "test", entry_keys(redis_client)[0], ["a", "b"], 60)

    stats = await namespace_stats(client, namespace="test", sample=4)
    assert stats["entries"] == 12
    assert stats["versions"] == {"1": 7, "2": 5}
    assert stats["rules"] == {"/predict": 8, "/items/<item_id>": 4}
    assert stats["tag_sets"] == 2 and stats["other_keys"] == 0
    assert stats["bytes_sampled_keys"] == 4
    one = redis_client.memory_usage(entry_keys(redis_client)[0])
    assert one is not None and 6 * one < stats["bytes_estimate"] < 24 * one
    info = stats["redis"]
    assert info["nodes"] == 1 and info["redis_version"].count(".") == 2
    assert info["used_memory_human"][-1] in "BKMG" and info["connected_clients"] >= 1
    assert info["keyspace_hits"] >= 0 and info["keyspace_misses"] >= 12 and info["evicted_keys"] == 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A private Redis Cluster of 3 primaries, for this module."""
    local = LocalCluster(tmp_path_factory.mktemp("cluster"), primaries=3).start()
    yield local
    local.stop()


@pytest.fixture
async def cluster_backend(cluster: LocalCluster) -> AsyncIterator[RedisBackend]:
    backend = RedisBackend.from_url(cluster.url, timeout=2)
    await backend.client.flushall(target_nodes=RedisCluster.PRIMARIES)
    yield backend
    await backend.aclose()


def cluster_sizes(cluster: LocalCluster) -> list[int]:
    sizes = []
    for node in cluster.primaries():
        with node.client() as client:
            sizes.append(int(client.dbsize()))
    return sizes


async def test_purge_on_a_cluster_scans_every_primary(
    cluster: LocalCluster, cluster_backend: RedisBackend
) -> None:
    client = cluster_backend.client
    assert isinstance(client, RedisCluster)
    await populate(cluster_backend, items=40)
    await populate(cluster_backend, namespace="other", items=0)
    sizes = cluster_sizes(cluster)
    assert len(sizes) == 3 and min(sizes) > 0 and sum(sizes) == 48

    stats = await namespace_stats(client, namespace="test")
    assert stats["entries"] == 44 and stats["rules"] == {"/items/<item_id>": 40, "/predict": 4}
    assert stats["redis"]["nodes"] == 3
    keys = await sample_keys(client, namespace="test", limit=1000)
    assert len(keys) == 44
    tagged = keys[:10]
    for key in tagged:
        await index_tags(client, "rcm", "test", key, ["spread"], 60)

    assert await purge(client, namespace="test", tag="spread", dry_run=True) == 10
    assert await purge(client, namespace="test", tag="spread", batch=3) == 10
    assert await purge(client, namespace="test", rule="/items/<item_id>", dry_run=True) == 30
    assert await purge(client, namespace="test", rule="/items/<item_id>", batch=7) == 30
    assert await sample_keys(client, namespace="test", limit=1000) == [k for k in keys if ":/predict:" in k]
    assert await purge(client, namespace="test", all=True, batch=2) == 4
    assert sum(cluster_sizes(cluster)) == 4
    assert (await namespace_stats(client, namespace="other"))["entries"] == 4


async def test_cli_purges_a_cluster(cluster: LocalCluster, cluster_backend: RedisBackend) -> None:
    await populate(cluster_backend)
    node = f"redis://127.0.0.1:{cluster.nodes[0].port}/0"
    command = [sys.executable, "-m", "redis_cache_middleware", "purge", "--redis-url", node, "--cluster"]
    run = await asyncio.to_thread(
        subprocess.run,
        [*command, "--namespace", "test", "--all"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (run.returncode, run.stdout, run.stderr) == (
        0,
        "deleted 6 entries (every version) in namespace test and its tag sets\n",
        "",
    )
    assert sum(cluster_sizes(cluster)) == 0


async def test_vary_markers_and_signed_entries(
    backend: RedisBackend, client: Redis, redis_client: redis.Redis
) -> None:
    await store_signed_variants(backend)
    url = "http://testserver/headers?vary=accept-language"
    key = request_key(namespace="test", version="1", rule=DEFAULT_RULES[3], method="GET", url=url)

    marker = await inspect(client, key)
    assert marker is not None and marker["kind"] == "vary-marker" and marker["vary"] == ["accept-language"]
    assert marker["signature"] == "not checked"
    variant = await follow_vary(client, key, {b"accept-language": [b"de"]}, b"k")
    assert variant is not None and variant != key and variant.startswith("rcm:test:1:/headers:")
    entry = await inspect(client, variant, signing_key=b"k")
    assert entry is not None and entry["signature"] == "valid" and entry["body_preview"] == "headers call 2"
    forged = await inspect(client, variant, signing_key=b"other")
    assert forged is not None and forged["kind"] == "invalid"
    assert await follow_vary(client, variant, {}, b"k") is None
    assert len(entry_keys(redis_client)) == 3


async def test_purges_reach_the_l1_of_tiered_backends(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    tiered = TieredBackend(RedisBackend.from_url(redis_server.url, timeout=0.5), l1_max_ttl=60, heartbeat=0.2)
    app = CountingApp().starlette()
    app.add_middleware(CacheMiddleware, backend=tiered, rules=list(DEFAULT_RULES), namespace="test")
    one, two = (
        request_key(
            namespace="test", version="1", rule=PREDICT, method="GET", url=f"http://testserver/predict?x={x}"
        )
        for x in (1, 2)
    )
    try:
        while not tiered.subscribed:
            await tiered.get("warm-up")
            await asyncio.sleep(0.01)
        async with client_for(app) as http:

            async def cache(x: int) -> str:
                return str((await http.get(f"/predict?x={x}")).headers["x-cache"])

            async def eventually_miss(x: int) -> None:
                for _ in range(100):
                    if await cache(x) == "MISS":
                        return
                    await asyncio.sleep(0.02)
                pytest.fail(f"/predict?x={x} still served from L1")

            assert [await cache(1), await cache(1), await cache(2), await cache(2)] == ["MISS", "HIT"] * 2
            redis_client.unlink(two)
            await eventually_miss(2)  # Redis tells every TieredBackend, whoever deletes
            assert await purge(tiered.l2.client, namespace="test", rule="/predict") == 2
            await eventually_miss(1)
            assert await cache(1) == "HIT"
            assert await purge_request(tiered.l2.client, one) is True
            await eventually_miss(1)
    finally:
        await tiered.aclose()


async def test_memory_check_warns_when_redis_would_fill_up(client: Redis) -> None:
    from redis_cache_middleware.ops import memory_policy, memory_warning

    unlimited = await memory_policy(client)
    assert unlimited[0] == 0
    warning = memory_warning(unlimited)
    assert warning is not None and "no maxmemory" in warning and "\n" not in warning
    await client.config_set("maxmemory", "100mb")
    try:
        await client.config_set("maxmemory-policy", "noeviction")
        never_evicts = memory_warning(await memory_policy(client))
        assert never_evicts is not None and "noeviction" in never_evicts
        await client.config_set("maxmemory-policy", "allkeys-lru")
        assert await memory_policy(client) == (100 * 1024 * 1024, "allkeys-lru")
        assert memory_warning(await memory_policy(client)) is None
    finally:
        await client.config_set("maxmemory", "0")
        await client.config_set("maxmemory-policy", "noeviction")
    assert memory_warning(None) is None  # policy unknown (CONFIG disabled): no guess


async def test_cli_finds_the_namespace_and_reads_the_app_on_a_cluster(
    cluster: LocalCluster, cluster_backend: RedisBackend
) -> None:
    from redis_cache_middleware.ops import memory_policy

    from .ops_app import OPTIONS

    await populate(cluster_backend, namespace=str(OPTIONS["namespace"]), version=str(OPTIONS["version"]))
    env = {**os.environ, "RCM_TEST_REDIS_URL": cluster.url, "RCM_BASE_URL": "http://testserver"}

    async def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "redis_cache_middleware", *args]
        return await asyncio.to_thread(
            subprocess.run, command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
        )

    stats = await run("stats", "--redis-url", cluster.url)  # no namespace: the only one is found
    assert stats.returncode == 0, stats.stderr
    assert "namespace   opsapp" in stats.stdout and "entries     6\n" in stats.stdout
    assert "on 3 primaries" in stats.stdout
    purged = await run("purge", "--app", "tests.ops_app:app", "--path", "/predict")
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.startswith("deleted 4 entries of rule /predict (every version) in namespace opsapp")
    assert await memory_policy(cluster_backend.client) == (0, "noeviction")

"""Scale-out topologies: Redis Cluster, Sentinel, and the URL forms that select them (plus unix and TLS)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.crc import key_slot
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from redis_cache_middleware import CacheMiddleware, CacheRule, CircuitBreaker, RedisBackend

from .redis_cluster import LocalCluster, LocalSentinel
from .redis_server import RedisServer, free_port
from .support import client_for


def item_app() -> Starlette:
    async def item(request: Request) -> Response:
        return JSONResponse({"item": request.path_params["item_id"]})

    return Starlette(routes=[Route("/items/{item_id}", item)])


def cached(breaker: CircuitBreaker | None = None, **options: Any) -> CacheMiddleware:
    return CacheMiddleware(
        item_app(),
        rules=[CacheRule("/items/{item_id}", ttl=60)],
        namespace="scale",
        breaker=breaker if breaker is not None else CircuitBreaker(reset_timeout=0.2),
        **options,
    )


async def seconds_until_all_hit(client: httpx.AsyncClient, items: list[str], within: float) -> float | None:
    """How long until every item is a HIT again (None if not within `within` s); every answer stays 200."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        responses = await get_items(client, items)
        if {r.headers["x-cache"] for r in responses} == {"HIT"}:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    return None


async def get_items(client: httpx.AsyncClient, items: list[str]) -> list[httpx.Response]:
    responses = await asyncio.gather(*(client.get(f"/items/{item}") for item in items))
    assert [r.status_code for r in responses if r.status_code != 200] == []
    assert [r.json()["item"] for r in responses] == items
    return list(responses)


def cache_keys(server: RedisServer) -> list[bytes]:
    with server.client() as client:
        return [key for key in client.scan_iter("rcm:scale:*") if not key.endswith(b":stats")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three primaries, no replicas, shared by the tests that do not kill nodes."""
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"), primaries=3).start()
    yield cluster
    cluster.stop()


async def test_cluster_url_through_the_middleware_misses_then_hits_with_keys_on_every_node(
    cluster: LocalCluster,
) -> None:
    cache = cached(redis_url=cluster.url, timeout=0.5)
    items = [f"item-{i}" for i in range(60)]
    async with client_for(cache) as client:
        first = await get_items(client, items)
        second = await get_items(client, items)
    await cache.aclose()
    assert {r.headers["x-cache"] for r in first} == {"MISS"}
    assert {r.headers["x-cache"] for r in second} == {"HIT"}
    per_node = [cache_keys(node) for node in cluster.nodes]
    assert all(per_node), "every primary holds some of the entries"
    keys = [key for node_keys in per_node for key in node_keys]
    assert len(keys) == len(items)
    assert len({key_slot(key) for key in keys}) > 30


async def test_delete_removes_keys_spread_over_slots(cluster: LocalCluster) -> None:
    backend = RedisBackend.from_url(cluster.url, timeout=0.5)
    keys = [f"rcm:scale:delete:{i}" for i in range(40)]
    for key in keys:
        await backend.set(key, b"v", 60)
    assert len({key_slot(key.encode()) for key in keys}) > 1
    assert await backend.delete([*keys, "rcm:scale:delete:absent"]) == len(keys)
    assert [await backend.get(key) for key in keys] == [None] * len(keys)
    await backend.aclose()


async def test_leases_are_exclusive_and_released_only_by_their_holder(cluster: LocalCluster) -> None:
    backend = RedisBackend.from_url(cluster.url, timeout=0.5)
    try:
        assert await backend.acquire("rcm:scale:k.lock", "first", 5) is True
        assert await backend.acquire("rcm:scale:k.lock", "second", 5) is False
        await backend.release("rcm:scale:k.lock", "second")
        assert await backend.acquire("rcm:scale:k.lock", "third", 5) is False
        await backend.release("rcm:scale:k.lock", "first")
        assert await backend.acquire("rcm:scale:k.lock", "third", 5) is True
    finally:
        await backend.release("rcm:scale:k.lock", "third")
        await backend.aclose()


async def test_lock_computes_once_across_instances_sharing_the_cluster(cluster: LocalCluster) -> None:
    calls = 0

    async def slow(request: Request) -> Response:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.2)
        return JSONResponse({"item": request.path_params["item_id"]})

    instances = [
        CacheMiddleware(
            Starlette(routes=[Route("/items/{item_id}", slow)]),
            redis_url=cluster.url,
            rules=[CacheRule("/items/{item_id}", ttl=60)],
            namespace="scale-lock",
            timeout=0.5,
            lock=True,
        )
        for _ in range(2)
    ]
    try:
        async with client_for(instances[0]) as first, client_for(instances[1]) as second:
            responses = await asyncio.gather(*(c.get("/items/one") for c in [first, second] * 5))
    finally:
        for instance in instances:
            await instance.aclose()
    assert {r.status_code for r in responses} == {200}
    assert calls == 1


async def test_a_dead_primary_bypasses_its_own_keys_while_the_others_keep_hitting(tmp_path: Path) -> None:
    """Without replicas the dead node's slots are lost; its errors are partial, so the circuit breaker
    stays closed and the live nodes keep serving hits."""
    cluster = LocalCluster(tmp_path, primaries=3).start()
    cache = cached(redis_url=cluster.url, timeout=0.5)  # a loaded CI machine must not add timeouts here
    items = [f"item-{i}" for i in range(30)]
    try:
        async with client_for(cache) as client:
            await get_items(client, items)
            victim = cluster.nodes[0]
            on_victim = len(cache_keys(victim))
            victim.kill()
            rounds = [await get_items(client, items) for _ in range(3)]
    finally:
        await cache.aclose()
        cluster.stop()
    assert 0 < on_victim < len(items)
    bypassed = [
        {item for item, r in zip(items, rs, strict=True) if r.headers["x-cache"] == "BYPASS"} for rs in rounds
    ]
    assert len(bypassed[0]) == on_victim
    assert bypassed[0] == bypassed[1] == bypassed[2]
    for responses in rounds:
        assert {r.headers["x-cache"] for r in responses if r.headers["x-cache"] != "BYPASS"} == {"HIT"}
    assert cache.breaker.state == "closed"


async def test_primary_killed_with_a_replica_fails_over_and_hits_resume(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, primaries=3, replicas=1, node_timeout_ms=500).start()
    cache = cached(redis_url=cluster.url)
    items = [f"item-{i}" for i in range(30)]
    try:
        async with client_for(cache) as client:
            await get_items(client, items)
            victim = cluster.primaries()[0]
            victim.kill()
            recovered_after = await seconds_until_all_hit(client, items, within=10)
        assert len(cluster.primaries()) == 3, "a replica took over the dead primary's slots"
    finally:
        await cache.aclose()
        cluster.stop()
    assert recovered_after is not None, "hits did not resume after the failover"


async def test_sentinel_url_finds_the_primary_and_hits(tmp_path: Path) -> None:
    primary = RedisServer(tmp_path / "primary").start()
    sentinel = LocalSentinel(tmp_path / "sentinel", primary).start()
    cache = cached(redis_url=sentinel.url(db=2), timeout=0.5)
    try:
        async with client_for(cache) as client:
            first = await get_items(client, ["a", "b"])
            second = await get_items(client, ["a", "b"])
        with primary.client() as admin:
            keyspace = admin.info("keyspace")
    finally:
        await cache.aclose()
        sentinel.kill()
        primary.kill()
    assert [r.headers["x-cache"] for r in first + second] == ["MISS", "MISS", "HIT", "HIT"]
    assert keyspace["db2"]["keys"] == 3  # the two entries and the namespace's shared counters


async def test_sentinel_url_follows_a_failover(tmp_path: Path) -> None:
    primary = RedisServer(tmp_path / "primary", "--repl-diskless-sync-delay", "0").start()
    replica = RedisServer(tmp_path / "replica", "--replicaof", "127.0.0.1", str(primary.port)).start()
    sentinel = LocalSentinel(tmp_path / "sentinel", primary, down_after_ms=500).start()
    cache = cached(redis_url=sentinel.url(), timeout=0.5)  # a loaded CI machine: 50 ms is too tight to prime
    items = [f"item-{i}" for i in range(10)]
    try:
        async with client_for(cache) as client:
            await get_items(client, items)
            _wait_until_replicated(replica, len(items))
            sentinel.wait_for_replicas(1)
            primary.kill()
            recovered_after = await seconds_until_all_hit(client, items, within=10)
        with replica.client() as admin:
            role = admin.info("replication")["role"]
    finally:
        await cache.aclose()
        sentinel.kill()
        replica.kill()
        primary.kill()
    assert recovered_after is not None, "hits did not resume on the promoted replica"
    assert role == "master"


def _wait_until_replicated(replica: RedisServer, keys: int) -> None:
    deadline = time.monotonic() + 5
    with replica.client() as client:
        while client.dbsize() < keys:
            assert time.monotonic() < deadline, "the replica did not catch up"
            time.sleep(0.02)


async def test_unix_socket_url(tmp_path: Path) -> None:
    socket_path = tmp_path / "redis.sock"
    server = RedisServer(
        tmp_path / "data", "--unixsocket", str(socket_path), "--unixsocketperm", "700"
    ).start()
    backend = RedisBackend.from_url(f"unix://{socket_path}?db=3", timeout=0.5)
    try:
        assert isinstance(backend.client, Redis)
        assert backend.client.connection_pool.connection_class is UnixDomainSocketConnection
        await backend.set("k", b"over a unix socket", 60)
        assert await backend.get("k") == b"over a unix socket"
        with server.client() as admin:
            admin.select(3)
            assert admin.get("k") == b"over a unix socket"
    finally:
        await backend.aclose()
        server.kill()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_rediss_url_speaks_tls(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    tls_port = free_port()
    server = RedisServer(
        tmp_path / "data",
        *("--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key)),
        *("--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"),
    ).start()
    backend = RedisBackend.from_url(f"rediss://127.0.0.1:{tls_port}/0", timeout=0.5, ssl_ca_certs=str(cert))
    try:
        assert backend.client.connection_pool.connection_class is SSLConnection  # type: ignore[union-attr]
        await backend.set("k", b"over TLS", 60)
        assert await backend.get("k") == b"over TLS"
    finally:
        await backend.aclose()
        server.kill()


def test_cluster_url_lists_every_startup_node_with_the_backend_settings() -> None:
    backend = RedisBackend.from_url(
        "redis+cluster://user:s%40cret@10.0.0.1:7000,10.0.0.2,[::1]:7002?client_name=web",
        timeout=0.02,
        connect_timeout=0.3,
    )
    client = backend.client
    assert isinstance(client, RedisCluster)
    nodes = {(node.host, int(node.port)) for node in client.startup_nodes}
    assert nodes == {("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7002)}
    assert client.retry.get_retries() == 0
    assert client.nodes_manager.require_full_coverage is False
    kwargs = client.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.02, 0.3)
    assert (kwargs["username"], kwargs["password"], kwargs["client_name"]) == ("user", "s@cret", "web")
    assert kwargs["max_connections"] == backend.max_connections


def test_sentinel_url_names_the_service_and_db_and_bounds_sentinel_calls() -> None:
    backend = RedisBackend.from_url(
        "redis+sentinel://:pw@10.0.0.1:26380,10.0.0.2/cache/4", timeout=0.02, connect_timeout=0.3
    )
    assert isinstance(backend.client, Redis)
    pool = backend.client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "cache"
    assert [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
        for s in pool.sentinel_manager.sentinels
    ] == [("10.0.0.1", 26380), ("10.0.0.2", 26379)]
    for sentinel in pool.sentinel_manager.sentinels:
        assert sentinel.connection_pool.connection_kwargs["socket_timeout"] == 0.02
        assert sentinel.connection_pool.connection_kwargs["socket_connect_timeout"] == 0.3
    kwargs = pool.connection_kwargs
    assert (kwargs["db"], kwargs["password"], kwargs["socket_timeout"]) == (4, "pw", 0.02)
    assert kwargs["retry"].get_retries() == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379",
        "redis+cluster://127.0.0.1:7000/1",
        "redis+sentinel://127.0.0.1:26379",
        "redis+sentinel://127.0.0.1:26379/service/0/extra",
        "redis+cluster://,127.0.0.1:7000",
    ],
)
def test_malformed_urls_are_rejected(url: str) -> None:
    with pytest.raises(ValueError):
        RedisBackend.from_url(url)

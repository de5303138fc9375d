"""TieredBackend on a Redis Cluster and behind Sentinel: every primary's changes reach L1, whoever makes
them, and a failover (a primary killed, or a manual one that leaves the old primary running) bypasses L1
until the new primary is tracked."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster as SyncCluster

from redis_cache_middleware import BackendError
from redis_cache_middleware.backends.tiered import TieredBackend

from .redis_cluster import LocalCluster, LocalSentinel
from .redis_server import RedisServer
from .test_tiered import INVALIDATION_BOUND, eventually, tiered
from .test_tiered_tracking import in_l1

KEYS = [f"rcm:tc:{i}" for i in range(12)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three primaries with a replica each, so that a manual failover has somewhere to go."""
    cluster = LocalCluster(tmp_path_factory.mktemp("tiered-cluster"), primaries=3, replicas=1).start()
    yield cluster
    cluster.stop()


def plain_client(cluster: LocalCluster) -> SyncCluster:
    """A redis-py cluster client of its own: writes that do not go through this library."""
    node = cluster.primaries()[0]
    return SyncCluster(host="127.0.0.1", port=node.port, socket_timeout=2)


def owner(cluster: LocalCluster, plain: SyncCluster, key: str) -> RedisServer:
    port = int(plain.get_node_from_key(key).port)  # type: ignore[no-untyped-call]
    return next(node for node in cluster.nodes if node.port == port)


async def readable(backend: TieredBackend, key: str, within: float = 10.0) -> bytes | None:
    """`key`'s value, once the backend's cluster client reaches its primary again."""
    deadline = time.monotonic() + within
    while True:
        with contextlib.suppress(BackendError):
            return await backend.get(key)
        assert time.monotonic() < deadline, f"{key} never readable"
        await asyncio.sleep(0.05)


async def tracked(backend: TieredBackend, within: float = 10.0) -> None:
    """Wait until every primary is tracked (reads that fail while the cluster settles are ignored)."""
    deadline = time.monotonic() + within
    while not backend.subscribed:
        assert time.monotonic() < deadline, "tracking never came up on every primary"
        with contextlib.suppress(BackendError):
            await backend.get("rcm:tc:warm-up")
        await asyncio.sleep(0.02)


async def lost(backend: TieredBackend, within: float) -> None:
    """Wait until tracking is down; if it never goes, fail with where every task of the loop waits."""
    deadline = time.monotonic() + within
    while backend.subscribed:
        if time.monotonic() > deadline:
            waits = "\n".join(awaiting(task) for task in asyncio.all_tasks())
            pytest.fail(f"the lost connection was not noticed in {within} s: {backend.stats()}\n{waits}")
        await asyncio.sleep(0.005)


def awaiting(task: asyncio.Task[Any]) -> str:
    """`task`'s name and the chain of coroutines it waits in, innermost last."""
    chain: list[str] = []
    awaited: Any = task.get_coro()
    while awaited is not None and hasattr(awaited, "cr_frame"):
        frame = awaited.cr_frame
        if frame is not None:
            chain.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
        awaited = awaited.cr_await
    return f"{task.get_name()}: {' > '.join(chain)} > {awaited!r}"


@pytest.fixture
async def pair(cluster: LocalCluster) -> AsyncIterator[tuple[TieredBackend, TieredBackend]]:
    with plain_client(cluster) as plain:
        plain.delete(*KEYS)
    a, b = tiered(cluster.url), tiered(cluster.url)
    await tracked(a)
    await tracked(b)
    yield a, b
    await a.aclose()
    await b.aclose()


async def test_changes_on_every_primary_reach_l1(
    cluster: LocalCluster, pair: tuple[TieredBackend, TieredBackend]
) -> None:
    a, b = pair
    with plain_client(cluster) as plain:
        assert len({owner(cluster, plain, key).port for key in KEYS}) == 3, "the keys span every primary"
        await a.set_many([(key, b"v1", 60) for key in KEYS])
        for key in KEYS:
            await in_l1(b, key, b"v1")
        assert await b.get_many(KEYS) == [b"v1"] * len(KEYS)
        by_library, by_plain, deleted, expired = KEYS[0:3], KEYS[3:6], KEYS[6:9], KEYS[9:12]
        for key in by_library:
            await a.set(key, b"v2", 60)
        for key in by_plain:
            plain.set(key, b"v2")
        plain.delete(*deleted)
        for key in expired:
            plain.pexpire(key, 20)
        for key in KEYS:
            expected = b"v2" if key in by_library + by_plain else None
            assert await eventually(functools.partial(b.get, key), expected) < INVALIDATION_BOUND
    assert b.subscribed and b.stats()["subscription_losses"] == 0


async def test_a_killed_tracking_connection_on_one_node_bypasses_l1(
    cluster: LocalCluster, pair: tuple[TieredBackend, TieredBackend]
) -> None:
    _, b = pair
    with plain_client(cluster) as plain:
        plain.set(KEYS[0], b"v1")
        await in_l1(b, KEYS[0], b"v1")
        with owner(cluster, plain, KEYS[1]).client() as node:
            assert node.client_kill_filter(_type="pubsub") >= 1
        deadline = time.monotonic() + 2
        while b.subscribed:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)
        assert b.stats()["l1_bytes"] == 0
        plain.set(KEYS[0], b"v2")
        assert await b.get(KEYS[0]) == b"v2"
        await tracked(b)
        await in_l1(b, KEYS[0], b"v2")
        plain.set(KEYS[0], b"v3")
        assert await eventually(lambda: b.get(KEYS[0]), b"v3") < INVALIDATION_BOUND


async def test_a_manual_failover_moves_tracking_to_the_new_primary(
    cluster: LocalCluster, pair: tuple[TieredBackend, TieredBackend]
) -> None:
    """The old primary stays up (its connection never breaks): the topology check notices the change."""
    _, b = pair
    key = KEYS[0]
    with plain_client(cluster) as plain:
        plain.set(key, b"v1")
        await in_l1(b, key, b"v1")
        old = owner(cluster, plain, key)
        with old.client() as node:
            replica_port = int(node.info("replication")["slave0"]["port"])
        replica = next(node for node in cluster.nodes if node.port == replica_port)
        with replica.client() as promoted:
            promoted.execute_command("CLUSTER FAILOVER")
        deadline = time.monotonic() + 10
        while b.stats()["subscription_losses"] == 0:
            assert time.monotonic() < deadline, "the new primary was not noticed"
            await asyncio.sleep(0.01)
        await tracked(b)
        assert replica in cluster.primaries() and old not in cluster.primaries()
        for _ in range(50):  # the plain client learns of the move on a MOVED reply
            with contextlib.suppress(Exception):
                plain.set(key, b"v2")
                break
            await asyncio.sleep(0.1)
        assert await readable(b, key) == b"v2"
        await in_l1(b, key, b"v2")
        with replica.client() as new_primary:
            new_primary.set(key, b"v3")  # straight on the promoted node
        assert await eventually(lambda: b.get(key), b"v3") < INVALIDATION_BOUND


async def test_writes_missed_during_a_failover_are_bounded_by_l1_max_ttl(cluster: LocalCluster) -> None:
    """Replicas announce nothing, so a write on a just-promoted primary is lost until the topology check
    runs (here, with a 10 s heartbeat, not during the test): `l1_max_ttl` still bounds the staleness."""
    backend = tiered(cluster.url, l1_max_ttl=0.5, heartbeat=10.0)
    key = KEYS[1]
    try:
        await tracked(backend)
        with plain_client(cluster) as plain:
            plain.set(key, b"v1")
            old = owner(cluster, plain, key)
            with old.client() as node:
                replica_port = int(node.info("replication")["slave0"]["port"])
                deadline = time.monotonic() + 5
                while (
                    node.info("replication")["slave0"]["offset"]
                    < node.info("replication")["master_repl_offset"]
                ):
                    assert time.monotonic() < deadline, "the replica did not catch up"
                    await asyncio.sleep(0.02)
        replica = next(node for node in cluster.nodes if node.port == replica_port)
        with replica.client() as promoted:
            promoted.execute_command("CLUSTER FAILOVER")
            deadline = time.monotonic() + 10
            while promoted.info("replication")["role"] != "master":
                assert time.monotonic() < deadline, "the failover did not happen"
                await asyncio.sleep(0.02)
            assert await readable(backend, key) == b"v1"
            await in_l1(backend, key, b"v1")  # read from the new primary, which nobody tracks yet
            promoted.set(key, b"v2")
        written = time.monotonic()
        assert await backend.get(key) == b"v1", "the invalidation is lost: L1 still serves the old value"
        assert backend.subscribed and backend.stats()["subscription_losses"] == 0
        while await backend.get(key) != b"v2":
            assert time.monotonic() - written < 0.5 + 0.3, "stale for longer than l1_max_ttl"
            await asyncio.sleep(0.005)
    finally:
        await backend.aclose()


@pytest.mark.parametrize("how", ["kill", "pause"])
async def test_a_lost_primary_bypasses_l1_until_its_replica_is_tracked(tmp_path: Path, how: str) -> None:
    """Killed, its connection breaks at once; paused (a partition), only the heartbeat notices."""
    cluster = LocalCluster(tmp_path, primaries=3, replicas=1).start()
    backend = tiered(cluster.url)
    key = KEYS[0]
    try:
        with plain_client(cluster) as plain:
            await tracked(backend)
            plain.set(key, b"v1")
            await in_l1(backend, key, b"v1")
            victim = owner(cluster, plain, key)
            survivor_key = next(k for k in KEYS if owner(cluster, plain, k) is not victim)
            plain.set(survivor_key, b"alive")
            victim.kill() if how == "kill" else victim.pause()
            await lost(backend, within=2)
            assert backend.stats()["l1_bytes"] == 0
            hits = backend.l1_hits
            assert [await backend.get(survivor_key) for _ in range(3)] == [b"alive"] * 3
            assert backend.l1_hits == hits, "L1 is bypassed while a primary is not tracked"
            await tracked(backend, within=15)
            if how == "pause":
                victim.kill()  # a paused node would not answer `primaries()` below
            assert victim not in cluster.primaries() and len(cluster.primaries()) == 3
            for _ in range(100):  # the plain client finds the promoted replica
                with contextlib.suppress(Exception):
                    assert plain.get(key) == b"v1"
                    break
                await asyncio.sleep(0.1)
            assert await readable(backend, key) == b"v1"
            await in_l1(backend, key, b"v1")
            plain.set(key, b"v2")
            assert await eventually(lambda: backend.get(key), b"v2") < INVALIDATION_BOUND
    finally:
        await backend.aclose()
        cluster.stop()


async def test_a_paused_primary_is_noticed_while_every_connection_is_idle(tmp_path: Path) -> None:
    """Idle connections time out together, so the paused one fails as the others send their PING: the
    others must still stop (on Python 3.11 a send can drop the cancellation) and tracking go down."""
    cluster = LocalCluster(tmp_path, primaries=3, node_timeout_ms=60_000).start()  # no failover
    backend = tiered(cluster.url)
    try:
        for round_ in range(6):
            await tracked(backend)
            await asyncio.sleep(0.5 + round_ * 0.03)  # every connection idle, past a heartbeat
            victim = cluster.nodes[round_ % 3]
            victim.pause()
            try:
                await lost(backend, within=1.5)
            finally:
                victim.resume()
        assert backend.stats()["subscription_losses"] == 6
    finally:
        await backend.aclose()
        cluster.stop()


async def test_a_sentinel_failover_moves_tracking_to_the_new_master(tmp_path: Path) -> None:
    """`SENTINEL FAILOVER` leaves the old master running as a replica: the master check notices."""
    primary = RedisServer(tmp_path / "primary", "--repl-diskless-sync-delay", "0").start()
    replica = RedisServer(tmp_path / "replica", "--replicaof", "127.0.0.1", str(primary.port)).start()
    sentinel = LocalSentinel(tmp_path / "sentinel", primary, down_after_ms=500).start()
    backend = tiered(sentinel.url())
    key = KEYS[0]
    try:
        await tracked(backend)
        with primary.client() as old_master:
            old_master.set(key, b"v1")
        await in_l1(backend, key, b"v1")
        with replica.client() as copy:
            deadline = time.monotonic() + 5
            while copy.get(key) != b"v1":
                assert time.monotonic() < deadline, "the replica did not catch up"
                await asyncio.sleep(0.02)
        sentinel.wait_for_replicas(1)
        with redis.Redis(host="127.0.0.1", port=sentinel.port, socket_timeout=2) as admin:
            for _ in range(100):  # NOGOODSLAVE until the sentinel has seen the replica in sync
                try:
                    admin.execute_command("SENTINEL FAILOVER", sentinel.service)
                    break
                except redis.ResponseError:
                    await asyncio.sleep(0.1)
        deadline = time.monotonic() + 15
        while backend.stats()["subscription_losses"] == 0:
            assert time.monotonic() < deadline, "the new master was not noticed"
            await asyncio.sleep(0.01)
        await tracked(backend)
        with replica.client() as new_master:
            assert new_master.info("replication")["role"] == "master"
            assert await readable(backend, key) == b"v1"
            await in_l1(backend, key, b"v1")
            new_master.set(key, b"v2")
        assert await eventually(lambda: backend.get(key), b"v2") < INVALIDATION_BOUND
    finally:
        await backend.aclose()
        sentinel.kill()
        replica.kill()
        primary.kill()

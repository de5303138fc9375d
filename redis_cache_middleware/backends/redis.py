"""Redis backend on `redis.asyncio` (single node, Cluster or Sentinel): bounded calls, never retried."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import SplitResult, unquote, urlsplit

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.maint_notifications import MaintNotificationsConfig

from .base import BackendError, PartialBackendError
from .pipeline import Pipeline, StillConnecting

DEFAULT_TIMEOUT = 0.05
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_NODE_COOLDOWN = 1.0
NODE_FAILURES_BEFORE_COOLDOWN = 3
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SINGLE_NODE_SCHEMES = ("redis", "rediss", "unix")

# redis-py 8 skips its check for closed or unread connections on pool checkout while maintenance
# notifications are in "auto" mode; turning them off (they need RESP3 anyway) restores it.
_POOL_CHECKS: dict[str, Any] = {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
_T = TypeVar("_T")
_Closer = Callable[[], Awaitable[None]]


class RedisBackend:
    """Stores entries with `SET key value PX ttl`; any error or timeout raises `BackendError`, never retried.

    Each call waits for one of `max_connections` slots, then runs one command; the whole call is cut off
    after `max(timeout, connect_timeout)` s. Pass a client built by `from_url` or set up the same way
    (socket timeouts, `Retry(NoBackoff(), 0)`): a `Redis`, a `RedisCluster` or a Sentinel `master_for`.
    On a cluster, a node whose connections failed 3 times in a row fails its keys at once for
    `node_cooldown` s, then one call probes it: a dead node neither slows the other nodes' keys nor
    triggers a topology refresh per request.
    """

    asyncio_only = True  # redis-py runs on asyncio only: under trio the cache stands aside

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        node_cooldown: float = DEFAULT_NODE_COOLDOWN,
        pipeline: Pipeline | None = None,
    ) -> None:
        if not timeout > 0 or (connect_timeout is not None and not connect_timeout > 0):
            raise ValueError("RedisBackend timeout and connect_timeout must be positive")
        if not node_cooldown >= 0:
            raise ValueError("RedisBackend node_cooldown must not be negative")
        if max_connections < 1:
            raise ValueError("RedisBackend max_connections must be at least 1")
        self.client = client
        self.timeout = timeout
        self.connect_timeout = connect_timeout if connect_timeout is not None else timeout
        self.max_connections = max_connections
        self.node_cooldown = node_cooldown
        self._node_failures: dict[str, int] = {}
        self._down_until: dict[str, float] = {}
        self._deadline = max(self.timeout, self.connect_timeout)
        self._slots = asyncio.Semaphore(max_connections)
        self._closers: list[_Closer] = [client.aclose]
        self._pipeline = pipeline

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        node_cooldown: float = DEFAULT_NODE_COOLDOWN,
        **options: Any,
    ) -> RedisBackend:
        """A backend on a new client for `url`: `redis://`, `rediss://`, `unix://` (one node),
        `redis+cluster://h:p[,h:p...]` (Redis Cluster) or `redis+sentinel://h:p[,h:p...]/service[/db]`.

        `timeout` becomes the socket timeout, `connect_timeout` (default `timeout`) the connect timeout;
        retries are off. `options` go to the redis-py client; the URL's query string wins over them.
        """
        connect = connect_timeout if connect_timeout is not None else timeout
        settings: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": connect,
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
            "max_connections": max_connections,
            **options,
        }
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        closers: list[_Closer] = []
        client: Redis | RedisCluster
        pipeline: Pipeline | None = None
        if scheme in CLUSTER_SCHEMES:
            client = _cluster_client(parts, settings)
        elif scheme in SENTINEL_SCHEMES:
            sentinel, client = _sentinel_client(parts, {**_POOL_CHECKS, **settings})
            closers.append(sentinel.aclose)
        elif scheme in SINGLE_NODE_SCHEMES:
            client = Redis.from_url(url, **{**_POOL_CHECKS, **settings})
            pipeline = Pipeline.from_url(url) if not options else None
        else:
            known = ", ".join(f"{s}://" for s in (*SINGLE_NODE_SCHEMES, *CLUSTER_SCHEMES, *SENTINEL_SCHEMES))
            raise ValueError(f"Redis URL scheme must be one of {known}: {url!r}")
        backend = cls(
            client,
            timeout=timeout,
            connect_timeout=connect,
            max_connections=max_connections,
            node_cooldown=node_cooldown,
            pipeline=pipeline,
        )
        backend._closers.extend(closers)
        return backend

    async def get(self, key: str) -> bytes | None:
        """One `GET`: on a single node made by `from_url`, over the pipelined connection; otherwise through
        the client."""
        if self._pipeline is not None:
            return await self._pipelined("GET", self._pipeline.get, key)
        value = await self._call("GET", lambda: self.client.get(key), key)
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        milliseconds = max(1, math.ceil(ttl * 1000))
        if self._pipeline is not None:
            await self._pipelined("SET", self._pipeline.set, key, value, milliseconds)
            return
        await self._call("SET", lambda: self.client.set(key, value, px=milliseconds), key)

    async def delete(self, keys: Sequence[str]) -> int:
        """UNLINK `keys`; on a cluster redis-py sends one UNLINK per hash slot."""
        if not keys:
            return 0
        deleted = await self._call("UNLINK", lambda: self.client.unlink(*keys))
        return int(deleted)

    async def acquire(self, key: str, token: str, ttl: float) -> bool:
        """Take the lease `key` for `ttl` s unless someone holds it (`SET NX PX`)."""
        px = max(1, math.ceil(ttl * 1000))
        if self._pipeline is not None:
            return await self._pipelined("SET NX", self._pipeline.set_if_absent, key, token.encode(), px)
        taken = await self._call("SET NX", lambda: self.client.set(key, token, nx=True, px=px), key)
        return bool(taken)

    async def release(self, key: str, token: str) -> None:
        """Give the lease back if `token` still holds it (compare and delete in one script)."""
        await self._call("lease release", lambda: self.client.eval(_RELEASE, 1, key, token), key)

    def warm(self) -> None:
        """Start opening the pipelined connection now (from a running loop), so the first burst of
        requests does not wait for it."""
        if self._pipeline is not None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no asyncio loop running (built outside one, or under trio)
                return
            task = loop.create_task(self._pipeline.connect(self.connect_timeout))
            task.add_done_callback(lambda done: done.cancelled() or done.exception())

    async def _pipelined(self, name: str, command: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        """Run a pipeline command: connecting bounded by `connect_timeout`, the reply by `timeout`."""
        assert self._pipeline is not None
        try:
            if not self._pipeline.connected:
                await self._pipeline.connect(self.connect_timeout)
            return await command(*args, within=self.timeout)
        except StillConnecting as exc:  # the attempt goes on; its own failure, if any, is what counts
            raise PartialBackendError(f"{name} skipped: {exc}") from exc
        except Exception as exc:
            raise BackendError(f"{name} failed: {type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        if self._pipeline is not None:
            self._pipeline.close()
        for close in self._closers:
            with contextlib.suppress(Exception):
                await close()

    async def _call(self, name: str, command: Callable[[], Awaitable[_T]], key: str | None = None) -> _T:
        """Run `command` within the deadline on one of the slots; any exception becomes `BackendError`.

        Catches `Exception`, not only `RedisError`: the cluster client also raises other types
        (`RedisClusterException`, `SlotNotCoveredError`), and none of them may reach the request.
        """
        node: str | None = None
        try:
            async with asyncio.timeout(self._deadline), self._slots:
                node = await self._cluster_node(key)
                try:
                    result = await command()
                except (RedisConnectionError, RedisTimeoutError) as exc:
                    if node is not None and not isinstance(exc, MaxConnectionsError):
                        self._node_failed(node)
                    raise
                if node is not None:
                    self._node_failures.pop(node, None)
                    self._down_until.pop(node, None)
                return result
        except Exception as exc:
            reason = str(exc) or f"no reply within {self._deadline} s"
            one_node = isinstance(exc, _NodeCoolingDown) or (
                node is not None and isinstance(exc, RedisConnectionError | RedisTimeoutError | TimeoutError)
            )
            error = PartialBackendError if one_node else BackendError
            raise error(f"{name} failed: {type(exc).__name__}: {reason}") from exc

    async def _cluster_node(self, key: str | None) -> str | None:
        """The name of the cluster node serving `key` (None for a single node or no key).

        Raises while that node cools down, letting one caller through as the probe once it has. A client
        without a slot map is initialised first: redis-py would otherwise send each command to a random
        node, and refresh the whole topology (dropping every open connection) after a few MOVED replies.
        """
        client = self.client
        if not isinstance(client, RedisCluster):
            return None
        if client.get_default_node() is None:
            await client.initialize()
        if key is None:
            return None
        node = client.get_node_from_key(key)
        if node is None:
            return None
        until = self._down_until.get(node.name)
        if until is not None:
            now = time.monotonic()
            if now < until:
                raise _NodeCoolingDown(
                    f"cluster node {node.name} failed less than {self.node_cooldown} s ago"
                )
            self._down_until[node.name] = now + self.node_cooldown
        return str(node.name)

    def _node_failed(self, node: str) -> None:
        failures = self._node_failures.get(node, 0) + 1
        self._node_failures[node] = failures
        if failures >= NODE_FAILURES_BEFORE_COOLDOWN:
            self._down_until[node] = time.monotonic() + self.node_cooldown


def _nodes(netloc: str, default_port: int) -> tuple[str, list[tuple[str, int]]]:
    """The `user:password@` part (with its `@`) and the `(host, port)` list of `h1:p1,h2:p2`."""
    userinfo, at, hosts = netloc.rpartition("@")
    nodes: list[tuple[str, int]] = []
    for item in hosts.split(","):
        item = item.strip()
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            host, _, port = item.partition(":")
        if not host:
            raise ValueError(f"Redis URL has an empty host in {netloc!r}")
        nodes.append((unquote(host), int(port) if port else default_port))
    return userinfo + at, nodes


def _client_options(scheme: str, userinfo: str, db: str, query: str) -> dict[str, Any]:
    """Credentials, db, TLS and query options of a multi-host URL, parsed as redis-py parses its URLs."""
    parsed: dict[str, Any] = dict(parse_url(f"{scheme}://{userinfo}localhost/{db}?{query}"))
    parsed.pop("host", None)
    parsed.pop("port", None)
    if parsed.pop("connection_class", None) is SSLConnection:
        parsed["ssl"] = True
    return parsed


def _cluster_client(parts: SplitResult, settings: dict[str, Any]) -> RedisCluster:
    """A `RedisCluster` on the listed startup nodes: no retries, slots served even when others are not
    covered, and a MOVED reply updates that slot only (a full refresh would drop every open connection)."""
    userinfo, nodes = _nodes(parts.netloc, 6379)
    base = parts.scheme.lower().removesuffix("+cluster")
    options = {"require_full_coverage": False, "reinitialize_steps": 0, **settings}
    options.update(_client_options(base, userinfo, parts.path.strip("/"), parts.query))
    if options.get("db"):
        raise ValueError("Redis Cluster has only database 0")
    options.pop("db", None)
    return RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in nodes], **options)


def _sentinel_client(parts: SplitResult, settings: dict[str, Any]) -> tuple[Sentinel, Redis]:
    """The primary of `/service[/db]` as the listed sentinels report it; TLS options apply to both."""
    userinfo, nodes = _nodes(parts.netloc, 26379)
    base = parts.scheme.lower().removesuffix("+sentinel")
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not 1 <= len(path) <= 2:
        raise ValueError("a redis+sentinel:// URL needs /service_name or /service_name/db as its path")
    options = {**settings, **_client_options(base, userinfo, path[1] if len(path) == 2 else "", parts.query)}
    sentinel_options = {
        name: value
        for name, value in options.items()
        if name.startswith(("socket_", "ssl")) or name in ("retry", "health_check_interval")
    }
    sentinel = Sentinel(nodes, sentinel_kwargs=sentinel_options, **options)  # type: ignore[no-untyped-call]
    primary: Redis = sentinel.master_for(path[0])
    return sentinel, primary


class _NodeCoolingDown(RedisConnectionError):
    """A cluster node that failed recently is skipped until its cool-down ends."""

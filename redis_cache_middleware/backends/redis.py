"""Redis backend on `redis.asyncio` (single node, Cluster or Sentinel): bounded calls, never retried."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import pernode, purging
from .base import BackendError, PartialBackendError
from .clients import SINGLE_NODE_SCHEMES, Closer, client_for_url
from .failures import MISCONFIGURED, failure_cause
from .nodes import NodeCooldown, NodeCoolingDown
from .pipeline import ConnectionReplaced, Pipeline, PipelineError, StillConnecting
from .scripts import RELEASE

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 0.05
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_NODE_COOLDOWN = 1.0

DEFAULT_PURGE_BATCH = 500
_T = TypeVar("_T")


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
        self._cooldown = NodeCooldown(node_cooldown)
        self._deadline = max(self.timeout, self.connect_timeout)
        self._slots = asyncio.Semaphore(max_connections)
        self._closers: list[Closer] = [client.aclose]
        self._pipeline = pipeline
        self._down_cause: str | None = None

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
        client, closers = client_for_url(url, settings)
        single = urlsplit(url).scheme.lower() in SINGLE_NODE_SCHEMES
        pipeline = Pipeline.from_url(url) if single and not options else None
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
        pipeline = self._pipeline
        if pipeline is not None:  # the hit path: this coroutine waits on the reply's future itself
            try:
                reply = await pipeline.get(key, self.timeout, self.connect_timeout)
            except Exception as exc:
                raise self._pipeline_error("GET", exc) from exc
            if reply is not None and not isinstance(reply, bytes):
                error = PipelineError(f"unexpected reply to GET: {type(reply).__name__}")
                raise self._pipeline_error("GET", error)
            if self._down_cause is not None:
                self._recovered()
            return reply
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
        await self._call("lease release", lambda: self.client.eval(RELEASE, 1, key, token), key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of `keys` in order, None where absent: one `MGET` on a single node; on a cluster one
        pipeline of GETs per node, the nodes in parallel (`PartialBackendError` when some nodes fail)."""
        if not keys:
            return []
        if self._pipeline is not None:
            return await self._pipelined("MGET", self._pipeline.get_many, list(keys))
        if not isinstance(self.client, RedisCluster):
            client = self.client
            values = await self._call("MGET", lambda: client.mget(list(keys)))
            return [value if isinstance(value, bytes) else None for value in values]

        def gets(pipe: Any, index: int) -> None:
            pipe.get(keys[index])

        replies = await self.per_node("MGET", keys, gets)
        return [value if isinstance(value, bytes) else None for value in replies]

    async def set_many(self, items: Sequence[tuple[str, bytes, float]]) -> None:
        """`SET key value PX ttl` for each item, all written at once (one round trip per node)."""
        if not items:
            return
        timed = [(key, value, max(1, math.ceil(ttl * 1000))) for key, value, ttl in items]
        if self._pipeline is not None:
            await self._pipelined("SET", self._pipeline.set_many, timed)
            return

        def sets(pipe: Any, index: int) -> None:
            key, value, milliseconds = timed[index]
            pipe.set(key, value, px=milliseconds)

        await self.per_node("SET", [key for key, _, _ in timed], sets)

    async def add_counters(self, key: str, deltas: Mapping[str, float]) -> None:
        """Add each delta to its field of the hash `key` (HINCRBY for whole numbers, else HINCRBYFLOAT),
        in one round trip."""

        async def add() -> None:
            pipe = self.client.pipeline(transaction=False)
            for field, value in deltas.items():
                if float(value).is_integer():
                    pipe.hincrby(key, field, int(value))
                else:
                    pipe.hincrbyfloat(key, field, value)
            await pipe.execute()

        await self._call("HINCRBY", add, key)

    async def add_to_sets(self, sets: Sequence[str], member: str, ttl: float) -> None:
        """`SADD set member`, and the set's expiry raised to at least `ttl` (PEXPIRE NX, then GT; needs
        Redis >= 7.0), for each set, in one round trip per node."""
        if not sets:
            return
        milliseconds = max(1, math.ceil(ttl * 1000))

        def adds(pipe: Any, index: int) -> None:
            pipe.sadd(sets[index], member)
            pipe.pexpire(sets[index], milliseconds, nx=True)
            pipe.pexpire(sets[index], milliseconds, gt=True)

        await self.per_node("SADD", sets, adds)

    async def purge(self, pattern: str, *, batch: int = DEFAULT_PURGE_BATCH) -> int:
        """UNLINK every key matching the glob `pattern` (SCAN MATCH on every primary, `batch` keys at a
        time); the number deleted. Each SCAN and UNLINK is bounded like any call, not the whole purge."""
        return await purging.purge(self, pattern, batch)

    async def purge_set(self, set_key: str, *, batch: int = DEFAULT_PURGE_BATCH) -> int:
        """UNLINK every key listed in the set `set_key` (SSCAN, `batch` at a time), then the set; the
        number of listed keys deleted."""
        return await purging.purge_set(self, set_key, batch)

    async def memory_policy(self) -> tuple[int, str] | None:
        """Redis's `(maxmemory, maxmemory-policy)` by CONFIG GET (on a cluster, one node's), bounded like
        any call; None when CONFIG is not allowed (a managed Redis, an ACL) or Redis cannot be reached."""
        try:
            config = await self._call("CONFIG GET", lambda: self.client.config_get("maxmemory*"))
        except BackendError as exc:
            logger.debug("CONFIG GET maxmemory not available: %s", exc)
            return None
        if isinstance(self.client, RedisCluster) and config and "maxmemory" not in config:
            config = cast(dict[Any, Any], next(iter(cast(dict[Any, Any], config).values())))  # per node
        maxmemory, policy = config.get("maxmemory"), config.get("maxmemory-policy")
        if maxmemory is None or policy is None:
            return None
        as_text = [v.decode() if isinstance(v, bytes) else str(v) for v in (maxmemory, policy)]
        return int(as_text[0]), as_text[1]

    async def call(self, name: str, command: Callable[[], Awaitable[_T]], key: str | None = None) -> _T:
        """Run `command` (a call on `self.client`) within this backend's bounds: one of the
        `max_connections` slots, `max(timeout, connect_timeout)` in all, errors as `BackendError`
        (`PartialBackendError` when `key`'s cluster node alone failed). For layers built on this one."""
        return await self._call(name, command, key)

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
            result = await command(*args, within=self.timeout)
        except Exception as exc:
            raise self._pipeline_error(name, exc) from exc
        if self._down_cause is not None:
            self._recovered()
        return result

    def _pipeline_error(self, name: str, exc: Exception) -> BackendError:
        """The error a failed pipeline command raises; the failure's cause is recorded."""
        if isinstance(exc, ConnectionReplaced):  # one overdue reply closed it: that caller counts, not us
            return PartialBackendError(f"{name} failed: {exc}")
        if isinstance(exc, StillConnecting):  # the attempt goes on (bounded by connect_timeout) without us
            self._failed(exc)
            return BackendError(f"{name} failed: {exc}")
        cause = self._failed(exc)
        return BackendError(f"{name} failed ({cause}): {type(exc).__name__}: {exc}")

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
                        self._cooldown.failed(node)
                    raise
                if node is not None:
                    self._cooldown.succeeded(node)
                if self._down_cause is not None:
                    self._recovered()
                return result
        except Exception as exc:
            reason = str(exc) or f"no reply within {self._deadline} s"
            one_node = isinstance(exc, NodeCoolingDown) or (
                node is not None and isinstance(exc, RedisConnectionError | RedisTimeoutError | TimeoutError)
            )
            error = PartialBackendError if one_node else BackendError
            cause = self._failed(exc)
            raise error(f"{name} failed ({cause}): {type(exc).__name__}: {reason}") from exc

    def _failed(self, exc: BaseException) -> str:
        """The cause of a failure, logged when it differs from the previous one: a warning for those an
        operator must fix (authentication, TLS, DNS), at debug level for outages the breaker reports."""
        cause = failure_cause(exc)
        if cause != self._down_cause:
            self._down_cause = cause
            level = logging.WARNING if cause in MISCONFIGURED else logging.DEBUG
            logger.log(level, "Redis calls failing (%s): %s: %s", cause, type(exc).__name__, exc)
        return cause

    def _recovered(self) -> None:
        level = logging.INFO if self._down_cause in MISCONFIGURED else logging.DEBUG
        logger.log(level, "Redis calls succeed again (after %s failures)", self._down_cause)
        self._down_cause = None

    async def per_node(self, name: str, keys: Sequence[str], add: Callable[[Any, int], None]) -> list[Any]:
        """Queue `add(pipe, i)` for every key in a pipeline per node and run the pipelines in parallel;
        the first reply of each key's commands, in key order. Some nodes failing: `PartialBackendError`.
        For layers built on this one."""
        return await pernode.per_node(self, name, keys, add)

    async def primaries(self) -> list[ClusterNode | None]:
        """The nodes to SCAN: every primary of a cluster; [None] for a single node."""
        client = self.client
        if not isinstance(client, RedisCluster):
            return [None]
        await self._call("CLUSTER SLOTS", lambda: self._cluster_node(None))
        return list(client.get_primaries())

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
        self._cooldown.admit(node.name)
        return str(node.name)

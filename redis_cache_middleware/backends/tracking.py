"""Invalidations pushed by Redis itself (server-assisted client-side caching in broadcasting mode).

For each primary that holds keys (the one node, the Sentinel master, every primary of a Cluster) a
dedicated RESP2 connection runs `CLIENT TRACKING on REDIRECT <its own id> BCAST [PREFIX p]` and
`SUBSCRIBE __redis__:invalidate`: the server then sends it the name of every key under the prefix that
anyone modifies, deletes, expires or evicts, and a null for FLUSHALL/FLUSHDB. The connection dies with
the tracking state, so a lost connection is always noticed. Idle connections are pinged every
`heartbeat`; the set of primaries (Sentinel: the master's address; Cluster: `CLUSTER SLOTS`) is checked
as often, and any change, like any failure, ends the session: the listener hears `tracking_down`, and a
new session starts over from discovery, with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, Protocol

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import ResponseError

logger = logging.getLogger(__name__)

INVALIDATE_CHANNEL = b"__redis__:invalidate"
# Our own connection's settings: RESP2 (the documented route to invalidations over pub/sub), raw bytes,
# and no health checks of redis-py's (the heartbeat below does that).
_OWN_SETTINGS: dict[str, Any] = {"protocol": 2, "decode_responses": False, "health_check_interval": 0}
Address = tuple[str, int]


class TrackingListener(Protocol):
    """What a `Tracker` reports to."""

    async def invalidated(self, keys: list[str] | None) -> None:
        """These keys changed in Redis (None: every key, after a flush)."""

    def tracking_up(self) -> None:
        """Every primary's tracking connection is confirmed: invalidations from now on will be heard."""

    def tracking_down(self) -> None:
        """Invalidations may be missed from now on (a connection lost or late, the topology changed)."""


class Tracker:
    """Keeps a tracking connection on every primary of `client` and reports to `listener`.

    `start()` (from a running loop) launches the background task on first use and after it ended;
    `up` is True only while every primary's connection is confirmed and answering.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        listener: TrackingListener,
        *,
        prefix: str,
        heartbeat: float,
        timeout: float,
    ) -> None:
        self.client = client
        self.listener = listener
        self.prefix = prefix
        self.heartbeat = heartbeat
        self.timeout = max(timeout, heartbeat)  # setup and topology checks
        self.up = False
        self.losses = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._refused = False
        self._known: list[Address] = []  # the primaries last found on a Cluster, asked first
        self._attempts = 0

    @property
    def started(self) -> bool:
        """Whether tracking was ever started (the prefix can no longer change)."""
        return self._task is not None

    def start(self) -> None:
        if self._closed or (self._task is not None and not self._task.done()):
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="L1 invalidation tracking")

    async def aclose(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            await _cancel([task])
        self._down()

    def _down(self) -> None:
        self.up = False
        self.listener.tracking_down()

    async def _run(self) -> None:
        delay = 0.05
        while not self._closed:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.up:
                    logger.warning("L1 invalidation tracking lost (%r): L1 bypassed until it is back", exc)
                elif isinstance(exc, ResponseError) and not self._refused:
                    self._refused = True  # CLIENT TRACKING not allowed (an ACL, a proxy, Redis < 6)
                    logger.warning("Redis refused L1 invalidation tracking (%s): L1 bypassed", exc)
                else:
                    logger.debug("L1 invalidation tracking failed: %r", exc)
            finally:
                if self.up and not self._closed:
                    self.losses += 1
                    delay = 0.05
                self._down()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _session(self) -> None:
        """Discover the primaries, track each, then watch until something fails or changes."""
        opened: list[AbstractConnection] = []
        try:
            async with asyncio.timeout(self.timeout):
                primaries, control = await self._discover(opened)
                tracking = [self._connection(address) for address in primaries]
                opened.extend(tracking)
                await asyncio.gather(*(self._track(connection) for connection in tracking))
            self.up = True
            self.listener.tracking_up()
            if self.losses:
                logger.info("L1 invalidation tracking back on %d node(s): L1 in use again", len(tracking))
            watch = self._watch(primaries, control, tracking[0])
            await _first_failure([*(self._receive(connection) for connection in tracking), watch])
        finally:
            for connection in opened:
                with contextlib.suppress(Exception):
                    await connection.disconnect(nowait=True)

    async def _discover(self, opened: list[AbstractConnection]) -> tuple[list[Address], Any]:
        """The primaries to track, and what `_watch` needs: a control connection for a Cluster."""
        client = self.client
        if isinstance(client, Redis):
            pool = client.connection_pool
            kwargs = pool.connection_kwargs  # a Sentinel pool's connections find the master themselves
            return [(str(kwargs.get("host", "")), int(kwargs.get("port", 0)))], None
        seeds = [*self._known, *((node.host, int(node.port)) for node in client.get_nodes())]
        seeds += [(node.host, int(node.port)) for node in client.nodes_manager.startup_nodes.values()]
        seeds = list(dict.fromkeys(seeds))
        self._attempts += 1  # start from another seed each time: a hung one cannot stop every attempt
        turn = self._attempts % len(seeds)
        failure: Exception = RuntimeError("no cluster node to ask for CLUSTER SLOTS")
        for seed in seeds[turn:] + seeds[:turn]:
            control = self._connection(seed)
            opened.append(control)
            try:
                async with asyncio.timeout(self.timeout / 3):
                    self._known = await self._cluster_primaries(control)
                return self._known, control
            except Exception as exc:  # try the next one
                failure = exc
        raise failure

    def _connection(self, address: Address) -> AbstractConnection:
        """A new connection to `address` made like the client's own (TLS, credentials, db), on our own
        settings; its replies may take `self.timeout`, not the request path's short timeout."""
        client = self.client
        own = {**_OWN_SETTINGS, "socket_timeout": self.timeout}
        if isinstance(client, Redis):
            pool = client.connection_pool
            return pool.connection_class(**{**pool.connection_kwargs, **own})
        template = next(iter(client.nodes_manager.startup_nodes.values()))
        kwargs = {**template.connection_kwargs, "host": address[0], "port": address[1], **own}
        return template.connection_class(**kwargs)

    async def _cluster_primaries(self, control: AbstractConnection) -> list[Address]:
        """The primaries that own slots, as `CLUSTER SLOTS` on `control` reports them."""
        assert isinstance(self.client, RedisCluster)
        await control.send_command("CLUSTER", "SLOTS")
        primaries: set[Address] = set()
        for slot_range in await control.read_response():
            host, port = slot_range[2][0], int(slot_range[2][1])
            host = host.decode() if isinstance(host, bytes) else str(host)
            if host in ("", "?"):  # the node does not know its own address: the one we asked
                host = str(control.host)
            primaries.add(self.client.nodes_manager.remap_host_port(host, port))
        if not primaries:
            raise RuntimeError("the cluster has no slots assigned")
        return sorted(primaries)

    async def _track(self, connection: AbstractConnection) -> None:
        """Turn on broadcast tracking of `prefix`, redirected to this connection itself, and subscribe."""
        await connection.connect()  # type: ignore[no-untyped-call]
        await connection.send_command("CLIENT", "ID")
        own_id = await connection.read_response()
        prefix = ("PREFIX", self.prefix) if self.prefix else ()
        await connection.send_command("CLIENT", "TRACKING", "on", "REDIRECT", own_id, "BCAST", *prefix)
        await connection.read_response()
        await connection.send_command("SUBSCRIBE", INVALIDATE_CHANNEL)
        reply = await connection.read_response()
        if not isinstance(reply, list) or reply[0] != b"subscribe":
            raise RuntimeError(f"unexpected reply to SUBSCRIBE: {reply!r}")

    async def _receive(self, connection: AbstractConnection) -> None:
        """Report each invalidation; PING when idle for `heartbeat`, fail when that goes unanswered."""
        loop = asyncio.get_running_loop()
        last_heard, ping_sent = loop.time(), False
        while True:
            message = await connection.read_response(timeout=self.heartbeat)
            now = loop.time()
            if message is None:
                if now - last_heard < self.heartbeat:
                    continue
                if ping_sent:
                    raise TimeoutError(f"no reply to PING within {2 * self.heartbeat:.1f} s")
                await connection.send_command("PING")
                ping_sent = True
                continue
            last_heard, ping_sent = now, False
            if isinstance(message, list) and message[0] == b"message" and message[1] == INVALIDATE_CHANNEL:
                keys = message[2]
                decoded = None if keys is None else [key.decode("utf-8", "surrogateescape") for key in keys]
                await self.listener.invalidated(decoded)

    async def _watch(self, primaries: list[Address], control: Any, first: AbstractConnection) -> None:
        """Return (ending the session) once the primaries differ from those tracked (`first` is the
        connection a Sentinel pool pointed at its master)."""
        client = self.client
        pool = client.connection_pool if isinstance(client, Redis) else None
        if pool is not None:
            if not isinstance(pool, SentinelConnectionPool):
                await asyncio.Event().wait()  # one node: nothing can move
            primaries = [(str(first.host), int(first.port))]  # type: ignore[attr-defined]
        while True:
            await asyncio.sleep(self.heartbeat)
            async with asyncio.timeout(self.timeout):
                if isinstance(pool, SentinelConnectionPool):
                    now = [_address(await pool.get_master_address())]  # type: ignore[no-untyped-call]
                else:
                    now = await self._cluster_primaries(control)
            if now != primaries:
                logger.info("Redis primaries changed from %s to %s: tracking them again", primaries, now)
                return


def _address(address: Any) -> Address:
    host, port = address
    return str(host), int(port)


async def _first_failure(jobs: list[Coroutine[Any, Any, None]]) -> None:
    """Run `jobs` until the first one ends; cancel the others; raise its exception if it failed."""
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await _cancel(tasks)
    for task in done:
        failure = None if task.cancelled() else task.exception()
        if failure is not None:
            raise failure


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel `tasks` and wait until every one has ended, cancelling again any that goes on: on Python
    3.11, `asyncio.wait_for` (in redis-py's every send) drops a cancellation that arrives as the write
    completes, and the task runs on as if never cancelled."""
    pending, interrupted = {task for task in tasks if not task.done()}, False
    while pending:
        for task in pending:
            task.cancel()
        try:
            _, pending = await asyncio.wait(pending, timeout=0.05)
        except asyncio.CancelledError:  # we are cancelled too: first end what we started
            interrupted = True
    if interrupted:
        raise asyncio.CancelledError

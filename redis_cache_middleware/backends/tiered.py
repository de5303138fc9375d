"""Two-tier backend: an in-process LRU (L1) in front of Redis (L2), kept coherent over Redis pub/sub.

Reads look in L1 first (no network call); an L1 miss costs one Redis round trip, a Lua script that
returns the value and its remaining TTL together, so the L1 copy expires no later than the Redis key.
Concurrent L1 misses of one key share that round trip.
Writes and deletes run `SET`/`UNLINK` and `PUBLISH` in one script (one round trip, atomic): every
`TieredBackend` on the channel drops its L1 copy of the key when the message arrives.

Staleness bound. After a value is replaced or deleted in Redis, another process may serve the old value
from its L1 for at most:

- the pub/sub delivery delay, normally (sub-millisecond on loopback, plus the event-loop lag);
- `l1_max_ttl` whatever happens (lost messages, a silently broken subscription, a partition): an L1
  copy is never kept longer than `l1_max_ttl` after it was read from Redis, where it was current.

While the subscription is down (not yet confirmed, connection lost, or no reply to a heartbeat `PING`
within `2 * heartbeat`), L1 is emptied and bypassed: every read goes to Redis, nothing is kept in L1.
A read or write that overlaps an invalidation of, or another local write to, the same key does not fill
L1, so a late reply never puts an old value back.

Writes that bypass this class (redis-cli, another backend, a purge script) publish nothing: their
staleness bound is `l1_max_ttl`, unless they publish on the channel themselves. A message is 16 bytes
identifying the sender (any 16 bytes) followed by the key; an empty key empties every L1
(`broadcast_clear()` sends one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import Redis

from .memory import MemoryBackend
from .redis import RedisBackend
from .scripts import DELETE_AND_PUBLISH, GET_WITH_TTL, SET_AND_PUBLISH, Script

logger = logging.getLogger(__name__)

DEFAULT_CHANNEL = "rcm:l1-invalidate"
_SENDER_LEN = 16


def _consume(task: asyncio.Task[bytes | None]) -> None:
    """Retrieve a shared read's error, so that one no caller waited for is not logged as unhandled."""
    if not task.cancelled():
        task.exception()


class _Flight:
    """Local operations on one key that are waiting for Redis; `dirty` forbids them to fill L1."""

    __slots__ = ("count", "dirty", "writers")

    def __init__(self) -> None:
        self.count = 0
        self.writers = 0
        self.dirty = False


def new_sender() -> bytes:
    """A fresh id for the invalidation messages of one publisher (16 bytes)."""
    return os.urandom(_SENDER_LEN // 2).hex().encode()


def invalidation_message(sender: bytes, key: str) -> bytes:
    """The message on the channel that makes every other L1 drop `key` (every key when `key` is "")."""
    return sender + key.encode("utf-8", "surrogateescape")


class TieredBackend:
    """An in-process L1 (`MemoryBackend`, LRU bounded by `l1_max_bytes`) in front of `l2`.

    `l1_max_ttl` caps how long an L1 copy lives, and so the staleness when an invalidation is lost;
    `channel` is the pub/sub channel shared by every process using the same Redis keys; `heartbeat`
    is how often (seconds) an idle subscription is checked with `PING`. Needs a single-node
    `redis.asyncio.Redis` client (Sentinel masters included; not `RedisCluster`).
    """

    asyncio_only = True  # redis-py runs on asyncio only: under trio the cache stands aside

    def __init__(
        self,
        l2: RedisBackend,
        *,
        l1_max_bytes: int = 32 * 1024 * 1024,
        l1_max_ttl: float = 2.0,
        channel: str = DEFAULT_CHANNEL,
        heartbeat: float = 1.0,
    ) -> None:
        if not isinstance(l2.client, Redis):
            raise TypeError("TieredBackend needs a RedisBackend on a single-node redis.asyncio.Redis client")
        if not l1_max_ttl > 0 or not heartbeat > 0:
            raise ValueError("TieredBackend l1_max_ttl and heartbeat must be positive")
        self.l2 = l2
        self.l1 = MemoryBackend(l1_max_bytes)
        self.l1_max_ttl = float(l1_max_ttl)
        self.channel = channel
        self.heartbeat = heartbeat
        self._client: Redis = l2.client
        self._sender = new_sender()
        self._get_script = Script(GET_WITH_TTL)
        self._set_script = Script(SET_AND_PUBLISH)
        self._delete_script = Script(DELETE_AND_PUBLISH)
        self._inflight: dict[str, _Flight] = {}
        self._reads: dict[str, tuple[asyncio.Task[bytes | None], _Flight]] = {}
        # True only while the invalidation subscription is confirmed and answering.
        self._subscribed = False
        # Bumped whenever the subscription comes up or goes down: replies from before do not fill L1.
        self._generation = 0
        self._listener: asyncio.Task[None] | None = None
        self._closed = False
        self.l1_hits = 0
        self.l2_hits = 0
        self.l2_misses = 0
        self.l2_reads_shared = 0
        self.invalidations = 0
        self.subscription_losses = 0

    @property
    def subscribed(self) -> bool:
        """Whether invalidations are being received, i.e. whether L1 is in use."""
        return self._subscribed

    async def get(self, key: str) -> bytes | None:
        if self._subscribed:
            value = await self.l1.get(key)
            if value is not None:
                self.l1_hits += 1
                return value
        else:
            self._ensure_listener()
        # Concurrent misses of one key share one Redis read (an L1 expiry under load, a burst of misses),
        # unless an invalidation or a local write has overlapped it since it started.
        shared = self._reads.get(key)
        if shared is None or shared[1].dirty:
            flight = self._begin(key, write=False)
            task = asyncio.get_running_loop().create_task(self._read(key, flight, self._generation))
            task.add_done_callback(_consume)
            self._reads[key] = (task, flight)
        else:
            task = shared[0]
            self.l2_reads_shared += 1
        # Shielded: a caller that goes away does not cancel the read the others wait for.
        return await asyncio.shield(task)

    async def _read(self, key: str, flight: _Flight, generation: int) -> bytes | None:
        started = time.monotonic()
        try:
            reply = await self.l2.call("GET", lambda: self._get_script(self._client, (key,), ()), key)
        finally:
            self._end(key, flight)
            shared = self._reads.get(key)
            if shared is not None and shared[0] is asyncio.current_task():
                del self._reads[key]
        return await self._fill(key, reply, flight, generation, started)

    async def _fill(
        self, key: str, reply: Any, flight: _Flight, generation: int, started: float
    ) -> bytes | None:
        """The value in a GET_WITH_TTL `reply`, copied into L1 unless an invalidation overlapped the read."""
        if not isinstance(reply, list) or not isinstance(reply[0], bytes):
            self.l2_misses += 1
            return None
        self.l2_hits += 1
        value, pttl = reply[0], int(reply[1])
        if self._may_fill(flight, generation):
            lifetime = self.l1_max_ttl if pttl < 0 else min(self.l1_max_ttl, pttl / 1000)
            # Counted from before the request: Redis started its remaining TTL later than `started`.
            await self.l1.set(key, value, lifetime - (time.monotonic() - started))
        return value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of `keys` in order: L1 copies first, the rest read from Redis in one round trip."""
        values: list[bytes | None] = [None] * len(keys)
        missing: list[int] = []
        for index, key in enumerate(keys):
            value = await self.l1.get(key) if self._subscribed else None
            if value is not None:
                self.l1_hits += 1
                values[index] = value
            else:
                missing.append(index)
        if not self._subscribed:
            self._ensure_listener()
        if not missing:
            return values
        wanted = [keys[index] for index in missing]
        generation, started = self._generation, time.monotonic()
        flights = [self._begin(key, write=False) for key in wanted]
        try:
            replies = await self.l2.call(
                "MGET", lambda: self._evals(GET_WITH_TTL, [((k,), ()) for k in wanted])
            )
        finally:
            for key, flight in zip(wanted, flights, strict=True):
                self._end(key, flight)
        for index, key, flight, reply in zip(missing, wanted, flights, replies, strict=True):
            values[index] = await self._fill(key, reply, flight, generation, started)
        return values

    async def _evals(self, source: str, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]) -> list[Any]:
        """`EVAL source` once per `(keys, args)`, all in one pipeline (one round trip)."""
        pipe = self._client.pipeline(transaction=False)
        for keys, args in calls:
            pipe.eval(source, len(keys), *keys, *args)
        return await pipe.execute()

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if not self._subscribed:
            self._ensure_listener()
        await self.l1.delete((key,))
        generation = self._generation
        flight = self._begin(key, write=True)
        started = time.monotonic()
        px = max(1, math.ceil(ttl * 1000))
        args = (value, px, self.channel, self._sender)
        try:
            await self.l2.call("SET", lambda: self._set_script(self._client, (key,), args), key)
        finally:
            self._end(key, flight)
        if self._may_fill(flight, generation):
            await self.l1.set(key, value, min(ttl, self.l1_max_ttl) - (time.monotonic() - started))

    async def set_many(self, items: Sequence[tuple[str, bytes, float]]) -> None:
        """Store each `(key, value, ttl)` in Redis and publish its invalidation, in one round trip."""
        if not items:
            return
        if not self._subscribed:
            self._ensure_listener()
        await self.l1.delete([key for key, _, _ in items])
        generation, started = self._generation, time.monotonic()
        flights = [self._begin(key, write=True) for key, _, _ in items]
        calls = [
            ((key,), (value, max(1, math.ceil(ttl * 1000)), self.channel, self._sender))
            for key, value, ttl in items
        ]
        try:
            await self.l2.call("SET", lambda: self._evals(SET_AND_PUBLISH, calls))
        finally:
            for (key, _, _), flight in zip(items, flights, strict=True):
                self._end(key, flight)
        for (key, value, ttl), flight in zip(items, flights, strict=True):
            if self._may_fill(flight, generation):
                await self.l1.set(key, value, min(ttl, self.l1_max_ttl) - (time.monotonic() - started))

    async def delete(self, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        if not self._subscribed:
            self._ensure_listener()
        await self.l1.delete(keys)
        flights = [(key, self._begin(key, write=True)) for key in keys]
        args = (self.channel, self._sender)
        try:
            removed = await self.l2.call("UNLINK", lambda: self._delete_script(self._client, keys, args))
        finally:
            for key, flight in flights:
                self._end(key, flight)
        return int(removed)

    async def add_counters(self, key: str, deltas: Mapping[str, float]) -> None:
        """Counters live in Redis only."""
        await self.l2.add_counters(key, deltas)

    async def add_to_sets(self, sets: Sequence[str], member: str, ttl: float) -> None:
        """Sets live in Redis only (tag indexes are read by purges, never by requests)."""
        await self.l2.add_to_sets(sets, member, ttl)

    async def purge(self, pattern: str) -> int:
        """Delete the keys matching `pattern` in Redis, then empty every L1 on the channel."""
        try:
            return await self.l2.purge(pattern)
        finally:
            await self.broadcast_clear()

    async def purge_set(self, set_key: str) -> int:
        """Delete the keys listed in `set_key` and the set in Redis, then empty every L1 on the channel."""
        try:
            return await self.l2.purge_set(set_key)
        finally:
            await self.broadcast_clear()

    async def broadcast_clear(self) -> None:
        """Empty the L1 of every process on the channel, this one included (after a purge, say)."""
        self._go_down_l1()
        await self.l2.call(
            "PUBLISH", lambda: self._client.publish(self.channel, invalidation_message(self._sender, ""))
        )

    async def acquire(self, key: str, token: str, ttl: float) -> bool:
        """Take the lease `key` in Redis (`SET NX PX`); leases never go through L1."""
        return await self.l2.acquire(key, token, ttl)

    async def release(self, key: str, token: str) -> None:
        """Give the lease back if `token` still holds it."""
        await self.l2.release(key, token)

    async def aclose(self) -> None:
        self._closed = True
        listener, self._listener = self._listener, None
        if listener is not None and not listener.done():
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        self._go_down()
        await self.l1.aclose()
        await self.l2.aclose()

    def stats(self) -> dict[str, object]:
        """Counters for operators and tests."""
        return {
            "subscribed": self._subscribed,
            "l1_hits": self.l1_hits,
            "l2_hits": self.l2_hits,
            "l2_misses": self.l2_misses,
            "l2_reads_shared": self.l2_reads_shared,
            "invalidations": self.invalidations,
            "subscription_losses": self.subscription_losses,
            "l1_bytes": self.l1.size,
        }

    # --- in-flight bookkeeping -------------------------------------------------------------------

    def _begin(self, key: str, *, write: bool) -> _Flight:
        flight = self._inflight.get(key)
        if flight is None:
            flight = self._inflight[key] = _Flight()
        elif write or flight.writers:
            flight.dirty = True
        flight.count += 1
        flight.writers += write
        return flight

    def _end(self, key: str, flight: _Flight) -> None:
        flight.count -= 1
        if flight.count == 0 and self._inflight.get(key) is flight:
            del self._inflight[key]

    def _may_fill(self, flight: _Flight, generation: int) -> bool:
        return self._subscribed and not flight.dirty and generation == self._generation

    async def _invalidate(self, key: str) -> None:
        self.invalidations += 1
        if not key:
            self._go_down_l1()
            return
        await self.l1.delete((key,))
        flight = self._inflight.get(key)
        if flight is not None:
            flight.dirty = True

    # --- the invalidation subscription -----------------------------------------------------------

    def _ensure_listener(self) -> None:
        """Start the subscriber in the running loop, on first use and after it ended."""
        if self._closed or (self._listener is not None and not self._listener.done()):
            return
        self._listener = asyncio.get_running_loop().create_task(
            self._listen(), name=f"TieredBackend invalidations on {self.channel}"
        )

    def _go_down(self) -> None:
        """Stop using L1 and forget it: invalidations may have been missed."""
        self._subscribed = False
        self._go_down_l1()

    def _go_down_l1(self) -> None:
        """Empty L1; replies already on their way neither fill it nor are shared with new readers."""
        self._generation += 1
        for flight in self._inflight.values():
            flight.dirty = True
        self.l1 = MemoryBackend(self.l1.max_bytes)

    async def _listen(self) -> None:
        delay = 0.05
        while not self._closed:
            try:
                await self._subscribe_and_receive()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._subscribed:
                    self.subscription_losses += 1
                    logger.warning(
                        "L1 invalidation subscription lost (%r): L1 bypassed until it is back", exc
                    )
                else:
                    logger.debug("L1 invalidation subscription failed: %r", exc)
            finally:
                was_up = self._subscribed
                self._go_down()
                if was_up:
                    delay = 0.05
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _subscribe_and_receive(self) -> None:
        pubsub = self._client.pubsub()
        try:
            async with asyncio.timeout(max(self.l2.timeout, self.heartbeat)):
                await pubsub.subscribe(self.channel)
            loop = asyncio.get_running_loop()
            last_heard = loop.time()
            ping_sent = False
            while True:
                message = await pubsub.get_message(timeout=self.heartbeat)
                now = loop.time()
                if message is None:
                    if now - last_heard < self.heartbeat:
                        continue
                    if ping_sent:
                        raise TimeoutError(f"no reply to PING within {2 * self.heartbeat:.1f} s")
                    await pubsub.ping()
                    ping_sent = True
                    continue
                last_heard, ping_sent = now, False
                kind = message["type"]
                if kind == "message":
                    data = message["data"]
                    if isinstance(data, str):  # a client made with decode_responses=True
                        data = data.encode("utf-8", "surrogateescape")
                    if data[:_SENDER_LEN] != self._sender:
                        await self._invalidate(data[_SENDER_LEN:].decode("utf-8", "surrogateescape"))
                elif kind == "subscribe":
                    self._go_down()
                    self._subscribed = True
                    if self.subscription_losses:
                        logger.info("L1 invalidation subscription back: L1 in use again")
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

"""Two-tier backend: an in-process LRU (L1) in front of Redis (L2), kept coherent by Redis itself.

Reads look in L1 first (no network call); an L1 miss costs one Redis round trip, a Lua script that
returns the value and its remaining TTL together, so the L1 copy expires no later than the Redis key.
Concurrent L1 misses of one key share that round trip. Writes and deletes are plain Redis writes that
drop the local L1 copy first; they do not fill L1 (the next read does).

Coherence comes from Redis's server-assisted client-side caching in broadcasting mode (tracking.py): a
connection per primary (one node, the Sentinel master, every Cluster primary) hears the name of every key
under `prefix` that anyone changes: this library, redis-cli, another service, expiry, eviction, a flush.

Staleness bound. After a value is replaced or deleted in Redis, a process may serve the old value from
its L1 for at most:

- the invalidation delivery delay, normally (sub-millisecond on loopback, plus the event-loop lag);
- `l1_max_ttl` whatever happens (lost messages, a silently broken connection, a partition, a failover
  not yet noticed): an L1 copy is never kept longer than `l1_max_ttl` after it was read from Redis,
  where it was current.

While any primary's tracking connection is down (not yet confirmed, lost, no reply to a heartbeat `PING`
within `2 * heartbeat`, or the set of primaries changed), L1 is emptied and bypassed: every read goes to
Redis, nothing is kept in L1. A read that overlaps an invalidation of, or a local write to, the same key
does not fill L1, so a late reply never puts an old value back. Keys outside `prefix` never enter L1.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from .memory import MemoryBackend
from .redis import RedisBackend
from .scripts import GET_WITH_TTL, Script
from .tracking import Tracker

_T = TypeVar("_T")


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


class TieredBackend:
    """An in-process L1 (`MemoryBackend`, LRU bounded by `l1_max_bytes`) in front of `l2`.

    `l1_max_ttl` caps how long an L1 copy lives, and so the staleness when an invalidation is lost;
    `prefix` is the start of the keys kept in L1 and watched in Redis ("" for every key; by default the
    key prefix of the `CacheMiddleware` using this backend, e.g. "rcm:", so that Redis announces no other
    writes); `heartbeat` is how often (seconds)
    an idle tracking connection is pinged and the set of primaries checked. Works on one node, a
    Sentinel master and a Redis Cluster (Redis >= 6).
    """

    asyncio_only = True  # redis-py runs on asyncio only: under trio the cache stands aside

    def __init__(
        self,
        l2: RedisBackend,
        *,
        l1_max_bytes: int = 32 * 1024 * 1024,
        l1_max_ttl: float = 2.0,
        prefix: str | None = None,
        heartbeat: float = 1.0,
    ) -> None:
        if not l1_max_ttl > 0 or not heartbeat > 0:
            raise ValueError("TieredBackend l1_max_ttl and heartbeat must be positive")
        self.l2 = l2
        self.l1 = MemoryBackend(l1_max_bytes)
        self.l1_max_ttl = float(l1_max_ttl)
        self._prefix_chosen = prefix is not None
        self.heartbeat = heartbeat
        self.tracker = Tracker(l2.client, self, prefix=prefix or "", heartbeat=heartbeat, timeout=l2.timeout)
        self._get_script = Script(GET_WITH_TTL)
        self._inflight: dict[str, _Flight] = {}
        self._reads: dict[str, tuple[asyncio.Task[bytes | None], _Flight]] = {}
        # True only while every primary's tracking connection is confirmed and answering.
        self._subscribed = False
        # Bumped whenever tracking comes up or goes down: replies from before do not fill L1.
        self._generation = 0
        self.l1_hits = 0
        self.l2_hits = 0
        self.l2_misses = 0
        self.l2_reads_shared = 0
        self.invalidations = 0

    def adopt_prefix(self, prefix: str) -> None:
        """Keep and watch only keys under `prefix` (a `CacheMiddleware` passes its key prefix), unless a
        prefix was given or tracking has started."""
        if not self._prefix_chosen and not self.tracker.started:
            self.tracker.prefix = prefix
            self._prefix_chosen = True

    @property
    def prefix(self) -> str:
        """The start of the keys kept in L1 and watched in Redis (the tracker's)."""
        return self.tracker.prefix

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
            self.tracker.start()
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
        client = self.l2.client
        try:
            reply = await self.l2.call("GET", lambda: self._get_script(client, (key,), ()), key)
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
        if self._may_fill(key, flight, generation):
            lifetime = self.l1_max_ttl if pttl < 0 else min(self.l1_max_ttl, pttl / 1000)
            # Counted from before the request: Redis started its remaining TTL later than `started`.
            await self.l1.set(key, value, lifetime - (time.monotonic() - started))
        return value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of `keys` in order: L1 copies first, the rest read from Redis in one round trip
        (one per node on a Cluster)."""
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
            self.tracker.start()
        if not missing:
            return values
        wanted = [keys[index] for index in missing]
        generation, started = self._generation, time.monotonic()
        flights = [self._begin(key, write=False) for key in wanted]

        def reads(pipe: Any, index: int) -> None:
            pipe.eval(GET_WITH_TTL, 1, wanted[index])

        try:
            replies = await self.l2.per_node("MGET", wanted, reads)
        finally:
            for key, flight in zip(wanted, flights, strict=True):
                self._end(key, flight)
        for index, key, flight, reply in zip(missing, wanted, flights, replies, strict=True):
            values[index] = await self._fill(key, reply, flight, generation, started)
        return values

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store in Redis; the local L1 copy goes at once, other processes' when Redis tells them."""
        await self._write([key], self.l2.set(key, value, ttl))

    async def set_many(self, items: Sequence[tuple[str, bytes, float]]) -> None:
        """Store each `(key, value, ttl)` in Redis, in one round trip (one per node on a Cluster)."""
        if items:
            await self._write([key for key, _, _ in items], self.l2.set_many(items))

    async def delete(self, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        return await self._write(keys, self.l2.delete(keys))

    async def _write(self, keys: Sequence[str], write: Coroutine[Any, Any, _T]) -> _T:
        """Drop `keys` from L1 and await `write`; reads of those keys overlapping it do not fill L1."""
        if not self._subscribed:
            self.tracker.start()
        await self.l1.delete(keys)
        flights = [(key, self._begin(key, write=True)) for key in keys]
        try:
            return await write
        finally:
            for key, flight in flights:
                self._end(key, flight)

    async def add_counters(self, key: str, deltas: Mapping[str, float]) -> None:
        """Counters live in Redis only."""
        await self.l2.add_counters(key, deltas)

    async def add_to_sets(self, sets: Sequence[str], member: str, ttl: float) -> None:
        """Sets live in Redis only (tag indexes are read by purges, never by requests)."""
        await self.l2.add_to_sets(sets, member, ttl)

    async def purge(self, pattern: str) -> int:
        """Delete the keys matching `pattern` in Redis; this L1 is emptied at once, the others as Redis
        announces each deletion."""
        try:
            return await self.l2.purge(pattern)
        finally:
            self._forget()

    async def purge_set(self, set_key: str) -> int:
        """Delete the keys listed in `set_key` and the set in Redis; this L1 is emptied at once."""
        try:
            return await self.l2.purge_set(set_key)
        finally:
            self._forget()

    async def acquire(self, key: str, token: str, ttl: float) -> bool:
        """Take the lease `key` in Redis (`SET NX PX`); leases never go through L1."""
        return await self.l2.acquire(key, token, ttl)

    async def release(self, key: str, token: str) -> None:
        """Give the lease back if `token` still holds it."""
        await self.l2.release(key, token)

    async def aclose(self) -> None:
        await self.tracker.aclose()
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
            "subscription_losses": self.tracker.losses,
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

    def _may_fill(self, key: str, flight: _Flight, generation: int) -> bool:
        return (
            self._subscribed
            and not flight.dirty
            and generation == self._generation
            and key.startswith(self.prefix)
        )

    def _forget(self) -> None:
        """Empty L1; replies already on their way neither fill it nor are shared with new readers."""
        self._generation += 1
        for flight in self._inflight.values():
            flight.dirty = True
        self.l1 = MemoryBackend(self.l1.max_bytes)

    # --- what the tracker reports (tracking.TrackingListener) ------------------------------------

    async def invalidated(self, keys: list[str] | None) -> None:
        """Drop `keys` from L1 (everything when None) and keep overlapping reads from filling it."""
        self.invalidations += 1
        if keys is None:
            self._forget()
            return
        await self.l1.delete(keys)
        for key in keys:
            flight = self._inflight.get(key)
            if flight is not None:
                flight.dirty = True

    def tracking_up(self) -> None:
        """Every primary is tracked from now on: start from an empty L1, ignoring replies from before."""
        self._forget()
        self._subscribed = True

    def tracking_down(self) -> None:
        """Invalidations may be missed: stop using L1 and forget it."""
        self._subscribed = False
        self._forget()

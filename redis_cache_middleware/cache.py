"""The only storage-facing object on the request path: lookup, save, delete, leases, invalidation.

Every backend call goes through `Cache._call`, the one place where the circuit breaker is consulted and
told how the call went, and where backend errors become `Unavailable`.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import TypeVar

import anyio

from .backends import Backend, BackendError, CountingBackend, LockingBackend, PartialBackendError
from .breaker import CircuitBreaker
from .budget import Budget
from .decision import keep_seconds
from .detach import on_asyncio
from .entry import Entry, VaryMarker, decode, decode_row, encode, encode_marker, encode_row
from .keys import Headers, KeySpace, variant_key
from .metrics import Metrics
from .rules import CacheRule

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class Unavailable(Exception):
    """The cache cannot be used for this request; `reason` is the bypass reason clients are told."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OverBudget(Unavailable):
    """The request has spent its backend time; a write may be retried once the client has its answer."""

    def __init__(self) -> None:
        super().__init__("budget")


class Cache:
    """Entries of one key space in one backend, guarded by one circuit breaker."""

    def __init__(
        self,
        backend: Backend,
        keys: KeySpace,
        breaker: CircuitBreaker,
        metrics: Metrics,
        signing_key: bytes | None = None,
    ) -> None:
        self.backend = backend
        self.keys = keys
        self.breaker = breaker
        self.metrics = metrics
        self.signing_key = signing_key
        self._asyncio_only = bool(getattr(backend, "asyncio_only", False))
        self._loop_ok = False
        self._loop_warned = False

    async def _call(self, operation: Coroutine[object, object, _T], budget: Budget | None = None) -> _T:
        """Await one backend operation (a coroutine not yet started; closed unrun when refused) unless the
        breaker is open or the request's budget is spent, bounded by what is left of the budget; record
        how it went. A coroutine rather than a function making one: no closure per call."""
        if not self._loop_ok and not self._check_loop():
            operation.close()
            raise Unavailable("event-loop")
        if not self.breaker.allow():
            operation.close()
            raise Unavailable("circuit-open")
        began = time.perf_counter()
        try:
            if budget is None or budget.spent == 0.0:  # the first call: the backend's own timeout bounds it
                result = await operation
            else:
                if budget.left <= 0:
                    operation.close()
                    raise OverBudget()
                with anyio.move_on_after(budget.left) as scope:
                    result = await operation
                if scope.cancelled_caught:  # the request's time, not Redis's health: counted only in a probe
                    self.breaker.partial_failure(TimeoutError("request budget spent"))
                    raise OverBudget()
        except PartialBackendError as exc:
            self.breaker.partial_failure(exc)
            raise Unavailable("backend-error") from exc
        except BackendError as exc:
            self.breaker.failure(exc)
            raise Unavailable("backend-error") from exc
        except BaseException:  # cancelled: no verdict on the backend, but a probe must not stay taken
            self.breaker.abandon()
            raise
        finally:
            if budget is not None:
                budget.charge(began)
        self.breaker.success()
        return result

    def _check_loop(self) -> bool:
        """Whether this backend can run on the current event loop; logs once when it cannot."""
        if not self._asyncio_only or on_asyncio():
            self._loop_ok = True
            return True
        if not self._loop_warned:
            self._loop_warned = True
            logger.warning(
                "cache backend %s needs asyncio, but the app runs on another event loop: "
                "serving without the cache",
                type(self.backend).__name__,
                extra={"event": "unsupported_event_loop"},
            )
        return False

    async def lookup(self, key: str, headers: Headers, budget: Budget | None = None) -> Entry | None:
        """The entry stored for a request, following a Vary marker to the selected variant (raises
        `Unavailable`)."""
        backend = self.backend
        data = await self._call(backend.get(key), budget)
        record = decode(data, key, self.signing_key) if data is not None else None
        if isinstance(record, VaryMarker):
            variant = variant_key(key, record.names, headers)
            data = await self._call(backend.get(variant), budget)
            record = decode(data, variant, self.signing_key) if data is not None else None
        return record if isinstance(record, Entry) else None

    async def rows(
        self, envelope_key: str, keys: Sequence[str], budget: Budget | None = None
    ) -> tuple[Entry | None, dict[str, tuple[bytes, float]]]:
        """A route's envelope (when stored and fresh) and the stored rows among `keys`, as (value, compute
        seconds), in one round trip (raises `Unavailable`)."""
        backend, signing_key = self.backend, self.signing_key
        found = await self._call(backend.get_many([envelope_key, *keys]), budget)
        envelope = self._fresh(found[0], envelope_key, time.time())
        rows = {}
        for key, data in zip(keys, found[1:], strict=True):
            row = decode_row(data, key, signing_key) if data is not None else None
            if row is not None:
                rows[key] = row
        return envelope, rows

    def _fresh(self, data: bytes | None, key: str, now: float) -> Entry | None:
        record = decode(data, key, self.signing_key) if data is not None else None
        return record if isinstance(record, Entry) and record.is_fresh(now) else None

    async def save_rows(
        self,
        rows: Sequence[tuple[str, bytes, float]],
        envelope: Entry,
        rule: CacheRule,
        budget: Budget | None = None,
    ) -> bool:
        """Write rows (key, value, compute seconds) and their route's envelope, for the envelope's `ttl`,
        in one round trip; whether they were written. Raises only `OverBudget` (write again without a
        budget once the client has its answer)."""
        signing_key, ttl = self.signing_key, envelope.ttl
        items = [(key, encode_row(key, value, delta, signing_key), ttl) for key, value, delta in rows]
        items.append((envelope.key, encode(envelope, signing_key), ttl))
        try:
            await self._call(self.backend.set_many(items), budget)
        except OverBudget:
            raise
        except Unavailable:
            stored = False
        else:
            stored = True
        self.metrics.stored(rule.key_name, sum(len(item[1]) for item in items), stored)
        return stored

    async def fresh_entry(self, key: str, headers: Headers, within: float) -> Entry | None:
        """Poll, backing off, for a fresh entry at `key` for up to `within` s (another process computes
        it)."""
        deadline = time.monotonic() + within
        delay = 0.005
        while time.monotonic() < deadline:
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.1)
            try:
                entry = await self.lookup(key, headers)
            except Unavailable:
                return None
            if entry is not None and entry.is_fresh(time.time()):
                return entry
        return None

    async def save(
        self,
        entry: Entry,
        rule: CacheRule,
        primary_key: str,
        tags: Sequence[str] = (),
        budget: Budget | None = None,
    ) -> bool:
        """Write an entry (with the Vary marker that leads to it, in one round trip) and index it under
        `tags`; whether it was stored. A failure is counted and dropped, never retried or raised, except
        `OverBudget`: the request's backend time ran out first (save again without a budget later)."""
        keep = keep_seconds(entry, rule)
        stored = keep > 0
        if stored:
            items = [(entry.key, encode(entry, self.signing_key), keep)]
            if entry.vary:
                marker = encode_marker(VaryMarker(primary_key, entry.vary), self.signing_key)
                items.append((primary_key, marker, keep))
            try:
                await self._call(self.backend.set_many(items), budget)
            except OverBudget:
                raise
            except Unavailable:
                stored = False
        self.metrics.stored(rule.key_name, len(entry.body), stored)
        if stored and tags:
            sets = [self.keys.tag(tag) for tag in tags]
            try:
                await self._call(self.backend.add_to_sets(sets, entry.key, keep), budget)
                if entry.vary:
                    await self._call(self.backend.add_to_sets(sets, primary_key, keep), budget)
            except Unavailable as exc:
                logger.debug("could not index tags %s of %s: %s", tags, entry.key, exc.reason)
        return stored

    async def delete(self, keys: Sequence[str], budget: Budget | None = None) -> int:
        """Remove `keys` (raises `Unavailable`)."""
        return await self._call(self.backend.delete(keys), budget)

    @asynccontextmanager
    async def lease(
        self, key: str, seconds: float, budget: Budget | None = None
    ) -> AsyncIterator[bool | None]:
        """Hold the computation lease of `key` for this block: True when this process holds it, False
        when another does, None when the backend could not say (compute anyway)."""
        backend = self.backend
        if not isinstance(backend, LockingBackend):
            yield None
            return
        lease, token = KeySpace.lease(key), secrets.token_hex(8)
        try:
            held: bool | None = await self._call(backend.acquire(lease, token, seconds), budget)
        except Unavailable:
            held = None
        try:
            yield held
        finally:
            if held:
                with anyio.CancelScope(shield=True):
                    with suppress(Unavailable):
                        await self._call(backend.release(lease, token))

    async def memory_policy(self) -> tuple[int, str] | None:
        """Redis's (maxmemory, maxmemory-policy), when the backend can tell (None otherwise)."""
        backend = getattr(self.backend, "l2", self.backend)
        ask = getattr(backend, "memory_policy", None)
        if ask is None or (self._asyncio_only and not on_asyncio()):
            return None
        answer: tuple[int, str] | None = await ask()
        return answer

    async def add_counters(self, deltas: Mapping[str, float]) -> bool:
        """Add this process's counter deltas to the shared hash; whether they were written."""
        backend = self.backend
        if not isinstance(backend, CountingBackend):
            return True  # nowhere to share them: nothing lost
        key = self.keys.stats()
        try:
            await self._call(backend.add_counters(key, deltas))
        except Unavailable:
            return False
        return True

    async def purge(self, pattern: str) -> int:
        """Delete every key matching the glob `pattern` (raises `BackendError`)."""
        return await self.backend.purge(pattern)

    async def purge_tags(self, tags: Sequence[str]) -> int:
        """Delete every entry indexed under any of `tags` (raises `BackendError`)."""
        count = 0
        for tag in tags:
            count += await self.backend.purge_set(self.keys.tag(tag))
        return count

    async def purge_everything(self) -> int:
        """Delete every entry of the namespace, and its tag sets (not counted)."""
        count = await self.backend.purge(self.keys.entries_glob())
        await self.backend.purge(self.keys.tags_glob())
        return count

    async def aclose(self) -> None:
        await self.backend.aclose()

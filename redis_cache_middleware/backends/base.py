"""The storage protocol the cache needs: bytes in, bytes out, with a TTL. Backends know no HTTP."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable


class BackendError(Exception):
    """A backend call failed or timed out, a connection still opening when the caller stopped waiting
    included; the middleware serves the request without the cache, and the breaker counts it."""


class PartialBackendError(BackendError):
    """One Redis Cluster node failed (or is cooling down after failing), not the backend as a whole: the
    request bypasses; the breaker does not count it. Multi-key calls raise it when some nodes failed."""


@runtime_checkable
class Backend(Protocol):
    """Async key-value storage with expiry. Every method raises only `BackendError` on failure.

    The request path uses `get`, `get_many`, `set`, `set_many`, `delete` and `add_to_sets`, each one
    round trip bounded by the backend's timeout; `purge` and `purge_set` are bulk operations for
    invalidation and operators, bounded per batch rather than in total.
    """

    async def get(self, key: str) -> bytes | None:
        """The value stored under `key`, or None when absent or expired."""
        ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of `keys` in order (None where absent), in one round trip."""
        ...

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store `value` under `key` for `ttl` seconds (rounded up to whole milliseconds)."""
        ...

    async def set_many(self, items: Sequence[tuple[str, bytes, float]]) -> None:
        """Store each `(key, value, ttl)`, in one round trip."""
        ...

    async def delete(self, keys: Sequence[str]) -> int:
        """Remove `keys`; the number that existed."""
        ...

    async def add_to_sets(self, sets: Sequence[str], member: str, ttl: float) -> None:
        """Add `member` to each set in `sets`, each set then living at least `ttl` s more (tag indexes)."""
        ...

    async def purge(self, pattern: str) -> int:
        """Delete every key matching the glob `pattern` (SCAN and UNLINK in batches); the number deleted."""
        ...

    async def purge_set(self, set_key: str) -> int:
        """Delete every key listed in the set `set_key`, then the set; the number of listed keys deleted."""
        ...

    async def aclose(self) -> None:
        """Release connections; the backend is not used afterwards."""
        ...


@runtime_checkable
class CountingBackend(Protocol):
    """A backend that also keeps shared counters (what every process's cache did, for operators)."""

    async def add_counters(self, key: str, deltas: Mapping[str, float]) -> None:
        """Add each delta to its field of the counter hash `key`, in one round trip."""
        ...


@runtime_checkable
class LockingBackend(Backend, Protocol):
    """A backend that can also hold short leases, for one computation per key across processes."""

    async def acquire(self, key: str, token: str, ttl: float) -> bool:
        """Take the lease `key` for `ttl` seconds unless someone holds it (`SET NX PX`)."""
        ...

    async def release(self, key: str, token: str) -> None:
        """Give the lease back, only if `token` still holds it."""
        ...

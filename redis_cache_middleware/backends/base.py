"""The storage protocol the middleware needs: bytes in, bytes out, with a TTL. Backends know no HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable


class BackendError(Exception):
    """A backend call failed or timed out; the middleware serves the request without the cache."""


class PartialBackendError(BackendError):
    """A failure that does not show the backend as a whole to be down: one cluster node, or a connection
    still opening when the caller stopped waiting. The request bypasses; the breaker does not count it."""


@runtime_checkable
class Backend(Protocol):
    """Async key-value storage with expiry. Every method raises only `BackendError` on failure."""

    async def get(self, key: str) -> bytes | None:
        """The value stored under `key`, or None when absent or expired."""
        ...

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store `value` under `key` for `ttl` seconds (rounded up to whole milliseconds)."""
        ...

    async def delete(self, keys: Sequence[str]) -> int:
        """Remove `keys`; the number that existed."""
        ...

    async def aclose(self) -> None:
        """Release connections; the backend is not used afterwards."""
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

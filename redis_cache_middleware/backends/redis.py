"""Redis backend on `redis.asyncio`: one command per call, bounded by a timeout, never retried."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .base import BackendError

DEFAULT_TIMEOUT = 0.05
_FAILURES = (RedisError, OSError, TimeoutError)


class RedisBackend:
    """Stores entries in Redis with `SET key value PX ttl`; any error or timeout raises `BackendError`.

    `timeout` bounds each call as a whole (pool wait, connect, command), on top of the client's own
    socket timeouts; pass a client built by `from_url` or configured the same way (no retries).
    """

    def __init__(self, client: Redis | RedisCluster, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        if not timeout > 0:
            raise ValueError("RedisBackend timeout must be positive")
        self.client = client
        self.timeout = timeout

    @classmethod
    def from_url(cls, url: str, *, timeout: float = DEFAULT_TIMEOUT, **options: Any) -> RedisBackend:
        """A backend on a new client for `url`, with `timeout` as socket timeouts and no retries."""
        options.setdefault("socket_timeout", timeout)
        options.setdefault("socket_connect_timeout", timeout)
        options.setdefault("retry", Retry(NoBackoff(), 0))
        options.setdefault("health_check_interval", 0)
        client: Redis = Redis.from_url(url, **options)
        return cls(client, timeout=timeout)

    async def get(self, key: str) -> bytes | None:
        try:
            async with asyncio.timeout(self.timeout):
                value = await self.client.get(key)
        except _FAILURES as exc:
            raise BackendError(f"GET failed: {exc!r}") from exc
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self.client.set(key, value, px=max(1, math.ceil(ttl * 1000)))
        except _FAILURES as exc:
            raise BackendError(f"SET failed: {exc!r}") from exc

    async def delete(self, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        try:
            async with asyncio.timeout(self.timeout):
                deleted: int = await self.client.unlink(*keys)
        except _FAILURES as exc:
            raise BackendError(f"UNLINK failed: {exc!r}") from exc
        return deleted

    async def aclose(self) -> None:
        with contextlib.suppress(*_FAILURES):
            await self.client.aclose()

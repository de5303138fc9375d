"""In-process backend: an LRU bounded by bytes, with per-entry expiry. One process only."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence


class MemoryBackend:
    """Keeps at most `max_bytes` of values (keys not counted), evicting the least recently used first."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        if max_bytes <= 0:
            raise ValueError("MemoryBackend max_bytes must be positive")
        self.max_bytes = max_bytes
        self.size = 0
        self._items: OrderedDict[str, tuple[bytes, float]] = OrderedDict()

    async def get(self, key: str) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[1] <= time.monotonic():
            self._remove(key)
            return None
        self._items.move_to_end(key)
        return item[0]

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self._remove(key)
        if len(value) > self.max_bytes or ttl <= 0:
            return
        self._items[key] = (value, time.monotonic() + ttl)
        self.size += len(value)
        while self.size > self.max_bytes:
            self._remove(next(iter(self._items)))

    async def delete(self, keys: Sequence[str]) -> int:
        return sum(self._remove(key) for key in keys)

    async def acquire(self, key: str, token: str, ttl: float) -> bool:
        if await self.get(key) is not None:
            return False
        await self.set(key, token.encode(), ttl)
        return True

    async def release(self, key: str, token: str) -> None:
        if await self.get(key) == token.encode():
            self._remove(key)

    async def aclose(self) -> None:
        self._items.clear()
        self.size = 0

    def __len__(self) -> int:
        return len(self._items)

    def _remove(self, key: str) -> bool:
        item = self._items.pop(key, None)
        if item is None:
            return False
        self.size -= len(item[0])
        return True

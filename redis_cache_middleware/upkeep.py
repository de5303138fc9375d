"""What a cache does now and then rather than per request: one check of Redis's memory settings, and
adding this process's counters to the shared ones in Redis (at most once a second)."""

from __future__ import annotations

import logging
import time

from .cache import Cache
from .metrics import Metrics

logger = logging.getLogger(__name__)


def memory_warning(info: tuple[int, str] | None) -> str | None:
    """One warning line when Redis (`(maxmemory, maxmemory-policy)`, None: unknown) will fill up until
    writes fail: no maxmemory, or the `noeviction` policy."""
    if info is None:
        return None
    maxmemory, policy = info
    if maxmemory == 0:
        return (
            "redis-cache-middleware: Redis has no maxmemory; the cache will grow until Redis runs out of "
            "memory (set maxmemory and maxmemory-policy allkeys-lru or volatile-lru)"
        )
    if policy == "noeviction":
        return (
            "redis-cache-middleware: Redis maxmemory-policy is noeviction; once full, every cache write "
            "fails (use allkeys-lru or volatile-lru)"
        )
    return None


class Upkeep:
    """Runs after responses, in the request's task: the first one checks Redis's memory settings (one
    warning line when the cache would fill Redis), then counters are flushed every `interval` seconds."""

    def __init__(self, cache: Cache, metrics: Metrics, interval: float = 1.0) -> None:
        self.cache = cache
        self.metrics = metrics
        self.interval = interval
        self._checked = False

    async def after_response(self) -> None:
        if not self._checked:
            self._checked = True
            warning = memory_warning(await self.cache.memory_policy())
            if warning is not None:
                logger.warning(warning, extra={"event": "redis_memory"})
        deltas = self.metrics.counters_due(time.monotonic(), self.interval)
        if deltas is not None and not await self.cache.add_counters(deltas):
            self.metrics.counters_lost(deltas)

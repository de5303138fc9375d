"""Request coalescing: one computation per key in this process (single-flight), the others wait for it."""

from __future__ import annotations

import asyncio
import time

from .entry import Entry


class SingleFlight:
    """Tracks the computation in flight for each key; its result is the stored entry, or None when the
    response could not be shared (not storable, an error, or the leader gave up)."""

    def __init__(self, forget_uncacheable: float = 0.0) -> None:
        self._flights: dict[str, asyncio.Future[Entry | None]] = {}
        self._uncacheable: dict[str, float] = {}
        self.forget_uncacheable = forget_uncacheable

    def in_flight(self, key: str) -> asyncio.Future[Entry | None] | None:
        """The running computation for `key`, if any."""
        return self._flights.get(key)

    def lead(self, key: str) -> asyncio.Future[Entry | None]:
        """Register this caller's computation for `key`; resolve it with `finish`."""
        future: asyncio.Future[Entry | None] = asyncio.get_running_loop().create_future()
        self._flights[key] = future
        return future

    def finish(self, key: str, future: asyncio.Future[Entry | None], entry: Entry | None) -> None:
        """Hand `entry` to the waiters (first call wins) and end the flight."""
        if not future.done():
            future.set_result(entry)
        if self._flights.get(key) is future:
            del self._flights[key]
        if entry is None and self.forget_uncacheable > 0:
            if len(self._uncacheable) > 10_000:
                self._uncacheable.clear()
            self._uncacheable[key] = time.monotonic() + self.forget_uncacheable

    def known_uncacheable(self, key: str) -> bool:
        """True while a recent flight for `key` ended without a shareable response ("hit-for-miss")."""
        until = self._uncacheable.get(key)
        if until is None:
            return False
        if until > time.monotonic():
            return True
        del self._uncacheable[key]
        return False

    def __len__(self) -> int:
        return len(self._flights)


async def wait(future: asyncio.Future[Entry | None], seconds: float) -> Entry | None:
    """The flight's entry, or None if it is not ready within `seconds` (the flight itself goes on)."""
    try:
        async with asyncio.timeout(seconds):
            return await asyncio.shield(future)
    except TimeoutError:
        return None

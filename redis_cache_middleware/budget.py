"""The Redis time one request may spend in total: each call is bounded by what is left of it."""

from __future__ import annotations

import math
import time


class Budget:
    """`total` seconds of backend time for one request (infinite: no bound beyond the backend's own)."""

    __slots__ = ("spent", "total")

    def __init__(self, total: float = math.inf) -> None:
        self.total = total
        self.spent = 0.0

    @property
    def left(self) -> float:
        return self.total - self.spent

    def charge(self, since: float) -> None:
        """Count the time since `since` (a `time.perf_counter()` reading) as spent."""
        self.spent += time.perf_counter() - since

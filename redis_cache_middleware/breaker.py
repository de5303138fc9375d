"""Circuit breaker: after a run of backend failures, skip the backend for a cool-down, then probe once."""

from __future__ import annotations

import logging
import time
from typing import Literal

logger = logging.getLogger(__name__)

State = Literal["closed", "open", "half-open"]


class CircuitBreaker:
    """`closed` lets calls through; `failure_threshold` failures in a row open it for `reset_timeout` s;
    then one call at a time probes (`half-open`): a success closes it, a failure opens it again.

    Logs one warning when it opens and one info line when it closes, never a line per request.
    """

    def __init__(self, failure_threshold: int = 5, reset_timeout: float = 5.0) -> None:
        if failure_threshold < 1 or not reset_timeout > 0:
            raise ValueError("CircuitBreaker needs failure_threshold >= 1 and reset_timeout > 0")
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.state: State = "closed"
        self.consecutive_failures = 0
        self.total_failures = 0
        self.times_opened = 0
        self._opened_at = 0.0
        self._probing = False

    def allow(self) -> bool:
        """Whether to call the backend now; in half-open state only one caller at a time gets True."""
        if self.state == "closed":
            return True
        if self.state == "open":
            if time.monotonic() - self._opened_at < self.reset_timeout:
                return False
            self.state = "half-open"
        if self._probing:
            return False
        self._probing = True
        return True

    def success(self) -> None:
        self._probing = False
        self.consecutive_failures = 0
        if self.state != "closed":
            self.state = "closed"
            logger.info("cache backend recovered: circuit closed", extra={"event": "breaker_closed"})

    def abandon(self) -> None:
        """A call that ended without an answer either way (its caller was cancelled): if it was the
        probe, let the next caller probe."""
        self._probing = False

    def partial_failure(self, error: BaseException) -> None:
        """A failure that does not show the backend to be down (one cluster node, a connection still
        opening): not counted while closed, but a probe that fails so opens the circuit again."""
        if self.state == "half-open":
            self.failure(error)

    def failure(self, error: BaseException) -> None:
        self._probing = False
        self.consecutive_failures += 1
        self.total_failures += 1
        if self.state == "half-open" or (
            self.state == "closed" and self.consecutive_failures >= self.failure_threshold
        ):
            if self.state == "closed":
                logger.warning(
                    "cache backend failing (%d errors in a row, last: %r): circuit open, "
                    "serving without cache for %.1f s between probes",
                    self.consecutive_failures,
                    error,
                    self.reset_timeout,
                    extra={"event": "breaker_open", "failures": self.consecutive_failures},
                )
                self.times_opened += 1
            self.state = "open"
            self._opened_at = time.monotonic()

    def snapshot(self) -> dict[str, object]:
        """State and counters, for `stats()`."""
        return {
            "state": self.state,
            "consecutive_failures": self.consecutive_failures,
            "total_failures": self.total_failures,
            "times_opened": self.times_opened,
        }

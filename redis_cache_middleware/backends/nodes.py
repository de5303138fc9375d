"""Cluster nodes that failed recently: skipped for a cool-down, then probed by one call."""

from __future__ import annotations

import time

from redis.exceptions import ConnectionError as RedisConnectionError

NODE_FAILURES_BEFORE_COOLDOWN = 3


class NodeCoolingDown(RedisConnectionError):
    """A cluster node that failed recently is skipped until its cool-down ends."""


class NodeCooldown:
    """After `NODE_FAILURES_BEFORE_COOLDOWN` connection failures in a row, a node's keys fail at once for
    `seconds`; then one call goes through as the probe (and the next ones wait another `seconds`)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._failures: dict[str, int] = {}
        self._down_until: dict[str, float] = {}

    def admit(self, node: str) -> None:
        """Raise `NodeCoolingDown` while `node` cools down; let one caller through once it has."""
        until = self._down_until.get(node)
        if until is None:
            return
        now = time.monotonic()
        if now < until:
            raise NodeCoolingDown(f"cluster node {node} failed less than {self.seconds} s ago")
        self._down_until[node] = now + self.seconds

    def failed(self, node: str) -> None:
        failures = self._failures.get(node, 0) + 1
        self._failures[node] = failures
        if failures >= NODE_FAILURES_BEFORE_COOLDOWN:
            self._down_until[node] = time.monotonic() + self.seconds

    def succeeded(self, node: str) -> None:
        self._failures.pop(node, None)
        self._down_until.pop(node, None)

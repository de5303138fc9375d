"""The processes a benchmark starts: CPU pinning and a private redis-server (the tests' launcher).

Shared by run.py, hitpath.py and stampede.py so that none of them imports another benchmark's entry point.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import redis

from tests.redis_server import RedisServer, free_port

__all__ = ["LOAD_CORE", "SERVER_CORE", "free_port", "pin", "pinned", "private_redis"]

SERVER_CORE, LOAD_CORE = 0, 1


def _can_pin() -> bool:
    return (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity")


def pinned(core: int) -> Callable[[], None] | None:
    """A preexec_fn that pins the child to `core` (None when there are not two cores to split)."""
    if not _can_pin():
        return None

    def pin_self() -> None:
        os.sched_setaffinity(0, {core})

    return pin_self


def pin(pid: int, core: int) -> None:
    """Pin the running process `pid` to `core` (nothing when there are not two cores to split)."""
    if _can_pin():
        os.sched_setaffinity(pid, {core})


@contextlib.contextmanager
def private_redis() -> Iterator[tuple[str, redis.Redis]]:
    """A redis-server of our own on a free port in a temporary folder, pinned to the load core; yields its
    URL and a synchronous client, and kills it on exit."""
    with tempfile.TemporaryDirectory(prefix="rcm-bench-redis-") as folder:
        server = RedisServer(Path(folder)).start()
        client = server.client()
        try:
            assert server.process is not None
            pin(server.process.pid, LOAD_CORE)
            yield server.url, client
        finally:
            client.close()
            server.kill()

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from redis_cache_middleware import RedisBackend

from .redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The test session's own Redis; never the shared one on 6379."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.kill()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A synchronous client on an emptied private Redis, for looking at what the cache wrote."""
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
async def backend(redis_server: RedisServer, redis_client: redis.Redis) -> AsyncIterator[RedisBackend]:
    backend = RedisBackend.from_url(redis_server.url, timeout=0.5)
    yield backend
    await backend.aclose()


@pytest.fixture
def fresh_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, which the test may kill or pause."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()

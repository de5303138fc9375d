from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from starlette.types import ASGIApp

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


def client_for(app: ASGIApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def http_scope(path: str, query: bytes = b"", method: str = "GET") -> dict[str, object]:
    """The scope a server hands an app for `method path?query` on http://testserver, for tests that drive
    the ASGI callables by hand (to control `receive` and `send`)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"testserver")],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1234),
    }

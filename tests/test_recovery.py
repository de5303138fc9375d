"""Issue 11, defects 1 and 9 at backend level: every call is bounded whatever the network does (black hole,
a connect that never completes, refused, reset), calls succeed again once the path heals, and a wrong
password leaks no connection."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from redis_cache_middleware.backends import Backend, BackendError, PartialBackendError, RedisBackend
from redis_cache_middleware.backends.tiered import TieredBackend

from .netproxy import NetProxy
from .redis_server import RedisServer

TIMEOUT = 0.1
CONNECT_TIMEOUT = 0.3
# What a loaded machine may add to a bound before a call returns; far below the hangs this guards against.
SLACK = 1.0
PASSWORD = "s3cret"


def make_backend(kind: str, url: str) -> Backend:
    if kind == "pipeline":
        return RedisBackend.from_url(url, timeout=TIMEOUT, connect_timeout=CONNECT_TIMEOUT)
    plain = RedisBackend.from_url(url, timeout=TIMEOUT, connect_timeout=CONNECT_TIMEOUT, client_name="plain")
    return plain if kind == "client" else TieredBackend(plain)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("secured"), password=PASSWORD).start()
    yield server
    server.kill()


@pytest.fixture
async def proxy(secured: RedisServer) -> AsyncIterator[NetProxy]:
    """A proxy in front of a password-protected Redis, so that opening a connection takes a reply (AUTH)."""
    proxy = await NetProxy(secured.port).start()
    yield proxy
    await proxy.aclose()


async def fails_within(backend: Backend, bound: float, key: str = "absent") -> BackendError:
    """A call that fails as a whole-backend failure (never a partial one) within `bound` s."""
    started = time.monotonic()
    with pytest.raises(BackendError) as caught:
        await backend.get(key)
    elapsed = time.monotonic() - started
    assert elapsed < bound + SLACK, f"{elapsed:.2f} s"
    assert not isinstance(caught.value, PartialBackendError), caught.value
    return caught.value


async def recovers(backend: Backend, within: float = 3.0) -> None:
    """Calls succeed again (with the right value) within `within` s of the path healing. The absent key
    is never in a tiered backend's L1: reading it takes Redis."""
    deadline = time.monotonic() + within
    while True:
        try:
            assert await backend.get("absent") is None
            assert await backend.get("k") == b"v"
            return
        except BackendError:
            assert time.monotonic() < deadline, "no recovery"
            await asyncio.sleep(0.05)


KINDS = ["pipeline", "client", "tiered"]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_connect_that_never_completes_is_bounded_then_recovers(proxy: NetProxy, kind: str) -> None:
    backend = make_backend(kind, proxy.url_with(f":{PASSWORD}@"))
    try:
        await backend.set("k", b"v", 60)
        await proxy.hang()
        proxy.reset_all()
        for _ in range(3):
            await fails_within(backend, CONNECT_TIMEOUT)
        # a probe joining a connection attempt already under way is bounded too
        first = asyncio.ensure_future(fails_within(backend, CONNECT_TIMEOUT))
        await asyncio.sleep(CONNECT_TIMEOUT / 2)
        await fails_within(backend, CONNECT_TIMEOUT)
        await first
        await proxy.accept()
        await recovers(backend)
    finally:
        await backend.aclose()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_black_hole_while_opening_and_while_connected_then_recovers(
    proxy: NetProxy, kind: str
) -> None:
    backend = make_backend(kind, proxy.url_with(f":{PASSWORD}@"))
    try:
        await backend.set("k", b"v", 60)
        proxy.up = proxy.down = "swallow"
        await fails_within(backend, TIMEOUT)  # connected: the reply never comes
        proxy.reset_all()  # new connections: TCP opens, AUTH is never answered
        for _ in range(3):
            error = await fails_within(backend, CONNECT_TIMEOUT)
        assert (
            "opening" in str(error) or "timeout" in str(error).lower() or "Timeout" in repr(error.__cause__)
        )
        proxy.heal()
        await recovers(backend)
    finally:
        await backend.aclose()


@pytest.mark.parametrize("kind", KINDS)
async def test_refused_then_reset_then_recovers(proxy: NetProxy, kind: str) -> None:
    backend = make_backend(kind, proxy.url_with(f":{PASSWORD}@"))
    try:
        await backend.set("k", b"v", 60)
        await proxy.refuse()
        proxy.reset_all()
        await asyncio.sleep(0.05)  # the reset reaches the client
        error = await fails_within(backend, CONNECT_TIMEOUT)
        assert "(refused)" in str(error)
        await proxy.accept()
        await recovers(backend)
        proxy.down = "drop"
        await fails_within(backend, TIMEOUT)
        proxy.heal()
        await recovers(backend)
    finally:
        await backend.aclose()


def open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            continue
    return count


@pytest.mark.parametrize("kind", ["pipeline", "client"])
async def test_a_wrong_password_leaks_no_connection_and_logs_once(
    secured: RedisServer, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 11, defect 9: each failed AUTH used to leave its connection open (200 calls, 200 clients)."""
    caplog.set_level(logging.DEBUG, logger="redis_cache_middleware")
    url = f"redis://:wrong@127.0.0.1:{secured.port}/0"
    backend = make_backend(kind, url)
    sockets_before = open_sockets()
    try:
        for _ in range(200):
            with pytest.raises(BackendError, match="authentication"):
                await backend.get("k")
            with pytest.raises(BackendError):
                await backend.set("k", b"v", 60)
        await asyncio.sleep(0.1)  # closed transports release their sockets on the next loop turn
        with secured.client() as admin:
            connected = int(admin.info("clients")["connected_clients"])
        assert connected <= 5
        assert open_sockets() - sockets_before <= 3
    finally:
        await backend.aclose()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "authentication" in warnings[0].getMessage()


async def test_a_failed_select_closes_the_connection(secured: RedisServer, tmp_path: Path) -> None:
    backend = RedisBackend.from_url(f"redis://:{PASSWORD}@127.0.0.1:{secured.port}/99", timeout=TIMEOUT)
    try:
        for _ in range(50):
            with pytest.raises(BackendError, match="DB index"):
                await backend.get("k")
        await asyncio.sleep(0.1)
        with secured.client() as admin:
            assert int(admin.info("clients")["connected_clients"]) <= 5
    finally:
        await backend.aclose()

"""Several uvicorn processes on one Redis: what one computes the others serve, across a Redis restart."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from .redis_server import RedisServer, free_port

REPO = Path(__file__).resolve().parent.parent


class Worker:
    """`uvicorn tests.worker_app:create_app` in a process of its own on a free port."""

    def __init__(self, redis_url: str, namespace: str, lock: bool = False) -> None:
        self.port = free_port()
        env = {**os.environ, "RCM_TEST_REDIS_URL": redis_url, "RCM_TEST_NAMESPACE": namespace}
        env["RCM_TEST_LOCK"] = "1" if lock else "0"
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", "tests.worker_app:create_app", "--factory"),
                *("--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"),
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.pid = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def ready(self, client: httpx.AsyncClient, within: float = 15.0) -> None:
        deadline = time.monotonic() + within
        while True:
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"uvicorn exited with {self.process.returncode}: {stderr}")
            try:
                self.pid = int((await client.get(f"{self.base_url}/health")).text)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()


@pytest.fixture
def workers(fresh_redis: RedisServer) -> Iterator[list[Worker]]:
    started = [Worker(fresh_redis.url, "workers") for _ in range(2)]
    yield started
    for worker in started:
        worker.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A client that sends every worker the same Host, as a load balancer in front of them would (the
    cache key includes the Host)."""
    async with httpx.AsyncClient(timeout=5, headers={"host": "api.example"}) as client:
        yield client


async def get(http: httpx.AsyncClient, worker: Worker, x: str) -> tuple[str, int]:
    """`(X-Cache, pid that computed the body)` for `/work?x=...` through `worker`."""
    response = await http.get(f"{worker.base_url}/work", params={"x": x})
    assert response.status_code == 200
    assert response.json()["x"] == x
    return response.headers["x-cache"], response.json()["pid"]


async def test_a_response_computed_by_one_worker_is_a_hit_in_the_other(
    workers: list[Worker], http: httpx.AsyncClient
) -> None:
    a, b = workers
    await asyncio.gather(a.ready(http), b.ready(http))
    assert a.pid != b.pid
    assert await get(http, a, "1") == ("MISS", a.pid)
    assert await get(http, b, "1") == ("HIT", a.pid)
    assert await get(http, b, "2") == ("MISS", b.pid)
    assert await get(http, a, "2") == ("HIT", b.pid)


async def test_every_worker_rides_out_a_redis_restart(
    workers: list[Worker], http: httpx.AsyncClient, fresh_redis: RedisServer
) -> None:
    a, b = workers
    await asyncio.gather(a.ready(http), b.ready(http))
    await get(http, a, "before")
    fresh_redis.kill()
    during = await asyncio.gather(*(get(http, w, f"x{i}") for i in range(20) for w in (a, b)))
    assert {cache for cache, _ in during} == {"BYPASS"}
    fresh_redis.start()
    deadline = time.monotonic() + 3
    caches: set[str] = set()
    while caches != {"HIT"}:
        assert time.monotonic() < deadline, f"workers did not hit again after the restart: {caches}"
        await asyncio.sleep(0.05)
        caches = {(await get(http, w, "after"))[0] for w in (a, b)}


@pytest.mark.parametrize(("lock", "expected_calls"), [(True, 1), (False, 4)])
async def test_the_lock_makes_four_workers_compute_a_cold_key_once(
    fresh_redis: RedisServer, http: httpx.AsyncClient, lock: bool, expected_calls: int
) -> None:
    started = [Worker(fresh_redis.url, "locked", lock=lock) for _ in range(4)]
    try:
        await asyncio.gather(*(w.ready(http) for w in started))
        responses = await asyncio.gather(
            *(http.get(f"{started[i % 4].base_url}/slow", params={"x": "cold"}) for i in range(40))
        )
    finally:
        for worker in started:
            worker.stop()
    assert {r.status_code for r in responses} == {200}
    assert int(fresh_redis.client().get("calls:slow") or 0) == expected_calls
    assert len({r.json()["pid"] for r in responses}) == expected_calls

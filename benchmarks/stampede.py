"""Stampede benchmark: a burst of identical cold requests against a slow model, with and without protection.

`python -m benchmarks.stampede [--burst 200] [--delay 0.1] [--workers 4]` starts its own redis-server and
uvicorn servers on loopback, sends the burst, and prints a Markdown table of model calls and latency for:
no protection, in-process single-flight, and several processes with and without the Redis lock.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from benchmarks.processes import free_port, private_redis
from redis_cache_middleware import CacheMiddleware, CacheRule

CALLS_KEY = "bench:stampede:calls"


def app_from_env() -> Starlette:
    """The benchmark server: a model that takes BENCH_DELAY s and counts its calls in Redis."""
    url = os.environ["REDIS_URL"]
    delay = float(os.environ.get("BENCH_DELAY", "0.1"))
    counter = redis.asyncio.Redis.from_url(url, max_connections=10_000)

    async def predict(request: Request) -> JSONResponse:
        await counter.incr(CALLS_KEY)
        await asyncio.sleep(delay)
        return JSONResponse({"prediction": request.query_params.get("x")})

    app = Starlette(routes=[Route("/predict", predict)])
    app.add_middleware(
        CacheMiddleware,
        redis_url=url,
        rules=[CacheRule("/predict", ttl=300)],
        namespace="stampede",
        version=os.environ["BENCH_VERSION"],
        coalesce=os.environ.get("BENCH_COALESCE") == "1",
        lock=os.environ.get("BENCH_LOCK") == "1",
    )
    return app


@contextmanager
def servers(count: int, env: dict[str, str]) -> Iterator[list[str]]:
    """`count` uvicorn processes of the benchmark app, each on its own port (like hosts behind a balancer)."""
    ports = [free_port() for _ in range(count)]
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "benchmarks.stampede:app_from_env",
        "--factory",
        "--no-access-log",
    ]
    processes = [
        subprocess.Popen([*command, "--port", str(port), "--log-level", "warning"], env={**os.environ, **env})
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for url in urls:
            _wait(url + "/health")
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait()


def _wait(health_url: str, seconds: float = 20) -> None:
    """Until `health_url` answers (404: the app has no such route, but the server is up)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(health_url).status_code == 404:
                return
        except (OSError, redis.RedisError, httpx.HTTPError):
            pass
        if time.monotonic() > deadline:
            sys.exit("a benchmark server did not come up")
        time.sleep(0.05)


@dataclass
class Result:
    scenario: str
    processes: int
    calls: int
    ok: int
    p50_ms: float
    p99_ms: float
    max_ms: float


async def fire(urls: list[str], burst: int) -> tuple[int, list[float]]:
    limits = httpx.Limits(max_connections=burst, max_keepalive_connections=burst)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def one(i: int) -> tuple[int, float]:
            started = time.perf_counter()
            # one Host for every process, as behind a load balancer: the key includes it
            response = await client.get(
                urls[i % len(urls)] + "/predict?x=cold", headers={"host": "api.example"}
            )
            return response.status_code, (time.perf_counter() - started) * 1000

        results = await asyncio.gather(*(one(i) for i in range(burst)))
    return sum(1 for status, _ in results if status == 200), [ms for _, ms in results]


def run(
    scenario: str, redis_url: str, processes: int, coalesce: bool, lock: bool, args: argparse.Namespace
) -> Result:
    env = {
        "REDIS_URL": redis_url,
        "BENCH_DELAY": str(args.delay),
        "BENCH_VERSION": f"v{time.monotonic_ns()}",
        "BENCH_COALESCE": "1" if coalesce else "0",
        "BENCH_LOCK": "1" if lock else "0",
    }
    counter = redis.Redis.from_url(redis_url)
    counter.delete(CALLS_KEY)
    with servers(processes, env) as urls:
        ok, latencies = asyncio.run(fire(urls, args.burst))
    calls = int(counter.get(CALLS_KEY) or 0)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return Result(scenario, processes, calls, ok, statistics.median(latencies), p99, latencies[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--burst", type=int, default=200, help="identical cold requests sent at once")
    parser.add_argument("--delay", type=float, default=0.1, help="seconds one model call takes")
    parser.add_argument("--workers", type=int, default=4, help="server processes in the multi-process runs")
    args = parser.parse_args()
    with private_redis() as (url, _):
        results = [
            run("no protection (coalesce=False)", url, 1, False, False, args),
            run("single-flight (default)", url, 1, True, False, args),
            run("single-flight, no lock", url, args.workers, True, False, args),
            run("single-flight + Redis lock", url, args.workers, True, True, args),
        ]
    print(
        f"Burst of {args.burst} identical cold requests, model call {args.delay * 1000:.0f} ms, loopback.\n"
    )
    print("| scenario | processes | model calls | 200s | p50 ms | p99 ms | max ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(
            f"| {r.scenario} | {r.processes} | {r.calls} | {r.ok}/{args.burst} | {r.p50_ms:.1f} | "
            f"{r.p99_ms:.1f} | {r.max_ms:.1f} |"
        )


if __name__ == "__main__":
    main()

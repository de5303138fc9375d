"""Server time of row-level answers, in process (no HTTP server): a single-row hit, a fully cached batch of
32 rows, and a batch of 32 with 4 rows missing, with the Redis commands each costs.

    python -m benchmarks.batchpath [--iterations 2000]

Every scenario calls the demo's FastAPI app wrapped in the cache directly through ASGI, with a private
redis-server on loopback. The time of a partial batch is reported beside the app's own time for the same
4-row batch without the cache, so that the cache's overhead is their difference.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import redis

from demo.app import create_app
from redis_cache_middleware import RedisBackend
from tests.redis_server import RedisServer
from tests.support import http_scope

Call = Callable[[], Awaitable[None]]


def scope(method: str, path: str, query: bytes = b"", body: bytes = b"") -> dict[str, Any]:
    """The tests' hand-made scope, with the JSON body's fields when there is a body."""
    built = http_scope(path, query, method)
    if body:
        built["headers"] = [
            (b"host", b"testserver"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
    return built


def caller(app: Any, method: str, path: str, query: bytes = b"", body: bytes = b"") -> Call:
    """One request through `app`; raises unless it answers 200."""

    async def call() -> None:
        sent = False
        status = 0

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(scope(method, path, query, body), receive, send)
        if status != 200:
            raise RuntimeError(f"{method} {path} answered {status}")

    return call


async def timed(call: Call, iterations: int) -> tuple[float, float]:
    """Median and p99 of `call`, in microseconds."""
    samples = []
    for _ in range(iterations):
        began = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - began) * 1e6)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def commands(client: redis.Redis) -> int:
    stats: dict[str, dict[str, int]] = client.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_info",))


def rows(rng: random.Random, n: int) -> list[list[float]]:
    return [
        [round(rng.uniform(4, 8), 1), round(rng.uniform(2, 4.5), 1), round(rng.uniform(1, 7), 1), 0.2]
        for _ in range(n)
    ]


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=2000)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", module="sklearn")
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as folder:
        server = RedisServer(Path(folder) / "redis").start()
        client = server.client()
        model = Path(folder) / "model.joblib"
        backend = RedisBackend.from_url(server.url, timeout=0.5)
        app = create_app(backend=backend, model_path=model)
        bare = create_app(model_path=model, rules=[])
        try:
            single = caller(
                app, "GET", "/predict", b"sepal_length=5.1&sepal_width=3.5&petal_length=1.4&petal_width=0.2"
            )
            batch = rows(rng, 32)
            full = caller(app, "POST", "/predict/batch", body=orjson.dumps({"instances": batch}))
            await single()
            await full()
            results: list[tuple[str, float, float, int]] = []
            for name, call in (
                ("single-row hit (GET /predict, row space)", single),
                ("batch of 32, every row stored", full),
            ):
                before = commands(client)
                await call()
                round_trips = commands(client) - before
                median, p99 = await timed(call, args.iterations)
                results.append((name, median, p99, round_trips))

            async def partial() -> None:  # 28 stored rows and 4 new ones, every time
                fresh = rows(rng, 4)
                body = orjson.dumps({"instances": batch[:28] + fresh})
                await caller(app, "POST", "/predict/batch", body=body)()

            async def app_alone() -> None:  # what the app itself takes for those 4 rows, no cache
                body = orjson.dumps({"instances": rows(rng, 4)})
                await caller(bare, "POST", "/predict/batch", body=body)()

            iterations = max(50, args.iterations // 10)
            median, p99 = await timed(partial, iterations)
            alone, alone_p99 = await timed(app_alone, iterations)
            results.append(("batch of 32, 4 rows missing", median, p99, 2))
            results.append(("the app alone, the same 4-row batch (no cache)", alone, alone_p99, 0))
        finally:
            await backend.aclose()
            client.close()
            server.kill()
    print("| scenario | median µs | p99 µs | Redis commands |")
    print("|---|---:|---:|---:|")
    for name, median, p99, round_trips in results:
        print(f"| {name} | {median:.0f} | {p99:.0f} | {round_trips:.0f} |")
    print(f"\nfully cached batch / single-row hit: {results[1][1] / results[0][1]:.2f}x (target <= 2x)")
    overhead = (results[2][1] - results[3][1]) / 1000
    print(f"partial batch overhead beyond the app's own time: {overhead:.2f} ms (target <= 1 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

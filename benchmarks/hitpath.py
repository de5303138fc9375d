"""The hit path without a server or a profiler: µs per request for whole apps and for each step.

    python -m benchmarks.hitpath [--redis-url URL] [--iterations N]

cProfile inflates code made of many small calls (the key encoding most), so its shares overstate them;
these timings are the unprofiled cost of each step, on the benchmark's request, in this process. Steps
whose signature changed since this file was written show as "n/a". Without --redis-url a private
redis-server is started (TieredBackend needs its subscription for L1 to be used).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import time
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks.apps import CONSTANT_BODY, HIT_PATH, raw_asgi
from benchmarks.processes import private_redis

Step = Callable[[], Awaitable[Any] | Any]

PATH, _, QUERY = HIT_PATH.partition("?")
SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "server": ("127.0.0.1", 8000),
    "client": ("127.0.0.1", 50000),
    "scheme": "http",
    "method": "GET",
    "root_path": "",
    "path": PATH,
    "raw_path": PATH.encode(),
    "query_string": QUERY.encode(),
    "headers": [(b"host", b"127.0.0.1:8000")],  # what wrk sends
}


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Any) -> None:
    return None


def asgi_call(app: Any) -> Step:
    def call() -> Awaitable[Any]:
        called: Awaitable[Any] = app(dict(SCOPE), _receive, _send)  # a fresh scope, as a server makes one
        return called

    return call


async def time_step(step: Step, iterations: int) -> float:
    """Best of 5 batches, µs per call."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(iterations):
            result = step()
            if asyncio.iscoroutine(result):
                await result
        best = min(best, (time.perf_counter() - started) / iterations)
    return best * 1e6


async def measure(redis_url: str, iterations: int) -> list[tuple[str, str]]:
    from fastapi import FastAPI

    from redis_cache_middleware import CacheMiddleware, CacheRule, RedisBackend, entry, keys, policy
    from redis_cache_middleware.backends.tiered import TieredBackend

    async def constant_json(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"18")],
            }
        )
        await send({"type": "http.response.body", "body": CONSTANT_BODY})

    rule = CacheRule("/predict", ttl=300, methods=("GET", "POST"))
    tiered = TieredBackend(RedisBackend.from_url(redis_url, timeout=0.5))
    remote = RedisBackend.from_url(redis_url, timeout=0.5)
    options: dict[str, Any] = {"rules": [rule], "namespace": "iris", "version": "bench"}
    l1_cache = CacheMiddleware(constant_json, backend=tiered, **options)
    redis_cache = CacheMiddleware(constant_json, backend=remote, **options)
    fastapi_cached = FastAPI()
    fastapi_cached.add_api_route("/predict", lambda: {"prediction": "0"})
    fastapi_cached.add_middleware(CacheMiddleware, backend=tiered, **options)
    fastapi_constant = FastAPI()

    @fastapi_constant.get("/predict")
    async def constant() -> dict[str, str]:
        return {"prediction": "0"}

    await redis_cache(dict(SCOPE), _receive, _send)  # the miss that stores the entry
    deadline = time.monotonic() + 5
    while not tiered.subscribed and time.monotonic() < deadline:
        await tiered.get("warm-up")
        await asyncio.sleep(0.01)
    await asgi_call(fastapi_cached)()
    await l1_cache(dict(SCOPE), _receive, _send)

    headers = policy.headers_map(SCOPE["headers"])
    credentials = l1_cache.config.credential_headers
    digest = keys.request_digest(rule.keying, SCOPE, headers, None, credentials)
    key = l1_cache.keys.entry(rule.key_name, digest)
    data = await tiered.get(key)
    stored = entry.decode(data, key) if data is not None else None
    rows: list[tuple[str, str]] = []

    async def row(label: str, make: Callable[[], Step]) -> None:
        try:
            step = make()
            value = f"{await time_step(step, iterations):.2f}"
        except Exception as exc:  # a step whose signature moved on: say so, keep the others
            value = f"n/a ({type(exc).__name__})"
        rows.append((label, value))

    await row("raw ASGI constant app", lambda: asgi_call(raw_asgi))
    await row(
        "FastAPI constant app (routing, validation, serialisation)", lambda: asgi_call(fastapi_constant)
    )
    await row("CacheMiddleware, L1 hit (TieredBackend), bare", lambda: asgi_call(l1_cache))
    await row("CacheMiddleware, L1 hit, inside a FastAPI app", lambda: asgi_call(fastapi_cached))
    await row(
        "CacheMiddleware, Redis hit, bare (one at a time: mostly waiting)", lambda: asgi_call(redis_cache)
    )
    await row("↳ RuleMatcher.match", lambda: lambda: l1_cache.rules.match("GET", PATH))
    await row("↳ policy.headers_map", lambda: lambda: policy.headers_map(SCOPE["headers"]))
    await row(
        "↳ keys.request_digest",
        lambda: lambda: keys.request_digest(rule.keying, SCOPE, headers, None, credentials),
    )
    await row(
        "↳ keys.canonical_request",
        lambda: lambda: keys.canonical_request(rule.keying, SCOPE, headers, None, credentials),
    )
    await row("↳ TieredBackend.get, L1 hit", lambda: lambda: tiered.get(key))
    await row("↳ MemoryBackend.get (the L1 store)", lambda: lambda: tiered.l1.get(key))
    await row("↳ RedisBackend.get (one at a time: mostly waiting)", lambda: lambda: remote.get(key))
    await row("↳ entry.decode", lambda: lambda: entry.decode(data, key))  # type: ignore[arg-type]

    def breaker_round_trip() -> None:
        l1_cache.breaker.allow()
        l1_cache.breaker.success()

    await row("↳ breaker.allow + success", lambda: breaker_round_trip)
    await row("↳ policy.cache_status", lambda: lambda: policy.cache_status("redis-cache", "hit", "ttl=300"))
    if stored is not None:
        await row("↳ Entry.age + headers list + content-length", lambda: lambda: _hit_headers(stored))
    await tiered.aclose()
    await remote.aclose()
    return rows


def _hit_headers(stored: Any) -> list[tuple[bytes, bytes]]:
    headers = list(stored.headers)
    headers.append((b"content-length", str(len(stored.body)).encode()))
    headers.append((b"age", str(int(stored.age(time.time()))).encode()))
    return headers


def markdown(rows: list[tuple[str, str]]) -> str:
    lines = ["| step | µs per call |", "| --- | ---: |"]
    lines += [f"| {label} | {value} |" for label, value in rows]
    return "\n".join(lines) + "\n"


def run(redis_url: str | None, iterations: int) -> str:
    def go(url: str) -> list[tuple[str, str]]:
        if importlib.util.find_spec("uvloop"):
            import uvloop

            return uvloop.run(measure(url, iterations))
        return asyncio.run(measure(url, iterations))

    if redis_url is not None:
        return markdown(go(redis_url))
    with contextlib.ExitStack() as stack:
        url, _client = stack.enter_context(private_redis())
        return markdown(go(url))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--redis-url")
    parser.add_argument("--iterations", type=int, default=3000)
    args = parser.parse_args()
    print(run(args.redis_url, args.iterations))


if __name__ == "__main__":
    main()

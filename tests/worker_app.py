"""A tiny cached app for multi-process tests: `uvicorn tests.worker_app:create_app --factory`.

Configured by the environment: `RCM_TEST_REDIS_URL` (required), `RCM_TEST_NAMESPACE`, and `RCM_TEST_LOCK`
(`1`: the cross-process lock on; `/slow` then counts its calls in Redis under `calls:slow`).
"""

from __future__ import annotations

import asyncio
import os

import redis.asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from redis_cache_middleware import CacheMiddleware, CacheRule, CircuitBreaker


def create_app() -> Starlette:
    """`/work?x=...` echoes `x` and the pid of the process that computed it; `/health` is not cached."""

    async def work(request: Request) -> Response:
        return JSONResponse({"x": request.query_params["x"], "pid": os.getpid()})

    counter = redis.asyncio.Redis.from_url(os.environ["RCM_TEST_REDIS_URL"])

    async def slow(request: Request) -> Response:
        await counter.incr("calls:slow")
        await asyncio.sleep(0.3)
        return JSONResponse({"x": request.query_params["x"], "pid": os.getpid()})

    async def health(request: Request) -> Response:
        return PlainTextResponse(str(os.getpid()))

    app = Starlette(routes=[Route("/work", work), Route("/slow", slow), Route("/health", health)])
    app.add_middleware(
        CacheMiddleware,
        redis_url=os.environ["RCM_TEST_REDIS_URL"],
        rules=[CacheRule("/work", ttl=60), CacheRule("/slow", ttl=60)],
        namespace=os.environ.get("RCM_TEST_NAMESPACE", "workers"),
        timeout=0.2,
        breaker=CircuitBreaker(reset_timeout=0.2),
        lock=os.environ.get("RCM_TEST_LOCK") == "1",
    )
    return app

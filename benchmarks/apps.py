"""The apps under test, one factory per scenario; heavy imports happen inside the factories.

Every iris app serves the demo's endpoint: `GET /predict` with the four measurements as query parameters,
answered by the demo's RandomForest (demo/train.py) as `{"prediction": "<class>"}`. Our cache is added
exactly as demo/app.py adds it (one rule on /predict, ttl 300, namespace `iris`, the model's version).
"""

# No `from __future__ import annotations`: FastAPI must see the endpoints' annotations as objects, and
# they name `Query` and `Prediction`, imported inside the factories.
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from fastapi import FastAPI

CONSTANT_BODY = b'{"prediction":"0"}'
HIT_PATH = "/predict?sepal_length=5.1&sepal_width=3.5&petal_length=1.4&petal_width=0.2"


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    factory: Callable[[str], ASGIApp]
    unique: bool = False  # every request a new query string (a miss each time)
    expect_cache: str | None = None  # the X-Cache a primed request must show
    peer: str | None = None  # the distribution a peer cache comes from


def _model() -> tuple[Any, str]:
    from demo.app import model_version
    from demo.train import default_model_path, default_n_estimators, load_or_train

    path = default_model_path()
    return load_or_train(path, default_n_estimators()), model_version(path)


def iris_app(decorate: Callable[[Any], Any] | None = None, *, use_async: bool = False) -> "FastAPI":
    """The demo's GET /predict (a sync endpoint, run in the thread pool, like the demo) and /health."""
    from fastapi import FastAPI, Query
    from starlette.concurrency import run_in_threadpool

    from demo.app import Prediction

    model, version = _model()

    def predict(sepal_length: float, sepal_width: float, petal_length: float, petal_width: float) -> str:
        return str(int(model.predict([[sepal_length, sepal_width, petal_length, petal_width]])[0]))

    app = FastAPI(title="iris benchmark")
    app.state.model_version = version
    wrap = decorate if decorate is not None else (lambda f: f)

    if use_async:  # for caches whose decorator needs a coroutine function (cashews)

        @app.get("/predict")
        @wrap
        async def predict_async(
            sepal_length: Annotated[float, Query()],
            sepal_width: Annotated[float, Query()],
            petal_length: Annotated[float, Query()],
            petal_width: Annotated[float, Query()],
        ) -> Prediction:
            label = await run_in_threadpool(predict, sepal_length, sepal_width, petal_length, petal_width)
            return Prediction(prediction=label)

    else:

        @app.get("/predict")
        @wrap
        def predict_get(
            sepal_length: Annotated[float, Query()],
            sepal_width: Annotated[float, Query()],
            petal_length: Annotated[float, Query()],
            petal_width: Annotated[float, Query()],
        ) -> Prediction:
            return Prediction(prediction=predict(sepal_length, sepal_width, petal_length, petal_width))

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _with_our_cache(redis_url: str, *, tiered: bool) -> ASGIApp:
    from redis_cache_middleware import CacheMiddleware, CacheRule, RedisBackend
    from redis_cache_middleware.backends.tiered import TieredBackend

    app = iris_app()
    backend = RedisBackend.from_url(redis_url)  # the demo's default: 50 ms bound, no retries
    rule = CacheRule("/predict", ttl=300, methods=("GET", "POST"))
    app.add_middleware(
        CacheMiddleware,
        backend=TieredBackend(backend) if tiered else backend,
        rules=[rule],
        namespace="iris",
        version=app.state.model_version,
    )
    return app


def no_cache(redis_url: str) -> ASGIApp:
    return iris_app()


def our_redis(redis_url: str) -> ASGIApp:
    return _with_our_cache(redis_url, tiered=False)


def our_tiered(redis_url: str) -> ASGIApp:
    return _with_our_cache(redis_url, tiered=True)


def fastapi_constant(redis_url: str) -> ASGIApp:
    from fastapi import FastAPI

    app = FastAPI(title="constant")

    @app.get("/predict")
    async def constant() -> dict[str, str]:
        return {"prediction": "0"}

    return app


async def raw_asgi(scope: Scope, receive: Receive, send: Send) -> None:
    """A plain ASGI callable: the fastest any Python app on this server can answer."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"18")],
        }
    )
    await send({"type": "http.response.body", "body": CONSTANT_BODY})


def raw_constant(redis_url: str) -> ASGIApp:
    return raw_asgi


def fastapi_cache2(redis_url: str) -> ASGIApp:
    """fastapi-cache2's `@cache` decorator under the route, its Redis backend initialised at start-up."""
    from contextlib import asynccontextmanager

    from fastapi_cache import FastAPICache
    from fastapi_cache.backends.redis import RedisBackend as PeerRedisBackend
    from fastapi_cache.decorator import cache
    from redis.asyncio import Redis

    app = iris_app(cache(expire=300))

    @asynccontextmanager
    async def lifespan(_: Any) -> Any:
        FastAPICache.init(PeerRedisBackend(Redis.from_url(redis_url)), prefix="fastapi-cache")
        yield

    app.router.lifespan_context = lifespan
    return app


def cashews(redis_url: str) -> ASGIApp:
    """cashews' `@cache(ttl=...)` on the endpoint (it needs an async endpoint; the model runs in a thread)."""
    from cashews import cache

    cache.setup(redis_url)
    return iris_app(cache(ttl="5m"), use_async=True)


def hishel(redis_url: str) -> ASGIApp:
    """hishel's ASGICacheMiddleware with its Redis storage; `rfc=False` caches 2xx GETs by URL for the TTL.

    (With `rfc=True` it follows RFC 9111 and stores nothing here: the endpoint sends no Cache-Control.)
    """
    from hishel import AsyncRedisStorage
    from hishel.asgi import ASGICacheMiddleware
    from redis.asyncio import Redis

    app = iris_app()
    storage = AsyncRedisStorage(client=Redis.from_url(redis_url), default_ttl=300)
    app.add_middleware(ASGICacheMiddleware, storage=storage, rfc=False)
    return app


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("no-middleware", "iris app, no cache: the model runs on every request", no_cache),
        Scenario("miss", "iris app + CacheMiddleware(Redis), every request unique", our_redis, True, "MISS"),
        Scenario("redis-hit", "iris app + CacheMiddleware(Redis), same request", our_redis, False, "HIT"),
        Scenario(
            "l1-hit", "iris app + CacheMiddleware(TieredBackend), same request", our_tiered, False, "HIT"
        ),
        Scenario("fastapi-constant", "FastAPI `async def` endpoint returning a constant", fastapi_constant),
        Scenario("raw-asgi", "raw ASGI callable returning a constant", raw_constant),
        Scenario(
            "fastapi-cache2",
            "iris app + fastapi-cache2 `@cache` (Redis), same request",
            fastapi_cache2,
            peer="fastapi-cache2",
        ),
        Scenario("cashews", "iris app + cashews `@cache` (Redis), same request", cashews, peer="cashews"),
        Scenario(
            "hishel",
            "iris app + hishel ASGICacheMiddleware (Redis, rfc=False), same request",
            hishel,
            peer="hishel",
        ),
    )
}


def build(name: str, redis_url: str) -> ASGIApp:
    """The app for scenario `name`, single-threaded numerics so the server stays on its one core."""
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")
    return SCENARIOS[name].factory(redis_url)

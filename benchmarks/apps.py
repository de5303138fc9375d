"""The apps under test, one factory per scenario; heavy imports happen inside the factories.

Every app but raw-asgi is the same iris app, so every scenario's server has the same heap (the demo's
RandomForest, the embedder, numpy, scikit-learn, FastAPI): `GET /predict` with the four measurements as
query parameters, answered by the model as `{"prediction": "<class>"}`, and `GET /embed?text=...`, a
~50 KB `{"embedding": [4,000 floats]}` (benchmarks/embedding.py). The constant scenarios serve the same
routes from constant `async def` endpoints. Our cache is added exactly as demo/app.py adds it (one rule per
route, ttl 300, namespace `iris`, the model's version).
"""

# No `from __future__ import annotations`: FastAPI must see the endpoints' annotations as objects, and
# they name `Query`, `Prediction` and `Embedding`, imported inside the factories.
import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Annotated, Any

from starlette.types import ASGIApp, Receive, Scope, Send

from benchmarks.embedding import EMBED_PATH, EMBED_TEXT, Embedder, Embedding, embedding_json, expected_body

if TYPE_CHECKING:
    from fastapi import FastAPI

CONSTANT_BODY = b'{"prediction":"0"}'
HIT_PATH = "/predict?sepal_length=5.1&sepal_width=3.5&petal_length=1.4&petal_width=0.2"


@dataclass(frozen=True)
class Group:
    """Scenarios compared with each other: their path's answer, and the runs every ratio is taken to."""

    title: str
    reference: str  # a constant endpoint in the same heap: req/s and p99 ratios are to this run
    uncached: str  # the same endpoint without any cache
    body: Callable[[], bytes]  # what every scenario of the group must answer on its path


GROUPS = {
    "small": Group(
        "18-byte prediction (GET /predict)", "fastapi-constant", "no-middleware", lambda: CONSTANT_BODY
    ),
    "50k": Group(
        "~50 KB embedding (GET /embed)",
        "constant-50k",
        "no-middleware-50k",
        functools.cache(expected_body),
    ),
}


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    factory: Callable[[str], ASGIApp]
    kind: str = "ours"  # ours, uncached, constant or peer (the chart's colours)
    group: str = "small"  # a key of GROUPS
    path: str = HIT_PATH  # what the load generator requests (unless `unique`)
    unique: bool = False  # every request a new query string (a miss each time)
    expect_cache: str | None = None  # the `cache_header` a primed request must show
    cache_header: str = "x-cache"
    max_commands: float | None = None  # Redis commands per request above which the run is flagged
    peer: str | None = None  # the distribution a peer cache comes from


def _model() -> tuple[Any, str]:
    from demo.app import model_version
    from demo.train import default_model_path, default_n_estimators, load_or_train

    path = default_model_path()
    return load_or_train(path, default_n_estimators()), model_version(path)


def iris_app(
    decorate: Callable[[Any], Any] | None = None,
    *,
    use_async: bool = False,
    dependencies: Sequence[Any] | None = None,
    constant: bool = False,
) -> "FastAPI":
    """The demo's GET /predict, GET /embed and /health; the endpoints are sync (run in the thread pool,
    like the demo's) unless `use_async`. `decorate` wraps and `dependencies` guard both endpoints.

    `constant`: both endpoints are `async def`s returning constants (the 50 KB one its precomputed bytes),
    while the model and the embedder are loaded all the same, so that the heap is the cached apps' own.
    """
    from fastapi import FastAPI, Query, Response
    from starlette.concurrency import run_in_threadpool

    from demo.app import Prediction

    model, version = _model()
    embedder = Embedder()

    def predict(sepal_length: float, sepal_width: float, petal_length: float, petal_width: float) -> str:
        return str(int(model.predict([[sepal_length, sepal_width, petal_length, petal_width]])[0]))

    app = FastAPI(title="iris benchmark")
    app.state.model_version = version
    app.state.model, app.state.embedder = model, embedder
    wrap = decorate if decorate is not None else (lambda f: f)
    route = functools.partial(app.get, dependencies=dependencies)

    if constant:
        embedding = embedding_json(embedder(EMBED_TEXT))

        @route("/predict")
        async def predict_constant() -> dict[str, str]:
            return {"prediction": "0"}

        @route("/embed")
        async def embed_constant() -> Response:
            return Response(content=embedding, media_type="application/json")

    elif use_async:  # for caches whose decorator needs a coroutine function (cashews)

        @route("/predict")
        @wrap
        async def predict_async(
            sepal_length: Annotated[float, Query()],
            sepal_width: Annotated[float, Query()],
            petal_length: Annotated[float, Query()],
            petal_width: Annotated[float, Query()],
        ) -> Prediction:
            label = await run_in_threadpool(predict, sepal_length, sepal_width, petal_length, petal_width)
            return Prediction(prediction=label)

        @route("/embed")
        @wrap
        async def embed_async(text: Annotated[str, Query()]) -> Embedding:
            return Embedding(embedding=await run_in_threadpool(embedder, text))

    else:

        @route("/predict")
        @wrap
        def predict_get(
            sepal_length: Annotated[float, Query()],
            sepal_width: Annotated[float, Query()],
            petal_length: Annotated[float, Query()],
            petal_width: Annotated[float, Query()],
        ) -> Prediction:
            return Prediction(prediction=predict(sepal_length, sepal_width, petal_length, petal_width))

        @route("/embed")
        @wrap
        def embed_get(text: Annotated[str, Query()]) -> Embedding:
            return Embedding(embedding=embedder(text))

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _with_our_cache(redis_url: str, *, tiered: bool) -> ASGIApp:
    from redis_cache_middleware import CacheMiddleware, CacheRule, RedisBackend
    from redis_cache_middleware.backends.tiered import TieredBackend

    app = iris_app()
    backend = RedisBackend.from_url(redis_url)  # the demo's default: 50 ms bound, no retries
    rules = [CacheRule("/predict", ttl=300, methods=("GET", "POST")), CacheRule("/embed", ttl=300)]
    app.add_middleware(
        CacheMiddleware,
        backend=TieredBackend(backend) if tiered else backend,
        rules=rules,
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
    return iris_app(constant=True)


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


def fastapi_redis_sdk(redis_url: str) -> ASGIApp:
    """fastapi-redis-sdk set up as its README's "Caching" section does: `FastAPIRedis(app).lifespan()
    .caching()` and `dependencies=[Depends(cache(ttl=...))]` on each route; the URL is given through its
    settings object (the README's "programmatic configuration"), before any `cache()` reads them.
    """
    from fastapi import Depends
    from redis_fastapi import FastAPIRedis, cache, get_settings

    get_settings().url = redis_url
    app = iris_app(dependencies=[Depends(cache(ttl=300))])
    FastAPIRedis(app).lifespan().caching()
    return app


def _scenarios() -> list[Scenario]:
    """The small-body group, then the same caches (and baselines) on the 50 KB route, named `*-50k`."""
    ours = "iris app + CacheMiddleware"
    no_cache_run = Scenario(
        "no-middleware", "iris app, no cache: the endpoint runs every time", no_cache, "uncached"
    )
    redis_hit = Scenario(
        "redis-hit", f"{ours}(Redis), same request", our_redis, expect_cache="HIT", max_commands=1
    )
    l1_hit = Scenario("l1-hit", f"{ours}(TieredBackend), same request", our_tiered, expect_cache="HIT")
    constant = Scenario(
        "fastapi-constant", "iris app's heap, constant `async def` route", fastapi_constant, "constant"
    )
    peer = "iris app + {}, same request"
    peers = [
        Scenario(
            "fastapi-cache2",
            peer.format("fastapi-cache2 `@cache` (Redis)"),
            fastapi_cache2,
            "peer",
            peer="fastapi-cache2",
        ),
        Scenario("cashews", peer.format("cashews `@cache` (Redis)"), cashews, "peer", peer="cashews"),
        Scenario(
            "hishel",
            peer.format("hishel ASGICacheMiddleware (Redis, rfc=False)"),
            hishel,
            "peer",
            peer="hishel",
        ),
        Scenario(
            "fastapi-redis-sdk",
            peer.format("fastapi-redis-sdk `Depends(cache())` (Redis)"),
            fastapi_redis_sdk,
            "peer",
            expect_cache="HIT",
            cache_header="x-redis-cache",
            peer="fastapi-redis-sdk",
        ),
    ]
    small = [
        no_cache_run,
        Scenario("miss", f"{ours}(Redis), every request unique", our_redis, unique=True, expect_cache="MISS"),
        redis_hit,
        l1_hit,
        constant,
        Scenario("raw-asgi", "raw ASGI callable returning a constant (no FastAPI)", raw_constant, "constant"),
        *peers,
    ]
    big = [
        no_cache_run,
        replace(
            constant, name="constant", description="iris app's heap, `async def` route: precomputed bytes"
        ),
        redis_hit,
        l1_hit,
        *peers,
    ]
    return small + [replace(s, name=f"{s.name}-50k", group="50k", path=EMBED_PATH) for s in big]


SCENARIOS: dict[str, Scenario] = {s.name: s for s in _scenarios()}


def build(name: str, redis_url: str) -> ASGIApp:
    """The app for scenario `name`, single-threaded numerics so the server stays on its one core."""
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")
    return SCENARIOS[name].factory(redis_url)

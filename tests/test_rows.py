"""Row-level caching of batch predictions, one row space across routes, and typed keys (real Redis)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import httpx
import pytest
import redis
from fastapi import FastAPI, HTTPException, Query
from pydantic import BaseModel

from redis_cache_middleware import CacheMiddleware, CacheRule, RedisBackend
from redis_cache_middleware.batch import BatchRows, Row

from .redis_server import RedisServer
from .support import client_for

FEATURES = ("a", "b")


class Batch(BaseModel):
    instances: list[list[float]]
    scale: float = 1.0


class Single(BaseModel):
    a: float
    b: float


class Model:
    """A model whose answer for a row is a pure function of the row (and `scale`); it records every row
    it computes and every batch it receives."""

    def __init__(self) -> None:
        self.rows: list[list[float]] = []
        self.batches: list[list[list[float]]] = []
        self.delay = 0.0
        self.status = 200
        self.short = False

    def predict(self, row: list[float], scale: float = 1.0) -> float:
        self.rows.append(row)
        return round((row[0] * 10 + row[1]) * scale, 6)


def build(backend: RedisBackend, model: Model, **options: Any) -> FastAPI:
    app = FastAPI()

    @app.post("/batch")
    async def batch(body: Batch) -> dict[str, Any]:
        model.batches.append(body.instances)
        if model.delay:
            await asyncio.sleep(model.delay)
        if model.status != 200:
            raise HTTPException(status_code=model.status, detail="model down")
        predictions = [model.predict(row, body.scale) for row in body.instances]
        if model.short:
            predictions = predictions[:-1]
        return {"model": "m1", "predictions": predictions, "note": "kept"}

    @app.get("/single")
    async def single_get(a: Annotated[float, Query()], b: Annotated[float, Query()]) -> dict[str, Any]:
        return {"prediction": model.predict([a, b]), "model": "m1"}

    @app.post("/single")
    async def single_post(features: Single) -> dict[str, Any]:
        return {"prediction": model.predict([features.a, features.b]), "model": "m1"}

    rules = [
        CacheRule(
            "/batch", ttl=60, methods=("POST",), batch=BatchRows("/instances", "/predictions", space="m")
        ),
        CacheRule("/single", ttl=60, methods=("GET", "POST"), row=Row("m", FEATURES, "/prediction")),
    ]
    app.add_middleware(CacheMiddleware, backend=backend, rules=rules, namespace="rows", **options)
    return app


def expected(rows: list[list[float]], scale: float = 1.0) -> list[float]:
    return [round((row[0] * 10 + row[1]) * scale, 6) for row in rows]


async def post_batch(client: httpx.AsyncClient, rows: list[list[float]], **extra: Any) -> httpx.Response:
    return await client.post("/batch", json={"instances": rows, **extra})


async def test_a_batch_is_stored_row_by_row_and_answered_whole_from_its_rows(backend: RedisBackend) -> None:
    model = Model()
    rows = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    async with client_for(build(backend, model)) as client:
        first = await post_batch(client, rows)
        again = await post_batch(client, rows)
    assert first.json() == {"model": "m1", "predictions": expected(rows), "note": "kept"}
    assert again.content == first.content
    assert (first.headers["x-cache"], again.headers["x-cache"]) == ("MISS", "HIT")
    assert "detail=rows-3/3" in again.headers["cache-status"]
    assert len(model.rows) == 3


async def test_only_the_missing_rows_reach_the_app_and_the_answer_keeps_the_order(
    backend: RedisBackend,
) -> None:
    model = Model()
    async with client_for(build(backend, model)) as client:
        await post_batch(client, [[1.0, 1.0], [2.0, 2.0]])
        mixed = [[3.0, 3.0], [1.0, 1.0], [4.0, 4.0], [2.0, 2.0]]
        response = await post_batch(client, mixed)
    assert model.batches[-1] == [[3.0, 3.0], [4.0, 4.0]]
    assert response.json()["predictions"] == expected(mixed)
    assert response.headers["x-cache"] == "PARTIAL"
    assert "detail=rows-2/4" in response.headers["cache-status"]
    assert int(response.headers["content-length"]) == len(response.content)


async def test_duplicates_inside_a_batch_are_computed_once(backend: RedisBackend) -> None:
    model = Model()
    rows = [[7.0, 1.0], [8.0, 1.0], [7.0, 1.0], [7.0, 1.0]]
    async with client_for(build(backend, model)) as client:
        response = await post_batch(client, rows)
    assert model.batches == [[[7.0, 1.0], [8.0, 1.0]]]
    assert response.json()["predictions"] == expected(rows)


async def test_rows_are_keyed_on_the_rest_of_the_request(backend: RedisBackend) -> None:
    model = Model()
    rows = [[1.0, 2.0]]
    async with client_for(build(backend, model)) as client:
        plain = await post_batch(client, rows)
        scaled = await post_batch(client, rows, scale=2.0)
    assert scaled.json()["predictions"] == expected(rows, 2.0) != plain.json()["predictions"]
    assert scaled.headers["x-cache"] == "MISS"


async def test_concurrent_overlapping_batches_compute_each_row_once(backend: RedisBackend) -> None:
    model = Model()
    model.delay = 0.2
    batches = [[[float(i), 1.0], [float(i + 1), 1.0]] for i in range(6)]  # neighbours share a row
    async with client_for(build(backend, model)) as client:
        responses = await asyncio.gather(*(post_batch(client, rows) for rows in batches))
    for rows, response in zip(batches, responses, strict=True):
        assert response.json()["predictions"] == expected(rows)
    computed = [tuple(row) for row in model.rows]
    assert sorted(computed) == sorted(set(computed)), "no row computed twice"


async def test_a_row_computed_by_the_batch_route_answers_the_single_routes(backend: RedisBackend) -> None:
    model = Model()
    async with client_for(build(backend, model)) as client:
        await client.get("/single?a=9&b=9")  # stores the GET route's envelope
        await client.post("/single", json={"a": 8, "b": 8})  # and the POST route's
        computed = len(model.rows)
        await post_batch(client, [[1.5, 2.5]])
        got = await client.get("/single?b=2.50&a=1.5")
        posted = await client.post("/single", json={"b": 2.5, "a": 1.50})
    assert len(model.rows) == computed + 1
    assert got.headers["x-cache"] == posted.headers["x-cache"] == "HIT"
    assert got.json() == posted.json() == {"prediction": expected([[1.5, 2.5]])[0], "model": "m1"}


async def test_a_row_computed_by_a_single_route_answers_the_batch_route(backend: RedisBackend) -> None:
    model = Model()
    async with client_for(build(backend, model)) as client:
        await post_batch(client, [[0.0, 0.0]])  # the batch route's envelope
        single = await client.get("/single?a=2&b=3")
        batch = await post_batch(client, [[2.0, 3.0], [0.0, 0.0]])
    assert single.headers["x-cache"] == "MISS"
    assert batch.headers["x-cache"] == "HIT"
    assert batch.json()["predictions"] == expected([[2.0, 3.0], [0.0, 0.0]])


async def test_typed_keys_share_one_entry_for_every_spelling_of_a_float(backend: RedisBackend) -> None:
    model = Model()
    async with client_for(build(backend, model)) as client:
        answers = [await client.get(f"/single?a={a}&b=1") for a in ("5.1", "5.10", "5.100")]
        batch = [
            await client.post(
                "/batch",
                content=f'{{"instances": [[{v}, 1]]}}'.encode(),
                headers={"content-type": "application/json"},
            )
            for v in ("5", "5.0")
        ]
    assert [a.headers["x-cache"] for a in answers] == ["MISS", "HIT", "HIT"]
    assert [b.headers["x-cache"] for b in batch] == ["MISS", "HIT"]
    assert len(model.rows) == 2


async def test_without_typed_keys_spellings_stay_apart(backend: RedisBackend) -> None:
    model = Model()
    async with client_for(build(backend, model, typed_keys=False)) as client:
        answers = [await client.get(f"/single?a={a}&b=1") for a in ("5.1", "5.10")]
    assert [a.headers["x-cache"] for a in answers] == ["MISS", "MISS"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "batch-not-json"),
        (b'{"other": []}', "batch-no-rows"),
        (b'{"instances": 5}', "batch-not-list"),
        (b'{"instances": []}', "batch-empty"),
    ],
)
async def test_bad_batches_go_to_the_app_unchanged(backend: RedisBackend, body: bytes, reason: str) -> None:
    model = Model()
    async with client_for(build(backend, model)) as client:
        response = await client.post("/batch", content=body, headers={"content-type": "application/json"})
    assert response.headers["x-cache"] == "BYPASS"
    assert f"detail={reason}" in response.headers["cache-status"]
    assert response.status_code in (200, 422)  # the app's own validation answers


async def test_an_error_from_the_app_reaches_the_client_and_nothing_is_stored(
    backend: RedisBackend, redis_client: redis.Redis
) -> None:
    model = Model()
    async with client_for(build(backend, model)) as client:
        model.status = 503
        failed = await post_batch(client, [[1.0, 1.0]])
        model.status = 200
        after = await post_batch(client, [[1.0, 1.0]])
    assert failed.status_code == 503 and failed.json() == {"detail": "model down"}
    assert after.headers["x-cache"] == "MISS"


async def test_an_answer_of_the_wrong_length_is_never_split(
    backend: RedisBackend, redis_client: redis.Redis
) -> None:
    model = Model()
    async with client_for(build(backend, model)) as client:
        await post_batch(client, [[1.0, 1.0]])
        model.short = True
        response = await post_batch(client, [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
        model.short = False
        again = await post_batch(client, [[2.0, 2.0]])
    # the sub-batch answer was one short: the client got the app's answer to its own batch, unsplit
    assert response.json()["predictions"] == expected([[1.0, 1.0], [2.0, 2.0]])
    assert again.headers["x-cache"] == "MISS", "nothing of the short answer was stored"


async def test_redis_down_sends_the_whole_batch_to_the_app(fresh_redis: RedisServer) -> None:
    model = Model()
    backend = RedisBackend.from_url(fresh_redis.url, timeout=0.2)
    try:
        async with client_for(build(backend, model)) as client:
            await post_batch(client, [[1.0, 1.0]])
            fresh_redis.kill()
            rows = [[1.0, 1.0], [2.0, 2.0]]
            response = await post_batch(client, rows)
    finally:
        await backend.aclose()
    assert response.status_code == 200 and response.headers["x-cache"] == "BYPASS"
    assert response.json()["predictions"] == expected(rows)
    assert model.batches[-1] == rows


async def test_open_inference_batches_are_cached_row_by_row(backend: RedisBackend) -> None:
    app = FastAPI()
    seen: list[int] = []

    @app.post("/v2/models/m/infer")
    async def infer(body: dict[str, Any]) -> dict[str, Any]:
        data, shape = body["inputs"][0]["data"], body["inputs"][0]["shape"]
        seen.append(shape[0])
        width = shape[1]
        rows = [data[i * width : (i + 1) * width] for i in range(shape[0])]
        out = [sum(row) for row in rows]
        return {
            "model_name": "m",
            "outputs": [{"name": "y", "shape": [shape[0], 1], "datatype": "FP64", "data": out}],
        }

    rule = CacheRule("/v2/models/m/infer", ttl=60, methods=("POST",), batch=BatchRows.open_inference())
    app.add_middleware(CacheMiddleware, backend=backend, rules=[rule], namespace="oip")

    def request(rows: list[list[float]]) -> dict[str, Any]:
        flat = [v for row in rows for v in row]
        return {"inputs": [{"name": "x", "shape": [len(rows), 2], "datatype": "FP64", "data": flat}]}

    async with client_for(app) as client:
        await client.post("/v2/models/m/infer", json=request([[1.0, 2.0], [3.0, 4.0]]))
        partial = await client.post("/v2/models/m/infer", json=request([[3.0, 4.0], [5.0, 6.0]]))
    assert seen == [2, 1]
    assert partial.json()["outputs"][0]["data"] == [7.0, 11.0]
    assert partial.json()["outputs"][0]["shape"] == [2, 1]
    assert partial.headers["x-cache"] == "PARTIAL"

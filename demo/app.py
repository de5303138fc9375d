"""FastAPI app serving the iris model; `/predict` is cached by CacheMiddleware."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Header, HTTPException, Query, Request
from pydantic import BaseModel
from starlette.routing import Route

from demo.train import default_model_path, default_n_estimators, load_or_train, train
from redis_cache_middleware import Backend, BatchRows, CacheMiddleware, CacheRule, MetricsEndpoint, Row
from redis_cache_middleware.dashboard import CacheDashboard

logger = logging.getLogger(__name__)

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


def default_rules(ttl: int) -> list[CacheRule]:
    """The demo's cache: the single routes and the batch route share one row space, `iris`, so a row
    computed by any of them answers all of them."""
    return [
        CacheRule("/predict", ttl=ttl, methods=("GET", "POST"), row=Row("iris", FEATURES, "/prediction")),
        CacheRule(
            "/predict/batch",
            ttl=ttl,
            methods=("POST",),
            batch=BatchRows("/instances", "/predictions", space="iris"),
        ),
    ]


class Features(BaseModel):
    """The four iris measurements, in centimetres."""

    sepal_length: float
    sepal_width: float
    petal_length: float
    petal_width: float


class Batch(BaseModel):
    """Rows of the four measurements, in the KServe v1 / TF Serving shape `{"instances": [[...], ...]}`."""

    instances: list[list[float]]


class BatchPredictions(BaseModel):
    """One predicted class index (a string) per instance, in order."""

    predictions: list[str]


class Retrain(BaseModel):
    """How to retrain: the forest's random seed and, optionally, its size."""

    seed: int = 0
    trees: int | None = None


class Prediction(BaseModel):
    """Predicted iris class index, as a string."""

    prediction: str


def model_version(path: Path) -> str:
    """Return `model-` plus the first 12 hex chars of the sha256 of the file at `path`."""
    return "model-" + hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def create_app(
    *,
    redis_url: str | None = None,
    backend: Backend | None = None,
    model_path: Path | None = None,
    n_estimators: int | None = None,
    rules: Sequence[CacheRule] | None = None,
    namespace: str = "iris",
    typed_keys: bool = True,
) -> FastAPI:
    """Build the app, loading (or training) the model now; uses `backend` if given, else `redis_url`.
    `rules` replace `default_rules()`; an empty sequence serves without the cache."""
    path = model_path if model_path is not None else default_model_path()
    trees = n_estimators if n_estimators is not None else default_n_estimators()
    model = load_or_train(path, trees)
    version = model_version(path)
    admin_token = os.environ.get("DEMO_ADMIN_TOKEN", "")

    counting = threading.Lock()

    def predict_rows(rows: list[list[float]]) -> list[str]:
        with counting:  # sync endpoints run in a thread pool
            app.state.rows_computed += len(rows)
        return [str(int(label)) for label in app.state.model.predict(rows)] if rows else []

    def predict(sepal_length: float, sepal_width: float, petal_length: float, petal_width: float) -> str:
        return predict_rows([[sepal_length, sepal_width, petal_length, petal_width]])[0]

    app = FastAPI(title="iris demo")
    app.state.model = model
    app.state.model_version = version
    app.state.rows_computed = 0  # model rows computed since start: what the cache saves shows here

    @app.get("/predict")
    def predict_get(
        sepal_length: Annotated[float, Query()],
        sepal_width: Annotated[float, Query()],
        petal_length: Annotated[float, Query()],
        petal_width: Annotated[float, Query()],
    ) -> Prediction:
        """Classify the measurements given as query parameters."""
        return Prediction(prediction=predict(sepal_length, sepal_width, petal_length, petal_width))

    @app.post("/predict")
    def predict_post(features: Features) -> Prediction:
        """Classify the measurements given as a JSON body."""
        return Prediction(
            prediction=predict(
                features.sepal_length, features.sepal_width, features.petal_length, features.petal_width
            )
        )

    @app.post("/predict/batch")
    def predict_batch(batch: Batch) -> BatchPredictions:
        """Classify every row of `instances`; rows of another width are refused (422)."""
        if any(len(row) != 4 for row in batch.instances):
            raise HTTPException(status_code=422, detail="each instance has 4 measurements")
        return BatchPredictions(predictions=predict_rows(batch.instances))

    @app.get("/health")
    def health() -> dict[str, str]:
        """Liveness probe; never cached."""
        return {"status": "ok"}

    @app.post("/admin/reload")
    def reload(
        request: Request, retrain: Retrain, x_admin_token: Annotated[str, Header()] = ""
    ) -> dict[str, str]:
        """Retrain (with `seed`) and load the model, then bump the cache version so no prediction of the
        old model is ever served again. Needs `X-Admin-Token` equal to $DEMO_ADMIN_TOKEN (unset: disabled)."""
        if not admin_token or not hmac.compare_digest(x_admin_token, admin_token):
            raise HTTPException(status_code=403, detail="admin token required")
        app.state.model = train(path, retrain.trees or trees, seed=retrain.seed)
        app.state.model_version = model_version(path)
        request.app.state.cache.set_version(app.state.model_version)
        logger.info("model reloaded: cache version %s", app.state.model_version)
        return {"version": app.state.model_version}

    app.router.routes.append(Route("/metrics", MetricsEndpoint()))
    # The live cache dashboard; set DEMO_DASHBOARD_TOKEN to require `?token=` (the demo listens on
    # 127.0.0.1 by default, so it is open there).
    app.mount("/cache", CacheDashboard(token=os.environ.get("DEMO_DASHBOARD_TOKEN") or None))

    if rules is None:
        rules = default_rules(int(os.environ.get("DEMO_TTL", "300")))
    url = None if backend is not None else redis_url or os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
    if rules:
        app.add_middleware(
            CacheMiddleware,
            redis_url=url,
            backend=backend,
            rules=list(rules),
            namespace=namespace,
            version=version,
            typed_keys=typed_keys,
        )
    logger.info("app ready: model %s (%d trees), cache version %s", path, trees, version)
    return app

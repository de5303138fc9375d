"""The iris demo: cached predictions equal the model's, and `python -m demo` works as the README says."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from sklearn.datasets import load_iris

from demo.app import create_app
from redis_cache_middleware import RedisBackend

from .redis_server import RedisServer, free_port
from .support import client_for

ROOT = Path(__file__).resolve().parent.parent
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model") / "iris.joblib"


async def test_cached_predictions_equal_the_model(
    backend: RedisBackend, redis_client: redis.Redis, model_path: Path
) -> None:
    app = create_app(backend=backend, model_path=model_path, n_estimators=10)
    model = app.state.model
    samples = load_iris().data[::15]
    async with client_for(app) as client:
        for row in samples:
            expected = str(int(model.predict([row])[0]))
            params = dict(zip(FEATURES, map(float, row), strict=True))
            for _ in range(2):
                got = await client.get("/predict", params=params)
                posted = await client.post("/predict", json=params)
                assert got.json() == posted.json() == {"prediction": expected}
            assert got.headers["x-cache"] == posted.headers["x-cache"] == "HIT"
        health = await client.get("/health")
    assert "x-cache" not in health.headers
    keys = list(redis_client.scan_iter("rcm:iris:model-*"))
    assert len(keys) == len(samples) + 1  # one row each, shared by GET and POST, and the route's envelope
    assert all(0 < redis_client.ttl(k) <= 300 for k in keys)


@pytest.fixture
def demo_server(redis_server: RedisServer, model_path: Path) -> Iterator[str]:
    """`python -m demo` as a newcomer runs it, on a free port."""
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "REDIS_URL": redis_server.url,
        "DEMO_MODEL_PATH": str(model_path),
        "DEMO_TREES": "10",
    }
    process = subprocess.Popen([sys.executable, "-m", "demo"], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=1):
                    break
            except OSError:
                assert process.poll() is None, "the demo server exited"
                assert time.monotonic() < deadline, "the demo server did not come up"
                time.sleep(0.1)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)


def test_demo_server_and_verify(demo_server: str, redis_client: redis.Redis) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "demo.verify", "--url", demo_server], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:6]] == [
        ["GET", "MISS"],
        ["GET", "HIT"],
        ["POST", "MISS"],
        ["POST", "HIT"],
        ["POST", "PARTIAL"],  # the batch: the GET's and the POST's rows from the cache, one new row computed
        ["POST", "HIT"],
    ]
    # three rows and two envelopes (the single routes', the batch route's)
    assert len(list(redis_client.scan_iter("rcm:iris:model-*"))) == 5


async def test_model_reload_bumps_the_version_and_old_predictions_are_never_served(
    backend: RedisBackend, redis_client: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEMO_ADMIN_TOKEN", "let-me-in")
    app = create_app(backend=backend, model_path=tmp_path / "iris.joblib", n_estimators=3)
    iris = load_iris().data
    samples = np.random.default_rng(0).uniform(iris.min(0), iris.max(0), size=(40, 4)).round(1)
    params = [dict(zip(FEATURES, map(float, row), strict=True)) for row in samples]
    async with client_for(app) as client:
        before = [(await client.get("/predict", params=p)).json()["prediction"] for p in params]
        assert (await client.get("/predict", params=params[0])).headers["x-cache"] == "HIT"
        old_version = app.state.model_version
        denied = await client.post("/admin/reload", json={"seed": 7}, headers={"x-admin-token": "wrong"})
        reloaded = await client.post(
            "/admin/reload", json={"seed": 7}, headers={"x-admin-token": "let-me-in"}
        )
        after = [await client.get("/predict", params=p) for p in params]
        metrics = await client.get("/metrics")
    assert denied.status_code == 403
    assert (
        reloaded.status_code == 200 and reloaded.json()["version"] == app.state.model_version != old_version
    )
    assert {r.headers["x-cache"] for r in after} == {"MISS"}
    new_model = app.state.model
    expected = [str(int(new_model.predict([row])[0])) for row in samples]
    assert [r.json()["prediction"] for r in after] == expected
    assert expected != before, "the retrained forest disagrees with the old one on some of these inputs"
    assert 'rcm_responses_total{outcome="hit",rule="/predict"} 1.0' in metrics.text

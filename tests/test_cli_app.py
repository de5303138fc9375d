"""The CLI reading the cache's settings from the app (`--app`), and never answering a silent zero."""

from __future__ import annotations

import json
import os
from pathlib import Path

import orjson
import redis

from demo.app import FEATURES, create_app
from redis_cache_middleware import CacheMiddleware, CacheRule, RedisBackend, Row
from redis_cache_middleware.keys import KeySpace
from redis_cache_middleware.ops import inspect_rows, request_scope, write_counters
from redis_cache_middleware.ops.app import cache_settings

from .apps import CountingApp
from .ops_app import OPTIONS
from .redis_server import RedisServer
from .support import cli, client_for


def app_env(server: RedisServer) -> dict[str, str]:
    return {**os.environ, "RCM_TEST_REDIS_URL": server.url, "RCM_BASE_URL": "http://testserver"}


async def fill(backend: RedisBackend, namespace: str = "opsapp", version: str = "7") -> None:
    """Two /predict entries and one /items entry written the way `tests.ops_app:app` writes them."""
    app = CountingApp().starlette()
    app.add_middleware(
        CacheMiddleware, backend=backend, **{**OPTIONS, "namespace": namespace, "version": version}
    )
    async with client_for(app) as http:
        for path in ("/predict?x=1", "/predict?x=2", "/items/3"):
            assert (await http.get(path)).status_code == 200


async def test_inspect_and_purge_need_only_the_app(redis_server: RedisServer, backend: RedisBackend) -> None:
    await fill(backend)
    env = app_env(redis_server)

    found = await cli("inspect", "--app", "tests.ops_app:app", "GET", "/predict?x=1", env=env)
    assert found.returncode == 0, found.stderr
    assert "key         rcm:opsapp:7:/predict:" in found.stdout
    assert "signature   valid" in found.stdout  # the app's signing key, not $RCM_SIGNING_KEY
    missing = await cli("inspect", "--app", "tests.ops_app:app", "GET", "/predict?x=9", env=env)
    assert missing.returncode == 1 and "no entry for this request" in missing.stdout

    purged = await cli("purge", "--app", "tests.ops_app:app", "--path", "/predict", env=env)
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.startswith("deleted 2 entries of rule /predict (every version) in namespace opsapp")
    gone = await cli("inspect", "--app", "tests.ops_app:app", "GET", "/predict?x=1", env=env)
    assert gone.returncode == 1


async def test_app_from_the_environment_and_explicit_flags_win(
    redis_server: RedisServer, backend: RedisBackend
) -> None:
    await fill(backend)
    env = {**app_env(redis_server), "RCM_APP": "tests.ops_app:create_app"}

    factory = await cli("inspect", "--factory", "GET", "/items/3", env=env)
    assert factory.returncode == 0, factory.stderr
    assert "rcm:opsapp:7:/items/<item_id>:" in factory.stdout
    elsewhere = await cli("inspect", "--factory", "--namespace", "empty", "GET", "/items/3", env=env)
    assert elsewhere.returncode == 1
    assert "namespace empty under prefix rcm has no entries at all; namespaces with entries: opsapp" in (
        elsewhere.stdout
    )
    no_factory = await cli("inspect", "GET", "/items/3", env=env)
    assert no_factory.returncode == 2 and "add --factory" in no_factory.stderr


async def test_an_app_with_two_caches_needs_cache_n(redis_server: RedisServer, backend: RedisBackend) -> None:
    await fill(backend)
    env = app_env(redis_server)

    ambiguous = await cli("purge", "--app", "tests.ops_app:two_caches", "--all", "--dry-run", env=env)
    assert ambiguous.returncode == 2
    assert (
        "--cache 0: namespace outer" in ambiguous.stderr and "--cache 1: namespace opsapp" in ambiguous.stderr
    )
    chosen = await cli(
        "purge", "--app", "tests.ops_app:two_caches", "--cache", "1", "--all", "--dry-run", env=env
    )
    assert chosen.returncode == 0, chosen.stderr
    assert chosen.stdout.startswith("would delete 3 entries (every version) in namespace opsapp")
    unknown_rule = await cli("purge", "--app", "tests.ops_app:app", "--path", "/nope", env=env)
    assert (
        unknown_rule.returncode == 2
        and "its rules: /predict (/predict), /items/{item_id}" in unknown_rule.stderr
    )


async def test_without_a_namespace_the_only_one_is_used_and_several_are_listed(
    redis_server: RedisServer, backend: RedisBackend
) -> None:
    url = redis_server.url
    nothing = await cli("stats", "--redis-url", url)
    assert nothing.returncode == 2 and "no cache entries under prefix 'rcm'" in nothing.stderr
    await fill(backend)
    only = await cli("stats", "--redis-url", url)
    assert only.returncode == 0, only.stderr
    assert "namespace   opsapp" in only.stdout and "entries     3\n" in only.stdout

    await fill(backend, namespace="second", version="v1")
    several = await cli("purge", "--redis-url", url, "--all")
    assert several.returncode == 2
    assert "opsapp: version 7 (3 keys)" in several.stderr and "second: version v1 (3 keys)" in several.stderr
    empty = await cli("purge", "--redis-url", url, "--namespace", "third", "--all")
    assert empty.returncode == 1 and "namespace third under prefix rcm has no entries at all" in empty.stderr


async def test_stats_shows_every_process_counters_from_redis(
    redis_server: RedisServer, backend: RedisBackend, redis_client: redis.Redis
) -> None:
    await fill(backend)
    key = KeySpace("rcm", "opsapp").stats()
    redis_client.delete(key)  # what the filling process flushed: the test writes two processes' own
    await write_counters(
        backend.client, key, {"/predict\thit": 3, "/predict\tmiss": 1, "/predict\tsaved_seconds": 0.75}
    )
    await write_counters(backend.client, key, {"/predict\thit": 1, "/predict\tsaved_seconds": 0.25})
    assert redis_client.hget(key, "/predict\thit") == b"4"

    text = await cli("stats", "--redis-url", redis_server.url)
    assert text.returncode == 0, text.stderr
    assert "  /predict  5 responses, hit ratio 80.0%, app time saved 1.000 s" in text.stdout
    assert "other keys" not in text.stdout  # the counter hash is not a stray key


# --- row rules: the demo's /predict (row=) and /predict/batch (batch=) share the row space `iris` ---------

ROW_A = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
ROW_B = [6.7, 3.0, 5.2, 2.3]
ROW_C = [6.3, 2.5, 5.0, 1.9]
# ROW_B as another client spells it: with typed keys (on by default) the same row
ROW_B_URL = "/predict?sepal_length=6.70&sepal_width=3&petal_length=5.200&petal_width=2.3"


def demo_env(server: RedisServer, model_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": server.url,
        "DEMO_MODEL_PATH": str(model_path),
        "DEMO_TREES": "5",
        "RCM_BASE_URL": "http://testserver",
    }


DEMO = ("--app", "demo.app:create_app", "--factory")


async def test_inspect_finds_a_row_the_batch_computed_for_the_single_route(
    redis_server: RedisServer, backend: RedisBackend, redis_client: redis.Redis, tmp_path: Path
) -> None:
    model_path = tmp_path / "iris.joblib"
    app = create_app(backend=backend, model_path=model_path, n_estimators=5)
    env = demo_env(redis_server, model_path)
    async with client_for(app) as http:
        single = await http.get("/predict", params=ROW_A)
        batch = await http.post("/predict/batch", json={"instances": [ROW_B, list(ROW_A.values())]})
        assert (single.headers["x-cache"], batch.headers["x-cache"]) == ("MISS", "PARTIAL")
        expected = batch.json()["predictions"][0]

        found = await cli("inspect", *DEMO, "GET", ROW_B_URL, env=env)
        assert found.returncode == 0, found.stderr
        lines = found.stdout.splitlines()
        assert lines[1] == "answer      HIT: envelope stored, 1 of 1 row stored and fresh"
        row_key = next(line.split()[-1] for line in lines if line.startswith("row 1 "))
        assert redis_client.exists(row_key) and ":@iris:" in row_key
        assert f'  value     "{expected}"' in lines
        assert f'answer body {{"prediction":"{expected}"}}' in lines
        assert (
            "shared with POST /predict/batch (rule /predict/batch): these rows answer its requests too; "
            "its envelope is stored" in lines
        )
        # what the CLI says, the middleware does: a hit, no row computed
        computed = app.state.rows_computed
        again = await http.get(ROW_B_URL)
        assert again.headers["x-cache"] == "HIT" and again.json() == {"prediction": expected}
        assert app.state.rows_computed == computed

        as_json = await cli(
            "inspect", *DEMO, "--json", "POST", "/predict/batch",
            "--data", orjson.dumps({"instances": [ROW_C, ROW_B]}).decode(), env=env,
        )  # fmt: skip
        assert as_json.returncode == 0, as_json.stderr
        [report] = json.loads(as_json.stdout)
        assert report["answer"] == "PARTIAL" and report["rule"] == "/predict/batch"
        assert [row["entry"] is not None for row in report["rows"]] == [False, True]
        assert report["rows"][1]["key"] == row_key
        assert report["envelope_preview"] == '{"predictions":[\u2026,\u2026]}'

        bypassed = await cli("inspect", *DEMO, "GET", "/predict?sepal_length=5.1", env=env)
        assert bypassed.returncode == 1
        assert "passes this request to the app (BYPASS row-missing-feature)" in bypassed.stdout

        purged = await cli("purge", *DEMO, "GET", ROW_B_URL, env=env)
        assert purged.returncode == 0, purged.stderr
        assert purged.stdout.startswith("deleted 2 entries: ") and row_key in purged.stdout
        assert not redis_client.exists(row_key)
        after = await http.get(ROW_B_URL)
        assert after.headers["x-cache"] == "MISS" and app.state.rows_computed == computed + 1


async def test_row_keys_follow_typed_keys_and_round_floats_as_the_middleware_does(
    backend: RedisBackend, tmp_path: Path
) -> None:
    model_path = tmp_path / "iris.joblib"
    rounded = [
        CacheRule(
            "/predict", ttl=60, methods=("GET",), row=Row("iris", FEATURES, "/prediction"), round_floats=1
        )
    ]
    for typed_keys, rules, spelling, found in (
        (True, None, "6.70", True),
        (False, None, "6.70", False),  # without typed keys 6.70 is another row than 6.7
        (False, None, "6.7", True),
        (True, rounded, "6.74", True),  # round_floats=1: 6.74 shares 6.7's key
    ):
        await backend.client.flushall()
        app = create_app(
            backend=backend, model_path=model_path, n_estimators=5, typed_keys=typed_keys, rules=rules
        )
        async with client_for(app) as http:
            assert (
                await http.get("/predict", params=dict(zip(FEATURES, ROW_B, strict=True)))
            ).status_code == 200
        settings = cache_settings(app)
        assert (settings.route_types is not None) == typed_keys
        url = f"http://testserver/predict?sepal_length={spelling}&sepal_width=3.0&petal_length=5.2&petal_width=2.3"
        scope, headers, body = request_scope("GET", url)
        rule = settings.rules[0]
        reports = await inspect_rows(
            backend.client,
            namespace=settings.namespace,
            rule=rule,
            scope=scope,
            headers=headers,
            body=body,
            canon=settings.canon_for(rule, "GET", scope),
            rules=settings.rules,
        )
        assert not isinstance(reports, str)
        [report] = reports  # the route's envelope is stored in any case
        assert report["version"] == app.state.model_version
        assert report["answer"] == ("HIT" if found else "MISS"), (typed_keys, spelling)
        assert (report["rows"][0]["entry"] is not None) == found

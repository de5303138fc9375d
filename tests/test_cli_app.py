"""The CLI reading the cache's settings from the app (`--app`), and never answering a silent zero."""

from __future__ import annotations

import os

import redis

from redis_cache_middleware import CacheMiddleware, RedisBackend
from redis_cache_middleware.keys import KeySpace
from redis_cache_middleware.ops import write_counters

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

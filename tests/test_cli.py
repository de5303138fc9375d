"""`python -m redis_cache_middleware` run as a subprocess against a private Redis the test app filled."""

from __future__ import annotations

import json
import os

import redis

from redis_cache_middleware import RedisBackend

from .apps import entry_keys, populate, store_signed_variants
from .redis_server import RedisServer, free_port
from .support import cli


async def test_keys_lists_a_sample_as_text_or_json(
    redis_server: RedisServer, backend: RedisBackend, redis_client: redis.Redis
) -> None:
    await populate(backend)
    await populate(backend, namespace="other")

    text = await cli("keys", "--redis-url", redis_server.url, "--namespace", "test", "--limit", "3")
    assert text.returncode == 0 and text.stderr == ""
    lines = text.stdout.splitlines()
    assert len(lines) == 3 and set(lines) <= set(entry_keys(redis_client))
    as_json = await cli("keys", "--redis-url", redis_server.url, "--namespace", "test", "--json")
    assert json.loads(as_json.stdout) == entry_keys(redis_client)


async def test_stats_summary_and_json(
    redis_server: RedisServer, backend: RedisBackend, redis_client: redis.Redis
) -> None:
    await populate(backend, version="1")
    await populate(backend, version="2", items=0)

    text = await cli("stats", "--redis-url", redis_server.url, "--namespace", "test")
    assert text.returncode == 0, text.stderr
    assert "entries     10\n" in text.stdout
    assert "versions:\n  1  6\n  2  4\n" in text.stdout
    assert "rules:\n  /predict          8\n  /items/<item_id>  2\n" in text.stdout
    assert "(estimate: MEMORY USAGE of 10 sampled entries, scaled)" in text.stdout
    assert "maxmemory-policy noeviction" in text.stdout
    as_json = json.loads(
        (await cli("stats", "--redis-url", redis_server.url, "--namespace", "test", "--json")).stdout
    )
    assert as_json["entries"] == 10 and as_json["versions"] == {"1": 6, "2": 4}
    assert as_json["redis"]["nodes"] == 1


async def test_inspect_by_key_or_by_request(
    redis_server: RedisServer, backend: RedisBackend, redis_client: redis.Redis
) -> None:
    await populate(backend, version="1")
    await populate(backend, version="2")
    common = ("--redis-url", redis_server.url, "--namespace", "test")
    key = next(k for k in entry_keys(redis_client) if k.startswith("rcm:test:1:/items/"))

    text = await cli("inspect", *common, "--key", key)
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith(f"key         {key}\nstatus      200\nage         ")
    assert " s of 60 s ttl (fresh)\nredis ttl   " in text.stdout
    assert "\n  content-type: application/json\n" in text.stdout
    assert '\nbody preview\n  {"item":"' in text.stdout

    by_url = ("--url", "http://testserver/items/1", "--path", "/items/{item_id}", "--json")
    both = json.loads((await cli("inspect", *common, *by_url)).stdout)
    assert [entry["key"].split(":")[2] for entry in both] == ["1", "2"]
    assert {entry["body_preview"] for entry in both} == {'{"item":"1","call":2}'}
    one = json.loads((await cli("inspect", *common, *by_url, "--version", "2")).stdout)
    assert [entry["key"] for entry in one] == [both[1]["key"]]

    post = (
        *("--url", "http://testserver/predict", "--rule", "/predict", "--method", "POST"),
        *("--data", '{"a": 1, "b": 2}', "--header", "Content-Type: application/json", "--version", "1"),
    )
    found = json.loads((await cli("inspect", *common, *post, "--json")).stdout)
    assert len(found) == 1 and json.loads(found[0]["body_preview"])["body"] == '{"b":2,"a":1}'

    missing = await cli(
        "inspect", *common, "--url", "http://testserver/items/9", "--path", "/items/{item_id}"
    )
    assert (missing.returncode, missing.stdout) == (1, "no entry for this request in any version\n")
    gone = await cli("inspect", *common, "--key", "rcm:test:1:/predict:" + "0" * 32, "--json")
    assert (gone.returncode, gone.stdout) == (1, "[]\n")


async def test_purge_by_rule_tag_version_request_and_all(
    redis_server: RedisServer, backend: RedisBackend, redis_client: redis.Redis
) -> None:
    from redis_cache_middleware.ops import index_tags

    await populate(backend, version="1", items=3)
    await populate(backend, version="2", items=3)
    await populate(backend, namespace="other")
    await index_tags(backend.client, "rcm", "test", entry_keys(redis_client)[0], ["blue"], 60)
    common = ("--redis-url", redis_server.url, "--namespace", "test")

    async def purge(*args: str) -> str:
        run = await cli("purge", *common, *args)
        assert run.returncode == 0 and run.stderr == "", run.stderr
        return run.stdout

    assert await purge("--path", "/predict", "--dry-run") == (
        "would delete 8 entries of rule /predict (every version) in namespace test\n"
    )
    assert len(entry_keys(redis_client)) == 14
    assert await purge("--rule", "/predict", "--version", "1") == (
        "deleted 4 entries of rule /predict (version 1) in namespace test\n"
    )
    assert await purge("--tag", "blue") == "deleted 1 entry tagged 'blue' in namespace test and its tag set\n"
    assert await purge("--version", "1") == "deleted 2 entries of version 1 in namespace test\n"
    request = ("--url", "http://testserver/predict?x=1", "--path", "/predict")
    assert (await purge(*request)).startswith("deleted 1 entry: rcm:test:2:/predict:")
    assert await purge(*request) == "deleted 0 entries: no entry for this request in any version\n"
    key = entry_keys(redis_client)[0]
    assert await purge("--key", key, "--dry-run") == f"would delete 1 entry: {key}\n"
    assert await purge("--key", key) == f"deleted 1 entry: {key}\n"
    assert await purge("--key", key) == f"deleted 0 entries: no entry at {key}\n"
    assert await purge("--all", "--dry-run") == "would delete 5 entries (every version) in namespace test\n"
    assert await purge("--all") == "deleted 5 entries (every version) in namespace test and its tag sets\n"
    assert entry_keys(redis_client) == [] and len(entry_keys(redis_client, "other")) == 6


async def test_usage_and_connection_errors_exit_2(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    down = f"redis://user:secret@127.0.0.1:{free_port()}/0"
    unreachable = await cli("stats", "--redis-url", down)
    assert unreachable.returncode == 2 and unreachable.stdout == ""
    assert unreachable.stderr.startswith(f"error: cannot reach Redis at {down.replace('secret', '***')}: ")
    assert unreachable.stderr.count("\n") == 1 and "secret" not in unreachable.stderr

    for args in (["purge"], ["purge", "--all", "--tag", "x"], ["inspect"], ["inspect", "--url", "http://h/"]):
        usage = await cli(*args, "--redis-url", redis_server.url)
        assert usage.returncode == 2 and usage.stderr.startswith("usage: ") and usage.stdout == ""

    env = {**os.environ, "REDIS_URL": redis_server.url}
    from_env = await cli("keys", "--namespace", "nothing", env=env)
    assert (from_env.returncode, from_env.stdout, from_env.stderr) == (0, "", "")


async def test_inspect_and_purge_follow_vary_markers_of_signed_entries(
    redis_server: RedisServer, backend: RedisBackend, redis_client: redis.Redis
) -> None:
    await store_signed_variants(backend)
    request = (
        *("--redis-url", redis_server.url, "--namespace", "test", "--path", "/headers"),
        *("--url", "http://testserver/headers?vary=accept-language", "--header", "Accept-Language: de"),
    )
    env = {**os.environ, "RCM_SIGNING_KEY": "k"}

    marker, variant = json.loads((await cli("inspect", *request, "--json", env=env)).stdout)
    assert (marker["kind"], marker["vary"], marker["signature"]) == (
        "vary-marker",
        ["accept-language"],
        "valid",
    )
    assert (variant["kind"], variant["body_preview"], variant["signature"]) == (
        "response",
        "headers call 2",
        "valid",
    )
    purged = await cli("purge", *request)
    assert purged.stdout == f"deleted 1 entry: {variant['key']}\n"
    assert len(entry_keys(redis_client)) == 2 and marker["key"] in entry_keys(redis_client)

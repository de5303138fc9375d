"""The request path against a real Redis: hit, miss, bypass, and what is and is not stored."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator

import pytest
import redis
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from redis_cache_middleware import CacheMiddleware, CacheRule, MemoryBackend, RedisBackend

from .apps import CountingApp, cached_app
from .redis_server import RedisServer
from .support import client_for, http_scope


def cache_keys(client: redis.Redis) -> list[bytes]:
    return sorted(key for key in client.scan_iter("rcm:*") if not key.endswith(b":stats"))  # entries only


async def test_get_miss_then_hit_serves_the_stored_response(
    backend: RedisBackend, redis_client: redis.Redis
) -> None:
    app, counting = cached_app(backend)
    async with client_for(app) as client:
        first = await client.get("/predict?a=1&b=2")
        second = await client.get("/predict?a=1&b=2")
    assert first.status_code == second.status_code == 200
    assert first.headers["x-cache"] == "MISS"
    assert first.headers["cache-status"] == "redis-cache; fwd=uri-miss; stored"
    assert second.headers["x-cache"] == "HIT"
    assert second.content == first.content
    assert second.headers["content-type"] == first.headers["content-type"]
    assert second.headers["content-length"] == str(len(first.content))
    assert second.headers["age"] == "0"
    assert second.headers["cache-status"].startswith("redis-cache; hit; ttl=")
    assert counting.calls["predict"] == 1
    assert len(cache_keys(redis_client)) == 1


async def test_entry_key_is_readable_and_expires_with_the_rule_ttl(
    backend: RedisBackend, redis_client: redis.Redis
) -> None:
    app, _ = cached_app(backend, rules=[CacheRule("/predict", ttl=42)], version="v7")
    async with client_for(app) as client:
        await client.get("/predict?x=1")
    (key,) = cache_keys(redis_client)
    prefix, namespace, version, rule, digest = key.decode().split(":")
    assert (prefix, namespace, version, rule) == ("rcm", "test", "v7", "/predict")
    assert len(digest) == 32 and int(digest, 16) >= 0
    assert 41_000 < redis_client.pttl(key) <= 42_000


async def test_new_version_does_not_see_old_entries(backend: RedisBackend) -> None:
    app_v1, counting_v1 = cached_app(backend, version="one")
    app_v2, counting_v2 = cached_app(backend, version="two")
    async with client_for(app_v1) as client_v1, client_for(app_v2) as client_v2:
        await client_v1.get("/predict?x=1")
        response = await client_v2.get("/predict?x=1")
    assert response.headers["x-cache"] == "MISS"
    assert counting_v1.calls["predict"] == counting_v2.calls["predict"] == 1


async def test_post_json_body_is_keyed_canonically(backend: RedisBackend) -> None:
    app, counting = cached_app(backend)
    async with client_for(app) as client:
        first = await client.post("/predict", json={"a": 1, "b": [1, 2]})
        same = await client.post(
            "/predict", content=b'{ "b": [1, 2],\n "a": 1 }', headers={"content-type": "application/json"}
        )
        other = await client.post("/predict", json={"a": 1, "b": [2, 1]})
    assert [first.headers["x-cache"], same.headers["x-cache"], other.headers["x-cache"]] == [
        "MISS",
        "HIT",
        "MISS",
    ]
    assert same.json() == first.json()
    assert other.json()["body"] == '{"a":1,"b":[2,1]}'
    assert counting.calls["predict"] == 2


async def test_post_body_reaches_the_app_unchanged(backend: RedisBackend) -> None:
    app, _ = cached_app(backend)
    raw = b'{ "b": 2,   "a": 1 }'
    async with client_for(app) as client:
        response = await client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert response.json()["body"] == raw.decode()


async def test_method_not_in_rule_passes_through(backend: RedisBackend, redis_client: redis.Redis) -> None:
    app, counting = cached_app(backend)
    async with client_for(app) as client:
        for _ in range(2):
            response = await client.put("/predict", content=b"x")
            assert "x-cache" not in response.headers
    assert counting.calls["predict"] == 2
    assert cache_keys(redis_client) == []


async def test_unmatched_route_makes_no_redis_call_and_adds_no_header(
    backend: RedisBackend, redis_client: redis.Redis
) -> None:
    app, counting = cached_app(backend)
    async with client_for(app) as client:
        await client.get("/predict?warm=1")
        calls_before = redis_client.info("commandstats")
        for path in ("/other", "/predict/", "/PREDICT", "//predict", "/predict%2F"):
            response = await client.get(path)
            assert "x-cache" not in response.headers, path
            assert "cache-status" not in response.headers, path
        calls_after = redis_client.info("commandstats")
    assert calls_after.get("cmdstat_get") == calls_before.get("cmdstat_get")
    assert calls_after.get("cmdstat_set") == calls_before.get("cmdstat_set")
    assert counting.calls["other"] == 1


@pytest.mark.parametrize("code", [404, 500, 201])
async def test_status_outside_rule_statuses_is_not_stored(backend: RedisBackend, code: int) -> None:
    app, counting = cached_app(backend, rules=[CacheRule("/status/{code:int}", ttl=60)])
    async with client_for(app) as client:
        first = await client.get(f"/status/{code}")
        second = await client.get(f"/status/{code}")
    assert first.status_code == second.status_code == code
    assert second.headers["x-cache"] == "MISS"
    assert "stored" not in first.headers["cache-status"]
    assert counting.calls["status"] == 2


async def test_listed_status_is_stored(backend: RedisBackend) -> None:
    app, counting = cached_app(backend)
    async with client_for(app) as client:
        await client.get("/status/404")
        second = await client.get("/status/404")
    assert second.status_code == 404
    assert second.headers["x-cache"] == "HIT"
    assert counting.calls["status"] == 1


@pytest.mark.parametrize(
    "query",
    [
        "set-cookie=session%3Dabc",
        "cache-control=no-store",
        "cache-control=private",
        "cache-control=no-cache",
        "cache-control=public,%20no-store",
        "vary=*",
        "vary=accept,%20*",
    ],
)
async def test_unstorable_response_is_sent_but_not_stored(
    backend: RedisBackend, redis_client: redis.Redis, query: str
) -> None:
    app, counting = cached_app(backend)
    async with client_for(app) as client:
        first = await client.get(f"/headers?{query}")
        client.cookies.clear()
        second = await client.get(f"/headers?{query}")
    assert first.status_code == 200 and first.text == "headers call 1"
    assert second.text == "headers call 2"
    assert second.headers["x-cache"] == "MISS"
    assert counting.calls["headers"] == 2
    assert cache_keys(redis_client) == []


async def test_rule_vary_keys_on_the_header(backend: RedisBackend) -> None:
    rules = [CacheRule("/predict", ttl=60, vary=("Accept-Language",))]
    app, counting = cached_app(backend, rules=rules)
    async with client_for(app) as client:
        english = await client.get("/predict", headers={"accept-language": "en"})
        french = await client.get("/predict", headers={"accept-language": "fr"})
        absent = await client.get("/predict")
        empty = await client.get("/predict", headers={"accept-language": ""})
        english_again = await client.get("/predict", headers={"accept-language": "en"})
    assert [r.headers["x-cache"] for r in (english, french, absent, empty)] == ["MISS"] * 4
    assert english_again.headers["x-cache"] == "HIT"
    assert english_again.json()["language"] == "en"
    assert counting.calls["predict"] == 4


@pytest.mark.parametrize(
    "headers",
    [{"authorization": "Bearer alice"}, {"cookie": "session=alice"}, {"Authorization": "Basic eA=="}],
)
async def test_credentials_bypass_the_cache(
    backend: RedisBackend, redis_client: redis.Redis, headers: dict[str, str]
) -> None:
    app, _counting = cached_app(backend)
    async with client_for(app) as client:
        await client.get("/predict?x=1")
        responses = [await client.get("/predict?x=1", headers=headers) for _ in range(2)]
    for response in responses:
        assert response.headers["x-cache"] == "BYPASS"
        assert response.headers["cache-status"] == "redis-cache; fwd=bypass; detail=credentials"
    assert [r.json()["call"] for r in responses] == [2, 3]
    assert len(cache_keys(redis_client)) == 1


async def test_head_is_answered_from_the_get_entry(backend: RedisBackend) -> None:
    app, counting = cached_app(backend)
    async with client_for(app) as client:
        cold_head = await client.head("/predict?x=1")
        got = await client.get("/predict?x=1")
        head = await client.head("/predict?x=1")
    assert cold_head.headers["x-cache"] == "MISS"
    assert got.headers["x-cache"] == "MISS", "a HEAD miss must not store an empty body for GET"
    assert head.headers["x-cache"] == "HIT"
    assert head.content == b""
    assert head.headers["content-length"] == str(len(got.content))
    assert counting.calls["predict"] == 2


async def test_oversized_request_body_bypasses_and_reaches_the_app_intact(
    backend: RedisBackend, redis_client: redis.Redis
) -> None:
    app, counting = cached_app(backend)
    payload = bytes(range(256)) * 10
    async with client_for(app) as client:
        responses = [await client.post("/echo", content=payload) for _ in range(2)]
    for response in responses:
        assert response.headers["x-cache"] == "BYPASS"
        assert "detail=request-too-large" in response.headers["cache-status"]
        assert response.json() == {"sha256": hashlib.sha256(payload).hexdigest(), "length": len(payload)}
    assert counting.calls["echo"] == 2
    assert cache_keys(redis_client) == []


async def test_streamed_oversized_request_body_without_length_is_replayed(backend: RedisBackend) -> None:
    app, _ = cached_app(backend)
    chunks = [bytes([i]) * 300 for i in range(8)]

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    async with client_for(app) as client:
        response = await client.post("/echo", content=body())
    assert response.headers["x-cache"] == "BYPASS"
    assert response.json()["sha256"] == hashlib.sha256(b"".join(chunks)).hexdigest()


async def test_chunked_request_body_within_limit_is_cached(backend: RedisBackend) -> None:
    app, counting = cached_app(backend)

    async def body() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b"def"

    async with client_for(app) as client:
        first = await client.post("/echo", content=body())
        second = await client.post("/echo", content=b"abcdef")
    assert first.json() == {"sha256": hashlib.sha256(b"abcdef").hexdigest(), "length": 6}
    assert second.headers["x-cache"] == "HIT"
    assert counting.calls["echo"] == 1


async def test_oversized_response_is_sent_whole_and_not_stored(
    backend: RedisBackend, redis_client: redis.Redis
) -> None:
    app, counting = cached_app(backend)
    async with client_for(app) as client:
        await client.get("/big?size=1000")
        small_again = await client.get("/big?size=1000")
        large = await client.get("/big?size=1001")
        large_again = await client.get("/big?size=1001")
    assert small_again.headers["x-cache"] == "HIT"
    assert large.text == "x" * 1001 and large_again.text == "x" * 1001
    assert large_again.headers["x-cache"] == "MISS"
    assert counting.calls["big"] == 3


async def test_streamed_response_is_stored_whole_or_not_at_all(backend: RedisBackend) -> None:
    app, counting = cached_app(backend)
    async with client_for(app) as client:
        first = await client.get("/stream?parts=3")
        second = await client.get("/stream?parts=3")
        long = await client.get("/stream?parts=30")
        long_again = await client.get("/stream?parts=30")
    assert second.headers["x-cache"] == "HIT"
    assert second.text == first.text == "chunk0;chunk1;chunk2;"
    assert long_again.text == long.text and len(long.text) > 100
    assert long_again.headers["x-cache"] == "MISS"
    assert counting.calls["stream"] == 3


async def test_path_templates_cache_each_item_separately(backend: RedisBackend) -> None:
    app, counting = cached_app(backend)
    async with client_for(app) as client:
        await client.get("/items/a")
        b = await client.get("/items/b")
        a_again = await client.get("/items/a")
    assert a_again.headers["x-cache"] == "HIT" and a_again.json()["item"] == "a"
    assert b.json()["item"] == "b"
    assert counting.calls["item"] == 2


@pytest.mark.parametrize(
    "garbage", [b"", b"RCM", b"RCM\x01\x00\x00\x00\x05[1,2]", b"RCM\x09whatever", b"\x80\x04pickle"]
)
async def test_corrupt_entry_is_a_miss_and_is_overwritten(
    backend: RedisBackend, redis_client: redis.Redis, garbage: bytes
) -> None:
    app, _counting = cached_app(backend)
    async with client_for(app) as client:
        await client.get("/predict?x=1")
        (key,) = cache_keys(redis_client)
        redis_client.set(key, garbage)
        corrupted = await client.get("/predict?x=1")
        repaired = await client.get("/predict?x=1")
    assert corrupted.status_code == 200 and corrupted.headers["x-cache"] == "MISS"
    assert repaired.headers["x-cache"] == "HIT"
    assert repaired.json()["call"] == 2


async def test_truncated_entry_is_a_miss(backend: RedisBackend, redis_client: redis.Redis) -> None:
    app, _counting = cached_app(backend)
    async with client_for(app) as client:
        await client.get("/predict?x=1")
        (key,) = cache_keys(redis_client)
        redis_client.set(key, redis_client.get(key)[:-3])  # type: ignore[index]
        response = await client.get("/predict?x=1")
    assert response.headers["x-cache"] == "MISS"
    assert response.json()["call"] == 2


async def test_entry_moved_to_another_key_is_never_served(
    backend: RedisBackend, redis_client: redis.Redis
) -> None:
    app, _counting = cached_app(backend)
    async with client_for(app) as client:
        await client.get("/predict?user=alice")
        (alice_key,) = cache_keys(redis_client)
        await client.get("/predict?user=bob")
        (bob_key,) = [k for k in cache_keys(redis_client) if k != alice_key]
        redis_client.set(bob_key, redis_client.get(alice_key))  # type: ignore[arg-type]
        response = await client.get("/predict?user=bob")
    assert response.headers["x-cache"] == "MISS"
    assert response.json()["query"] == [["user", "bob"]]


async def test_redis_stopped_mid_test_bypasses_and_the_app_serves(fresh_redis: RedisServer) -> None:
    backend = RedisBackend.from_url(fresh_redis.url)
    app, _counting = cached_app(backend)
    async with client_for(app) as client:
        await client.get("/predict?x=1")
        assert (await client.get("/predict?x=1")).headers["x-cache"] == "HIT"
        fresh_redis.kill()
        responses = [await client.get(f"/predict?x={i % 2}") for i in range(6)]
        posted = await client.post("/predict", json={"x": 1})
    for response in [*responses, posted]:
        assert response.status_code == 200
        assert response.headers["x-cache"] == "BYPASS"
    details = [r.headers["cache-status"].rpartition("detail=")[2] for r in [*responses, posted]]
    assert details == ["backend-error"] * 5 + ["circuit-open"] * 2, "the breaker opens after 5 failures"
    assert [r.json()["query"] for r in responses] == [[["x", str(i % 2)]] for i in range(6)]
    assert posted.json()["body"] == '{"x":1}'
    await backend.aclose()


async def test_redis_paused_bypasses_within_the_timeout(fresh_redis: RedisServer) -> None:
    backend = RedisBackend.from_url(fresh_redis.url, timeout=0.05)
    app, _counting = cached_app(backend)
    async with client_for(app) as client:
        await client.get("/predict?x=1")
        fresh_redis.pause()
        try:
            response = await client.get("/predict?x=1")
        finally:
            fresh_redis.resume()
    assert response.status_code == 200
    assert response.headers["x-cache"] == "BYPASS"
    assert response.elapsed.total_seconds() < 1.0
    await backend.aclose()


async def test_root_path_mount_is_matched_and_keyed(backend: RedisBackend) -> None:
    counting = CountingApp()
    inner = counting.starlette()
    inner.add_middleware(
        CacheMiddleware, backend=backend, rules=[CacheRule("/predict", ttl=60)], namespace="test"
    )
    outer = Starlette(routes=[Mount("/v1", app=inner), Mount("/v2", app=inner)])
    async with client_for(outer) as client:
        v1 = await client.get("/v1/predict?x=1")
        v1_again = await client.get("/v1/predict?x=1")
        v2 = await client.get("/v2/predict?x=1")
    assert (v1.headers["x-cache"], v1_again.headers["x-cache"], v2.headers["x-cache"]) == (
        "MISS",
        "HIT",
        "MISS",
    )


def test_websocket_and_lifespan_pass_through() -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    counting = CountingApp()
    app = counting.starlette()
    app.router.lifespan_context = lifespan
    app.add_middleware(CacheMiddleware, backend=MemoryBackend(), rules=[CacheRule("/ws", ttl=60)])
    with TestClient(app) as client, client.websocket_connect("/ws") as websocket:
        websocket.send_text("ping")
        assert websocket.receive_text() == "ping"
    assert events == ["startup", "shutdown"]


async def test_memory_backend_serves_hits_too() -> None:
    app, counting = cached_app(MemoryBackend())
    async with client_for(app) as client:
        await client.get("/predict?x=1")
        response = await client.get("/predict?x=1")
    assert response.headers["x-cache"] == "HIT"
    assert counting.calls["predict"] == 1


def test_configuration_errors_are_clear() -> None:
    app = CountingApp().starlette()
    with pytest.raises(ValueError, match="exactly one of redis_url= or backend="):
        CacheMiddleware(app, rules=[])
    with pytest.raises(ValueError, match="namespace"):
        CacheMiddleware(app, rules=[], backend=MemoryBackend(), namespace="a:b")
    with pytest.raises(ValueError, match="ttl"):
        CacheRule("/x", ttl=0)
    with pytest.raises(ValueError, match="methods"):
        CacheRule("/x", ttl=1, methods="GET")
    with pytest.raises(ValueError, match="must start with"):
        CacheRule("x", ttl=1)
    with pytest.raises(ValueError, match="unique"):
        CacheMiddleware(app, rules=[CacheRule("/x", ttl=1), CacheRule("/x", ttl=2)], backend=MemoryBackend())


async def test_store_happens_before_the_last_body_message(
    backend: RedisBackend, redis_client: redis.Redis
) -> None:
    """An identical request sent the instant the response ends must already be a hit."""
    app, _ = cached_app(backend)
    seen_before_end: list[int] = []
    messages: list[dict[str, object]] = []

    requests = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, object]:
        if requests:
            return requests.pop()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            seen_before_end.append(len(cache_keys(redis_client)))
        messages.append(message)

    scope = http_scope("/stream", b"parts=2")
    await app(scope, receive, send)  # type: ignore[arg-type]
    assert seen_before_end == [1]


async def test_requests_on_other_hosts_do_not_share_entries(backend: RedisBackend) -> None:
    app, _counting = cached_app(backend)
    async with client_for(app) as client:
        await client.get("/predict?x=1", headers={"host": "good.example"})
        evil = await client.get("/predict?x=1", headers={"host": "evil.example"})
        good = await client.get("/predict?x=1", headers={"host": "good.example"})
    assert evil.headers["x-cache"] == "MISS" and evil.json()["host"] == "evil.example"
    assert good.headers["x-cache"] == "HIT" and good.json()["host"] == "good.example"


async def test_key_host_false_shares_entries_across_hosts(backend: RedisBackend) -> None:
    app, _counting = cached_app(backend, rules=[CacheRule("/predict", ttl=60, key_host=False)])
    async with client_for(app) as client:
        await client.get("/predict?x=1", headers={"host": "a.example"})
        other = await client.get("/predict?x=1", headers={"host": "b.example"})
    assert other.headers["x-cache"] == "HIT"


async def test_get_with_a_body_is_keyed_on_the_body(backend: RedisBackend) -> None:
    app, _counting = cached_app(backend)
    async with client_for(app) as client:
        plain = await client.get("/predict?x=1")
        fat = await client.request("GET", "/predict?x=1", content=b"poison")
        plain_again = await client.get("/predict?x=1")
    assert fat.headers["x-cache"] == "MISS" and fat.json()["body"] == "poison"
    assert plain_again.headers["x-cache"] == "HIT" and plain_again.json()["body"] == ""
    assert plain.json() == plain_again.json()


async def test_expired_entry_is_not_served(backend: RedisBackend, redis_client: redis.Redis) -> None:
    app, counting = cached_app(backend, rules=[CacheRule("/predict", ttl=0.2)])
    async with client_for(app) as client:
        await client.get("/predict?x=1")
        assert (await client.get("/predict?x=1")).headers["x-cache"] == "HIT"
        (key,) = cache_keys(redis_client)
        redis_client.persist(key)  # Redis keeps it; the entry's own freshness must still say no.
        await asyncio.sleep(0.25)
        response = await client.get("/predict?x=1")
    assert response.headers["x-cache"] == "MISS"
    assert counting.calls["predict"] == 2

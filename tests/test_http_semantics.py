"""RFC 9111 behaviour: freshness from the origin, Vary, revalidation, conditional requests, request
Cache-Control, invalidation by unsafe methods, QUERY, and body-less responses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from email.utils import formatdate
from urllib.parse import quote

import pytest
import redis

from redis_cache_middleware import CacheRule, RedisBackend

from .apps import cached_app
from .support import client_for, http_scope


def cache_keys(client: redis.Redis) -> list[bytes]:
    """Entry keys (and Vary markers) only: not the namespace's shared stats hash."""
    return sorted(key for key in client.scan_iter("rcm:*") if not key.endswith(b":stats"))


def headers_query(**fields: str) -> str:
    return "&".join(f"{name.replace('_', '-')}={quote(value)}" for name, value in fields.items())


ORIGIN = [
    CacheRule("/headers", ttl=60, honor_origin=True),
    CacheRule("/validated", ttl=60, honor_origin=True),
]


@pytest.mark.parametrize(
    ("cache_control", "expected_ttl"),
    [("max-age=5", 5), ("public, max-age=5", 5), ("s-maxage=3, max-age=100", 3), ("max-age=1000", 60)],
)
async def test_origin_freshness_bounded_by_rule_ttl(
    backend: RedisBackend, redis_client: redis.Redis, cache_control: str, expected_ttl: int
) -> None:
    app, _counting = cached_app(backend, rules=ORIGIN)
    async with client_for(app) as client:
        await client.get(f"/headers?{headers_query(cache_control=cache_control)}")
        hit = await client.get(f"/headers?{headers_query(cache_control=cache_control)}")
    assert hit.headers["x-cache"] == "HIT"
    assert hit.headers["cache-status"] == f"redis-cache; hit; ttl={expected_ttl}"
    (key,) = cache_keys(redis_client)
    assert (expected_ttl - 1) * 1000 < redis_client.pttl(key) <= expected_ttl * 1000


@pytest.mark.parametrize(
    "fields",
    [
        {},  # nothing says it may be stored for any time, and there is no validator
        {"cache_control": "max-age=0"},
        {"expires": "0"},
        {"cache_control": "no-store, max-age=60"},
        {"cache_control": "private, max-age=60"},
        {"cache_control": "max-age=60", "age": "120"},  # already stale when it arrives
    ],
)
async def test_origin_mode_stores_only_what_the_origin_allows(
    backend: RedisBackend, redis_client: redis.Redis, fields: dict[str, str]
) -> None:
    app, counting = cached_app(backend, rules=ORIGIN)
    async with client_for(app) as client:
        await client.get(f"/headers?{headers_query(**fields)}")
        second = await client.get(f"/headers?{headers_query(**fields)}")
    assert second.headers["x-cache"] == "MISS"
    assert counting.calls["headers"] == 2
    assert cache_keys(redis_client) == []


async def test_expires_and_heuristic_freshness(backend: RedisBackend, redis_client: redis.Redis) -> None:
    now = time.time()
    expires = headers_query(date=formatdate(now, usegmt=True), expires=formatdate(now + 30, usegmt=True))
    heuristic = headers_query(
        date=formatdate(now, usegmt=True), last_modified=formatdate(now - 200, usegmt=True)
    )  # 10% of 200 s
    app, _counting = cached_app(backend, rules=ORIGIN)
    async with client_for(app) as client:
        statuses = []
        for query in (expires, heuristic):
            await client.get(f"/headers?{query}")
            statuses.append((await client.get(f"/headers?{query}")).headers["cache-status"])
    assert statuses == ["redis-cache; hit; ttl=30", "redis-cache; hit; ttl=20"]


async def test_age_from_the_origin_counts(backend: RedisBackend) -> None:
    app, _ = cached_app(backend, rules=ORIGIN)
    query = headers_query(cache_control="max-age=10", age="4")
    async with client_for(app) as client:
        await client.get(f"/headers?{query}")
        hit = await client.get(f"/headers?{query}")
    assert int(hit.headers["age"]) >= 4
    assert hit.headers["cache-status"] == "redis-cache; hit; ttl=6"


@pytest.mark.parametrize(("status", "stored"), [(404, True), (500, True), (206, False), (201, True)])
async def test_origin_mode_stores_any_final_status_with_explicit_freshness(
    backend: RedisBackend, status: int, stored: bool
) -> None:
    app, _counting = cached_app(backend, rules=ORIGIN)
    query = f"_status={status}&cache-control=max-age%3D30"
    async with client_for(app) as client:
        await client.get(f"/headers?{query}")
        second = await client.get(f"/headers?{query}")
    assert second.status_code == status
    assert second.headers["x-cache"] == ("HIT" if stored else "MISS")


async def test_heuristic_status_without_validator_or_date_is_not_stored(backend: RedisBackend) -> None:
    app, counting = cached_app(backend, rules=[CacheRule("/status/{code:int}", ttl=60, honor_origin=True)])
    async with client_for(app) as client:
        await client.get("/status/404")
        second = await client.get("/status/404")
    assert second.headers["x-cache"] == "MISS"
    assert counting.calls["status"] == 2


async def test_stale_entry_is_revalidated_and_freshened_by_a_304(backend: RedisBackend) -> None:
    app, counting = cached_app(backend, rules=ORIGIN)
    async with client_for(app) as client:
        first = await client.get("/validated")
        await asyncio.sleep(1.05)
        revalidated = await client.get("/validated")
        hit = await client.get("/validated")
    assert first.text == revalidated.text == hit.text == "version 1"
    assert revalidated.headers["x-cache"] == "HIT"
    assert revalidated.headers["cache-status"] == "redis-cache; fwd=stale; fwd-status=304"
    assert hit.headers["cache-status"].startswith("redis-cache; hit")
    assert (counting.calls["validated"], counting.calls["validated-304"]) == (1, 1)


async def test_stale_entry_is_replaced_when_the_origin_changed(backend: RedisBackend) -> None:
    app, counting = cached_app(backend, rules=ORIGIN)
    async with client_for(app) as client:
        await client.get("/validated")
        counting.version = 2
        await asyncio.sleep(1.05)
        changed = await client.get("/validated")
        hit = await client.get("/validated")
    assert changed.text == hit.text == "version 2"
    assert changed.headers["x-cache"] == "MISS" and hit.headers["x-cache"] == "HIT"
    assert hit.headers["etag"] == '"v2"'


async def test_no_cache_response_is_stored_and_revalidated_on_every_use(backend: RedisBackend) -> None:
    app, counting = cached_app(backend, rules=ORIGIN)
    async with client_for(app) as client:
        responses = [await client.get("/validated?cc=no-cache") for _ in range(3)]
    assert [r.text for r in responses] == ["version 1"] * 3
    assert [r.headers["x-cache"] for r in responses] == ["MISS", "HIT", "HIT"]
    assert (counting.calls["validated"], counting.calls["validated-304"]) == (1, 2)


async def test_no_cache_response_is_not_stored_in_ttl_mode(backend: RedisBackend) -> None:
    app, counting = cached_app(backend, rules=[CacheRule("/validated", ttl=60)])
    async with client_for(app) as client:
        for _ in range(2):
            await client.get("/validated?cc=no-cache")
    assert counting.calls["validated"] == 2


async def test_if_none_match_gets_304_on_hits_and_misses(
    backend: RedisBackend, redis_client: redis.Redis
) -> None:
    app, counting = cached_app(backend)
    async with client_for(app) as client:
        miss = await client.get("/big?size=10")
        etag = miss.headers["etag"]
        hit_304 = await client.get("/big?size=10", headers={"if-none-match": etag})
        weak_304 = await client.get("/big?size=10", headers={"if-none-match": f'"other", W/{etag}'})
        star_304 = await client.get("/big?size=10", headers={"if-none-match": "*"})
        other = await client.get("/big?size=10", headers={"if-none-match": '"other"'})
        redis_client.delete(*cache_keys(redis_client))
        miss_304 = await client.get("/big?size=10", headers={"if-none-match": etag})
    for response in (hit_304, weak_304, star_304, miss_304):
        assert response.status_code == 304
        assert response.content == b""
        assert response.headers["etag"] == etag
        assert "content-length" not in response.headers
    assert hit_304.headers["x-cache"] == "HIT" and miss_304.headers["x-cache"] == "MISS"
    assert other.status_code == 200 and other.text == miss.text == "x" * 10
    assert counting.calls["big"] == 2


async def test_etags_are_scoped_to_their_own_key(backend: RedisBackend) -> None:
    app, _ = cached_app(backend)
    async with client_for(app) as client:
        alice = await client.get("/predict?user=alice")
        await client.get("/predict?user=bob")
        bob = await client.get("/predict?user=bob", headers={"if-none-match": alice.headers["etag"]})
    assert bob.status_code == 200
    assert bob.json()["query"] == [["user", "bob"]]


async def test_if_modified_since_against_last_modified(backend: RedisBackend) -> None:
    app, _ = cached_app(backend)
    modified = formatdate(time.time() - 100, usegmt=True)
    query = headers_query(last_modified=modified)
    async with client_for(app) as client:
        await client.get(f"/headers?{query}")
        later = await client.get(f"/headers?{query}", headers={"if-modified-since": formatdate(usegmt=True)})
        earlier = await client.get(
            f"/headers?{query}", headers={"if-modified-since": formatdate(time.time() - 1000, usegmt=True)}
        )
    assert later.status_code == 304 and later.headers["last-modified"] == modified
    assert earlier.status_code == 200


async def test_client_cache_control_is_ignored_by_default(backend: RedisBackend) -> None:
    app, counting = cached_app(backend)
    async with client_for(app) as client:
        await client.get("/predict?x=1")
        for directive in ("no-cache", "max-age=0", "no-store"):
            response = await client.get("/predict?x=1", headers={"cache-control": directive})
            assert response.headers["x-cache"] == "HIT", directive
    assert counting.calls["predict"] == 1


async def test_client_may_force_a_refresh_when_allowed(
    backend: RedisBackend, redis_client: redis.Redis
) -> None:
    app, _counting = cached_app(backend, allow_client_refresh=True)
    async with client_for(app) as client:
        await client.get("/predict?x=1")
        refreshed = await client.get("/predict?x=1", headers={"cache-control": "no-cache"})
        after = await client.get("/predict?x=1")
        zero = await client.get("/predict?x=1", headers={"cache-control": "max-age=0"})
        old_enough = await client.get("/predict?x=1", headers={"cache-control": "max-age=60"})
        no_store = await client.get("/predict?x=2", headers={"cache-control": "no-store"})
    assert refreshed.headers["cache-status"].startswith("redis-cache; fwd=request")
    assert refreshed.json()["call"] == 2 and after.json()["call"] == 2
    assert after.headers["x-cache"] == "HIT"
    assert zero.headers["x-cache"] == "MISS" and old_enough.headers["x-cache"] == "HIT"
    assert no_store.headers["x-cache"] == "BYPASS"
    assert len(cache_keys(redis_client)) == 1


async def test_only_if_cached(backend: RedisBackend) -> None:
    app, counting = cached_app(backend)
    async with client_for(app) as client:
        cold = await client.get("/predict?x=1", headers={"cache-control": "only-if-cached"})
        await client.get("/predict?x=1")
        warm = await client.get("/predict?x=1", headers={"cache-control": "only-if-cached"})
    assert cold.status_code == 504 and cold.content == b""
    assert warm.status_code == 200 and warm.headers["x-cache"] == "HIT"
    assert counting.calls["predict"] == 1


async def test_response_vary_is_a_second_key_step(backend: RedisBackend, redis_client: redis.Redis) -> None:
    app, _counting = cached_app(backend)
    query = headers_query(vary="Accept-Language")
    async with client_for(app) as client:
        en = await client.get(f"/headers?{query}", headers={"accept-language": "en"})
        fr = await client.get(f"/headers?{query}", headers={"accept-language": "fr"})
        en_again = await client.get(f"/headers?{query}", headers={"accept-language": "en"})
        fr_again = await client.get(f"/headers?{query}", headers={"accept-language": "fr"})
    assert [r.headers["x-cache"] for r in (en, fr, en_again, fr_again)] == ["MISS", "MISS", "HIT", "HIT"]
    assert en_again.text == en.text and fr_again.text == fr.text and en.text != fr.text
    assert len(cache_keys(redis_client)) == 3  # the marker and two variants


async def test_declared_vary_keeps_a_hit_to_one_round_trip(
    backend: RedisBackend, redis_client: redis.Redis
) -> None:
    rules = [CacheRule("/headers", ttl=60, vary=("accept-language",))]
    app, _ = cached_app(backend, rules=rules)
    query = headers_query(vary="Accept-Language")
    async with client_for(app) as client:
        await client.get(f"/headers?{query}", headers={"accept-language": "en"})
        before = redis_client.info("commandstats")["cmdstat_get"]["calls"]
        hit = await client.get(f"/headers?{query}", headers={"accept-language": "en"})
        after = redis_client.info("commandstats")["cmdstat_get"]["calls"]
    assert hit.headers["x-cache"] == "HIT"
    assert after - before == 1
    assert len(cache_keys(redis_client)) == 1


async def test_unsafe_request_invalidates_the_get_entry(backend: RedisBackend) -> None:
    rules = [CacheRule("/items/{item_id}", ttl=60, invalidate_on=("PUT", "DELETE"))]
    app, _counting = cached_app(backend, rules=rules)
    async with client_for(app) as client:
        await client.get("/items/1")
        await client.get("/items/2")
        assert (await client.get("/items/1")).headers["x-cache"] == "HIT"
        failed = await client.put("/items/1?status=409", content=b"x")
        still = await client.get("/items/1")
        done = await client.put("/items/1", content=b"x", headers={"authorization": "Bearer admin"})
        fresh = await client.get("/items/1")
        other = await client.get("/items/2")
    assert failed.status_code == 409 and still.headers["x-cache"] == "HIT"
    assert done.status_code == 204 and fresh.headers["x-cache"] == "MISS"
    assert other.headers["x-cache"] == "HIT"


async def test_query_method_is_cached_on_its_body(backend: RedisBackend) -> None:
    rules = [CacheRule("/query", ttl=60, methods=("QUERY",))]
    app, counting = cached_app(backend, rules=rules)
    async with client_for(app) as client:
        first = await client.request("QUERY", "/query", json={"q": 1, "r": 2})
        same = await client.request(
            "QUERY", "/query", content=b'{"r": 2, "q": 1}', headers={"content-type": "application/json"}
        )
        other = await client.request("QUERY", "/query", json={"q": 2})
        post = await client.post("/query", json={"q": 1, "r": 2})
    assert (first.headers["x-cache"], same.headers["x-cache"], other.headers["x-cache"]) == (
        "MISS",
        "HIT",
        "MISS",
    )
    assert "x-cache" not in post.headers
    assert counting.calls["echo"] == 3


async def test_bodyless_statuses_have_no_body_or_length(backend: RedisBackend) -> None:
    app, _ = cached_app(backend, rules=[CacheRule("/status/{code:int}", ttl=60, statuses=(204,))])
    async with client_for(app) as client:
        await client.get("/status/204")
        hit = await client.get("/status/204")
    assert hit.status_code == 204 and hit.headers["x-cache"] == "HIT"
    assert hit.content == b"" and "content-length" not in hit.headers


async def test_client_gone_mid_miss_still_stores_the_whole_response(
    backend: RedisBackend, redis_client: redis.Redis
) -> None:
    app, counting = cached_app(backend)
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        if sent:
            raise OSError("client went away")
        sent.append(message)

    scope = http_scope("/stream", b"parts=3")
    await app(scope, receive, send)  # type: ignore[arg-type]
    async with client_for(app) as client:
        hit = await client.get("/stream?parts=3")
    assert hit.headers["x-cache"] == "HIT" and hit.text == "chunk0;chunk1;chunk2;"
    assert counting.calls["stream"] == 1


async def test_app_failing_mid_stream_stores_nothing(
    backend: RedisBackend, redis_client: redis.Redis
) -> None:
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    from redis_cache_middleware import CacheMiddleware

    async def broken(request: object) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"partial"
            raise RuntimeError("model crashed")

        return StreamingResponse(chunks())

    app = Starlette(routes=[Route("/broken", broken)])
    app.add_middleware(CacheMiddleware, backend=backend, rules=[CacheRule("/broken", ttl=60)])
    async with client_for(app) as client:
        with pytest.raises(RuntimeError):
            await client.get("/broken")
    assert cache_keys(redis_client) == []


async def test_one_origin_rule_for_every_path(backend: RedisBackend, redis_client: redis.Redis) -> None:
    """The shape an HTTP conformance suite runs against: every path cached as the origin says."""
    app, _counting = cached_app(backend, rules=[CacheRule("/{path:path}", ttl=3600, honor_origin=True)])
    async with client_for(app) as client:
        for _ in range(2):
            fresh = await client.get("/headers?cache-control=max-age%3D100")
            uncacheable = await client.get("/headers?x=1")
            item = await client.get("/items/7")
    assert fresh.headers["x-cache"] == "HIT"
    assert uncacheable.headers["x-cache"] == "MISS"  # no freshness information, no validator
    assert item.headers["x-cache"] == "MISS"
    assert all(b":/<path>:" in key for key in cache_keys(redis_client))


@pytest.mark.parametrize(
    "expires",
    [
        "0",
        "Sun, 06 Nov 94 08:49:37 GMT",  # a 2-digit year outside the RFC 850 form
        "{date} UTC",  # a zone other than GMT
        "{date} +0000",
        "{date_no_comma}",
        "{date_double_space}",
        "{date_dots}",
    ],
)
async def test_invalid_expires_is_already_expired(backend: RedisBackend, expires: str) -> None:
    """RFC 9111 section 5.3: an invalid Expires is a time in the past, even one a lenient parser reads."""
    now = time.time()
    future = formatdate(now + 600, usegmt=True)  # e.g. "Thu, 03 Dec 2026 07:18:00 GMT"
    value = expires.format(
        date=future.removesuffix(" GMT"),
        date_no_comma=future.replace(",", "", 1),
        date_double_space=future.replace(" ", "  ", 1),
        date_dots=future.replace(":", "."),
    )
    app, counting = cached_app(backend, rules=ORIGIN)
    query = headers_query(date=formatdate(now, usegmt=True), expires=value)
    async with client_for(app) as client:
        await client.get(f"/headers?{query}")
        second = await client.get(f"/headers?{query}")
    assert second.headers["x-cache"] == "MISS"
    assert counting.calls["headers"] == 2


@pytest.mark.parametrize(("age", "x_cache"), [("7200, 0", "MISS"), ("0, 7200", "HIT")])
async def test_first_age_member_counts(backend: RedisBackend, age: str, x_cache: str) -> None:
    """RFC 9111 section 5.1: a cache uses the first member of a list-valued Age."""
    app, _counting = cached_app(backend, rules=ORIGIN)
    query = headers_query(cache_control="max-age=3600", age=age)
    async with client_for(app) as client:
        await client.get(f"/headers?{query}")
        second = await client.get(f"/headers?{query}")
    assert second.headers["x-cache"] == x_cache


async def test_stored_date_is_sent_unchanged_and_once(backend: RedisBackend) -> None:
    """RFC 9111 section 4 and RFC 9110 section 6.6.1: a hit carries the origin's Date as it was."""
    app, _counting = cached_app(backend, rules=ORIGIN)
    date = formatdate(time.time() - 5, usegmt=True)
    query = headers_query(cache_control="max-age=3600", date=date)
    async with client_for(app) as client:
        await client.get(f"/headers?{query}")
        hit = await client.get(f"/headers?{query}")
    assert hit.headers["x-cache"] == "HIT"
    assert hit.headers.get_list("date") == [date]

"""Never serve one client's answer to another, and never let a request poison what others get."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from redis_cache_middleware import CacheMiddleware, CacheRule, MemoryBackend, RedisBackend
from redis_cache_middleware.keys import URL_REWRITING_HEADERS

from .apps import cached_app
from .support import client_for


def cache_keys(client: redis.Redis) -> list[bytes]:
    return sorted(key for key in client.scan_iter("rcm:*") if not key.endswith(b":stats"))  # entries only


async def test_private_rule_keys_each_credential_separately(backend: RedisBackend) -> None:
    app, _counting = cached_app(backend, rules=[CacheRule("/predict", ttl=60, private=True)])
    alice = {"authorization": "Bearer alice"}
    bob = {"authorization": "Bearer bob"}
    async with client_for(app) as client:
        alice_first = await client.get("/predict?x=1", headers=alice)
        bob_first = await client.get("/predict?x=1", headers=bob)
        anonymous = await client.get("/predict?x=1")
        alice_again = await client.get("/predict?x=1", headers=alice)
        bob_again = await client.get("/predict?x=1", headers=bob)
        bob_cookie = await client.get("/predict?x=1", headers={**bob, "cookie": "session=1"})
    assert [r.headers["x-cache"] for r in (alice_first, bob_first, anonymous)] == ["MISS"] * 3
    assert alice_again.headers["x-cache"] == bob_again.headers["x-cache"] == "HIT"
    assert alice_again.json()["call"] == 1 and bob_again.json()["call"] == 2
    assert bob_cookie.headers["x-cache"] == "MISS"


@pytest.mark.parametrize("header", ["x-api-key", "authorization", "cookie"])
async def test_credential_headers_bypass_by_default(backend: RedisBackend, header: str) -> None:
    app, _counting = cached_app(backend)
    async with client_for(app) as client:
        await client.get("/predict?x=1")
        response = await client.get("/predict?x=1", headers={header: "secret"})
    assert response.headers["x-cache"] == "BYPASS" and response.json()["call"] == 2


async def test_credential_header_list_is_configurable(backend: RedisBackend) -> None:
    app, _counting = cached_app(backend, credential_headers=("authorization", "x-tenant-token"))
    async with client_for(app) as client:
        token = await client.get("/predict?x=1", headers={"x-tenant-token": "t"})
        api_key = await client.get("/predict?x=1", headers={"x-api-key": "k"})
    assert token.headers["x-cache"] == "BYPASS"
    assert api_key.headers["x-cache"] == "MISS"


async def test_set_cookie_response_is_never_served_to_another_client(backend: RedisBackend) -> None:
    app, _counting = cached_app(backend)
    async with client_for(app) as first, client_for(app) as second:
        mine = await first.get("/headers?set-cookie=session%3Dalice")
        theirs = await second.get("/headers?set-cookie=session%3Dalice")
    assert theirs.headers["x-cache"] == "MISS" and theirs.text != mine.text


async def test_cache_headers_can_be_hidden_and_debug_shows_the_key(backend: RedisBackend) -> None:
    hidden, _ = cached_app(backend, cache_headers=False)
    debug, _ = cached_app(backend, debug=True)
    async with client_for(hidden) as client:
        await client.get("/predict?x=1")
        quiet = await client.get("/predict?x=1")
    async with client_for(debug) as client:
        loud = await client.get("/predict?x=2")
    assert "x-cache" not in quiet.headers and "cache-status" not in quiet.headers
    assert quiet.headers["age"] == "0"
    assert 'key="rcm:test:1:/predict:' in loud.headers["cache-status"]


@pytest.mark.parametrize(
    "header",
    ["x-forwarded-host", "x-original-url", "x-http-method-override", "forwarded", "x-forwarded-proto"],
)
async def test_unkeyed_rewriting_headers_cannot_poison(backend: RedisBackend, header: str) -> None:
    app, _counting = cached_app(backend)
    async with client_for(app) as client:
        poisoned = await client.get("/predict?x=1", headers={header: "evil.example"})
        victim = await client.get("/predict?x=1")
        attacker_again = await client.get("/predict?x=1", headers={header: "evil.example"})
    assert poisoned.headers["x-cache"] == "MISS" and victim.headers["x-cache"] == "MISS"
    assert victim.json()["forwarded_host"] is None and victim.json()["method_override"] is None
    assert attacker_again.headers["x-cache"] == "HIT"


@pytest.mark.parametrize(
    ("poison", "victim"),
    [
        ("/predict?x=1;x=2", "/predict?x=1"),  # ';' is not a separator
        ("/predict?x=1%26y%3D2", "/predict?x=1&y=2"),  # an encoded '&' is data
        ("/predict?x=2&x=1", "/predict?x=1&x=2"),  # the app reads the last value
        ("/predict?x=1&x=1", "/predict?x=1"),
    ],
)
async def test_parameter_cloaking_cannot_poison(backend: RedisBackend, poison: str, victim: str) -> None:
    app, _counting = cached_app(backend)
    async with client_for(app) as client:
        await client.get(poison)
        response = await client.get(victim)
    assert response.headers["x-cache"] == "MISS"
    assert response.json()["call"] == 2


@pytest.mark.parametrize(
    "path", ["/predict/", "/predict;x", "//predict", "/PREDICT", "/predict%2F", "/%70redict"]
)
async def test_path_variants_neither_read_nor_write_the_entry(
    backend: RedisBackend, redis_client: redis.Redis, path: str
) -> None:
    app, _counting = cached_app(backend)
    async with client_for(app) as client:
        await client.get("/predict?x=1")
        (key,) = cache_keys(redis_client)
        stored = redis_client.get(key)
        variant = await client.get(path + "?x=1")
        original = await client.get("/predict?x=1")
    assert variant.headers.get("x-cache") != "HIT"
    assert original.headers["x-cache"] == "HIT" and original.json()["call"] == 1
    assert redis_client.get(key) == stored


async def test_request_body_limit_bounds_what_is_read(backend: RedisBackend) -> None:
    app, _counting = cached_app(
        backend, rules=[CacheRule("/echo", ttl=60, methods=("POST",), max_request_bytes=8)]
    )
    async with client_for(app) as client:
        small = await client.post("/echo", content=b"12345678")
        large = await client.post("/echo", content=b"123456789")
    assert small.headers["x-cache"] == "MISS" and large.headers["x-cache"] == "BYPASS"
    assert large.json()["length"] == 9


async def test_signed_entries_reject_unsigned_and_tampered_data(
    backend: RedisBackend, redis_client: redis.Redis
) -> None:
    unsigned, _ = cached_app(backend)
    signed, counting = cached_app(backend, signing_key="s3cret")
    async with client_for(unsigned) as client:
        await client.get("/big?size=5")
    async with client_for(signed) as client:
        forged = await client.get("/big?size=5")  # written without the key: never served
        genuine = await client.get("/big?size=5")
        (key,) = cache_keys(redis_client)
        data = bytearray(redis_client.get(key))  # type: ignore[arg-type]
        data[data.index(b"xxxxx")] = ord("y")
        redis_client.set(key, bytes(data))
        tampered = await client.get("/big?size=5")
    assert forged.headers["x-cache"] == "MISS" and genuine.headers["x-cache"] == "HIT"
    assert tampered.headers["x-cache"] == "MISS" and tampered.text == "xxxxx"
    assert counting.calls["big"] == 2


# Fuzzing: whatever arrives, the middleware never fails, and a hit is always what the app itself would
# have answered for that very request.


def echo_app() -> Starlette:
    """Answers with everything about the request that a response may depend on without the rule declaring
    it (an app reflecting other headers must list them in `vary`), so any mix-up shows."""

    async def echo(request: Request) -> Response:
        body = await request.body()
        return JSONResponse(
            {
                "method": request.method,
                "url": str(request.url),
                "query": request.query_params.multi_items(),
                "rewriting": sorted(
                    (k, v) for k, v in request.headers.items() if k.encode() in URL_REWRITING_HEADERS
                ),
                "language": request.headers.get("accept-language"),
                "body": hashlib.sha256(body).hexdigest(),
            }
        )

    return Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "HEAD", "POST", "PUT", "QUERY"])])


_METHOD = st.sampled_from(["GET", "GET", "HEAD", "POST", "PUT", "QUERY"])
_PATH = st.sampled_from(["/a", "/a/", "/A", "/a;x", "/b/1", "/b/2", "/b/%31", "/c"])
_QUERY = st.lists(
    st.tuples(st.sampled_from(["x", "y", "x%26y", ""]), st.sampled_from(["1", "2", "%31", "", "a;b", "+"])),
    max_size=3,
).map(lambda pairs: "&".join(f"{n}={v}" for n, v in pairs))
_HEADER_NAMES = [
    "accept-language",
    "x-forwarded-host",
    "x-original-url",
    "content-type",
    "if-none-match",
    "cache-control",
    "x-other",
    "host",
    "cookie",
    "authorization",
]
_HEADERS = st.dictionaries(
    st.sampled_from(_HEADER_NAMES),
    st.sampled_from(["a", "b", "application/json", '"x"', "*", "no-cache", "only-if-cached", ""]),
    max_size=4,
)
_BODY = st.one_of(st.none(), st.binary(max_size=40), st.sampled_from([b'{"a":1}', b'{ "a" : 1 }', b"[1,2]"]))


def chunked(body: bytes, parts: int) -> Any:
    async def stream() -> Any:
        size = max(1, len(body) // parts)
        for start in range(0, len(body), size):
            yield body[start : start + size]

    return stream()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bases=st.lists(st.tuples(_METHOD, _PATH, _QUERY, _BODY), min_size=1, max_size=3),
    calls=st.lists(st.tuples(st.integers(0, 2), _HEADERS, st.integers(1, 4)), min_size=2, max_size=10),
)
def test_fuzzed_requests_never_fail_and_hits_match_the_app(bases: list[Any], calls: list[Any]) -> None:
    cached = echo_app()
    cached.add_middleware(
        CacheMiddleware,
        backend=MemoryBackend(),
        rules=[
            CacheRule(
                "/a",
                ttl=60,
                methods=("GET", "POST", "QUERY"),
                vary=("accept-language",),
                max_request_bytes=30,
            ),
            CacheRule("/b/{id}", ttl=60, private=True, vary=("accept-language",)),
        ],
    )
    plain = echo_app()

    async def run() -> None:
        async with client_for(cached) as through_cache, client_for(plain) as direct:
            for index, headers, parts in calls:
                method, path, query, body = bases[index % len(bases)]
                url = f"{path}?{query}" if query else path
                content = chunked(body, parts) if body and parts > 1 else body
                response = await through_cache.request(method, url, headers=headers, content=content)
                only_if_cached = headers.get("cache-control") == "only-if-cached"
                assert response.status_code < 500 or (response.status_code == 504 and only_if_cached)
                if (
                    response.headers.get("x-cache") == "HIT"
                    and response.status_code == 200
                    and method != "HEAD"
                ):
                    expected = await direct.request(method, url, headers=headers, content=body)
                    assert response.content == expected.content

    asyncio.run(run())

"""If-None-Match lists parsed as RFC 9110 section 8.8.3 writes them (found by the transparency run)."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from redis_cache_middleware import CacheMiddleware, CacheRule, MemoryBackend
from redis_cache_middleware.policy import entity_tags, not_modified

from .support import client_for


@pytest.mark.parametrize(
    ("field", "tags"),
    [
        (b'"a"', [b'"a"']),
        (b'W/"a", "b"', [b'W/"a"', b'"b"']),
        (b'"foo,*,bar"', [b'"foo,*,bar"']),  # a comma and a star inside one quoted tag
        (b' ,"a" ,, "b" ', [b'"a"', b'"b"']),
        (b"*", []),  # only meaningful as the whole field: not_modified handles it
        (b"a", []),  # unquoted: not an entity-tag list
        (b'"unterminated', []),
    ],
)
def test_entity_tag_lists(field: bytes, tags: list[bytes]) -> None:
    assert entity_tags(field) == tags


def test_star_matches_only_as_the_whole_field() -> None:
    etag = b'"abc"'
    assert not_modified({b"if-none-match": [b"*"]}, etag, b"")
    assert not not_modified({b"if-none-match": [b'"foo,*,bar"']}, etag, b"")
    assert not_modified({b"if-none-match": [b'"x", W/"abc"']}, etag, b"")


async def test_a_quoted_star_is_no_wildcard_through_the_cache() -> None:
    async def endpoint(request: Request) -> Response:
        return PlainTextResponse("x", headers={"etag": '"abc"', "cache-control": "max-age=60"})

    app = Starlette(routes=[Route("/", endpoint)])
    cached = CacheMiddleware(
        app, backend=MemoryBackend(), rules=[CacheRule("/{path:path}", ttl=60, honor_origin=True)]
    )
    async with client_for(cached) as client:
        miss = await client.get("/", headers={"if-none-match": '"foo,*,bar"'})
        hit = await client.get("/", headers={"if-none-match": '"foo,*,bar"'})
        matching = await client.get("/", headers={"if-none-match": '"other", "abc"'})
    assert (miss.status_code, hit.status_code, matching.status_code) == (200, 200, 304)
    assert hit.headers["x-cache"] == "HIT"

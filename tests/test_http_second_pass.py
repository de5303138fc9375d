"""Issue 13, end to end against real Redis: each point tested on the RFC's own wording, in `honor_origin`
mode unless said otherwise. The origin is a raw ASGI app that answers exactly the fields it is told to."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import httpx
import orjson
import pytest
import redis
from fastapi import FastAPI, Response

from redis_cache_middleware import CacheMiddleware, CacheRule, RedisBackend
from redis_cache_middleware.entry import Entry, decode, encode

from .support import client_for

RawHeaders = list[tuple[bytes, bytes]]
BODY = b"0123456789abcdefghij"  # 20 bytes


@dataclass
class Answer:
    """What the origin answers on a path: status, fields, body; `delay` seconds first; `fail` raises."""

    status: int = 200
    headers: RawHeaders = field(default_factory=list)
    body: bytes = BODY
    delay: float = 0.0
    fail: bool = False


class Origin:
    """A raw ASGI app answering each path as `answers` says, counting its calls."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}
        self.calls: Counter[str] = Counter()

    def on(self, path: str, *fields: tuple[str, str], **options: Any) -> None:
        headers = [(name.encode(), value.encode("latin-1")) for name, value in fields]
        self.answers[path] = Answer(headers=headers, **options)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        self.calls[path] += 1
        answer = self.answers.get(path, Answer(404, [], b""))
        if answer.delay:
            await asyncio.sleep(answer.delay)
        if answer.fail:
            raise RuntimeError("the model crashed")
        headers = [*answer.headers, (b"content-length", str(len(answer.body)).encode())]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})


ORIGIN_RULES = [CacheRule("/{path:path}", ttl=3600, honor_origin=True, stale_if_error=120)]


def cached(
    backend: RedisBackend, rules: list[CacheRule] = ORIGIN_RULES, **options: Any
) -> tuple[Any, Origin]:
    origin = Origin()
    return CacheMiddleware(origin, backend=backend, rules=rules, namespace="t", **options), origin


def http_date(offset: float = 0.0) -> str:
    return formatdate(time.time() + offset, usegmt=True)


async def twice(client: httpx.AsyncClient, path: str, **kwargs: Any) -> tuple[httpx.Response, httpx.Response]:
    return await client.get(path, **kwargs), await client.get(path, **kwargs)


# 1. RFC 9111 section 5.3: an invalid Expires means "already expired" ---------------------------------------


def _expires_values() -> list[tuple[str, bool]]:
    future = http_date(600)  # e.g. "Thu, 03 Dec 2026 07:18:00 GMT"
    day, date, clock = future[:3], future[5:16], future[17:25]
    dd, mon, year = date.split(" ")
    long_day = {"Mon": "Monday", "Tue": "Tuesday", "Wed": "Wednesday", "Thu": "Thursday"}.get(day)
    long_day = long_day or {"Fri": "Friday", "Sat": "Saturday", "Sun": "Sunday"}[day]
    return [
        (future, True),  # IMF-fixdate
        (f"{long_day}, {dd}-{mon}-{year[2:]} {clock} GMT", True),  # RFC 850
        (f"{day} {mon} {int(dd):2d} {clock} {year}", True),  # asctime
        ("0", False),
        (f"{day}, {dd}-{mon}-{year} {clock} GMT", False),  # dashes in an IMF-fixdate
        (
            f"{day}, {dd} {mon} {year} {clock.replace('0', '', 1) if clock[0] == '0' else clock[1:]} GMT",
            False,
        ),
        (f"{day}, {dd} {mon} {year}\r\n {clock} GMT", False),  # folded over two lines
        (f"{day}, {dd} {mon} {year} {clock} UTC", False),
        (f"{day}, {dd} {mon} {year[2:]} {clock} GMT", False),  # 2-digit year in the IMF form
    ]


@pytest.mark.parametrize("case", range(9))
async def test_expires_must_be_one_of_the_three_http_date_formats(backend: RedisBackend, case: int) -> None:
    value, valid = _expires_values()[case]
    app, origin = cached(backend)
    origin.on("/e", ("date", http_date()), ("expires", value))
    async with client_for(app) as client:
        _, second = await twice(client, "/e")
    assert second.headers["x-cache"] == ("HIT" if valid else "MISS"), repr(value)
    assert origin.calls["/e"] == (1 if valid else 2)


# 2 and 3. RFC 9111 sections 5.1 and 4.2.3: Age -------------------------------------------------------------


async def test_an_invalid_age_is_ignored(backend: RedisBackend) -> None:
    app, origin = cached(backend)
    origin.on("/a", ("cache-control", "max-age=3600"), ("age", "soon"))
    async with client_for(app) as client:
        _, hit = await twice(client, "/a")
    assert hit.headers["x-cache"] == "HIT"
    assert int(hit.headers["age"]) < 3600


async def test_age_on_a_hit_counts_the_response_delay_and_residence(backend: RedisBackend) -> None:
    """An origin `Age: 30` that took 1.2 s to answer, hit 0.5 s later, is at least 31.7 s old."""
    app, origin = cached(backend)
    origin.on("/slow", ("cache-control", "max-age=3600"), ("age", "30"), delay=1.2)
    async with client_for(app) as client:
        miss = await client.get("/slow")
        await asyncio.sleep(0.5)
        hit = await client.get("/slow")
    assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("MISS", "HIT")
    assert int(miss.headers["age"]) >= 31  # int(30 + 1.2)
    assert int(hit.headers["age"]) >= 31  # int(30 + 1.2 + 0.5)
    assert hit.headers.get_list("age") == [hit.headers["age"]]


# 4. RFC 9111 section 4.4: invalidation by unsafe methods ---------------------------------------------------


async def _stored(client: httpx.AsyncClient, *paths: str) -> None:
    for path in paths:
        await client.get(path)
        assert (await client.get(path)).headers["x-cache"] == "HIT", path


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "M-SEARCH"])
async def test_unsafe_methods_invalidate_by_default_in_origin_mode(
    backend: RedisBackend, method: str
) -> None:
    app, origin = cached(backend)
    for path in ("/things/1", "/things/2"):
        origin.on(path, ("cache-control", "max-age=3600"))
    async with client_for(app) as client:
        await _stored(client, "/things/1", "/things/2")
        origin.answers["/things/1"].status = 204
        done = await client.request(method, "/things/1", content=b"x")
        origin.answers["/things/1"].status = 200
        after = await client.get("/things/1")
        other = await client.get("/things/2")
    assert done.status_code == 204
    assert after.headers["x-cache"] == "MISS" and other.headers["x-cache"] == "HIT"


async def test_an_error_response_invalidates_nothing(backend: RedisBackend) -> None:
    app, origin = cached(backend)
    origin.on("/things/1", ("cache-control", "max-age=3600"))
    async with client_for(app) as client:
        await _stored(client, "/things/1")
        origin.answers["/things/1"].status = 409
        assert (await client.post("/things/1")).status_code == 409
        origin.answers["/things/1"].status = 200
        assert (await client.get("/things/1")).headers["x-cache"] == "HIT"


async def test_location_and_content_location_on_the_same_origin_are_invalidated(
    backend: RedisBackend,
) -> None:
    rules = [
        CacheRule("/things/{id}", ttl=3600, honor_origin=True),
        CacheRule("/lists/{name}", ttl=3600, honor_origin=True),
    ]
    app, origin = cached(backend, rules)
    paths = ("/things/2", "/lists/new%20things?page=1", "/things/4", "/things/5")
    for path in ("/things/2", "/lists/new things", "/things/4", "/things/5"):
        origin.on(path, ("cache-control", "max-age=3600"))
    origin.on(
        "/things/1",
        ("location", "/lists/new%20things?page=1"),  # another rule's URL, escaped, with a query
        ("content-location", "http://testserver/things/2"),
        ("location", "http://elsewhere.example/things/4"),  # another origin: untouched
        status=201,
    )
    async with client_for(app) as client:
        await _stored(client, *paths)
        created = await client.post("/things/1", content=b"{}")
        again = [(await client.get(path)).headers["x-cache"] for path in paths]
    assert created.status_code == 201
    assert again == ["MISS", "MISS", "HIT", "HIT"]


async def test_ttl_mode_invalidates_only_the_methods_it_names(backend: RedisBackend) -> None:
    rules = [CacheRule("/things/{id}", ttl=60, invalidate_on=("DELETE",))]
    app, origin = cached(backend, rules)
    origin.on("/things/1")
    async with client_for(app) as client:
        await _stored(client, "/things/1")
        await client.post("/things/1")
        kept = await client.get("/things/1")
        await client.delete("/things/1")
        dropped = await client.get("/things/1")
    assert (kept.headers["x-cache"], dropped.headers["x-cache"]) == ("HIT", "MISS")


async def test_invalidation_reaches_typed_keys(backend: RedisBackend) -> None:
    """A FastAPI route with typed parameters is keyed on their parsed values; invalidation must find it."""
    api = FastAPI()
    calls: Counter[int] = Counter()

    @api.get("/items/{item_id}")
    async def read(item_id: int, q: int = 0) -> dict[str, int]:
        calls[item_id] += 1
        return {"item": item_id, "q": q}

    @api.put("/items/{item_id}", status_code=204)
    async def write(item_id: int, response: Response) -> None:
        response.headers["location"] = f"/items/{item_id + 1}?q=01"  # the same query, spelt differently

    rules = [CacheRule("/items/{item_id}", ttl=60, invalidate_on=("PUT",))]
    app = CacheMiddleware(api, backend=backend, rules=rules, namespace="t")
    async with client_for(app) as client:
        await _stored(client, "/items/1?q=1", "/items/2?q=1")
        await client.put("/items/1?q=1")
        after = [(await client.get(path)).headers["x-cache"] for path in ("/items/1?q=1", "/items/2?q=1")]
    assert after == ["MISS", "MISS"]
    assert calls == {1: 2, 2: 2}


# 5. RFC 9213: targeted cache control ------------------------------------------------------------------------


async def test_cdn_cache_control_overrides_cache_control_and_is_not_forwarded(backend: RedisBackend) -> None:
    app, origin = cached(backend)
    origin.on("/t", ("cache-control", "no-store"), ("cdn-cache-control", "max-age=30"))
    async with client_for(app) as client:
        miss, hit = await twice(client, "/t")
    assert hit.headers["x-cache"] == "HIT" and hit.headers["cache-status"].endswith("ttl=30")
    for response in (miss, hit):
        assert response.headers["cache-control"] == "no-store"  # still the client's to obey
        assert "cdn-cache-control" not in response.headers


@pytest.mark.parametrize(
    ("fields", "x_cache"),
    [
        ((("redis-cache-control", "no-store"), ("cdn-cache-control", "max-age=30")), "MISS"),  # first wins
        ((("redis-cache-control", "max-age=30"), ("cache-control", "private")), "HIT"),
        ((("redis-cache-control", "max-age=30,,"), ("cache-control", "private")), "MISS"),  # invalid: ignored
        ((("redis-cache-control", "max-age=30,,"), ("cdn-cache-control", "max-age=30")), "HIT"),
        ((("cdn-cache-control", "private"), ("cache-control", "max-age=30")), "MISS"),
    ],
)
async def test_configured_targeted_fields_first_present_and_valid_wins(
    backend: RedisBackend, fields: tuple[tuple[str, str], ...], x_cache: str
) -> None:
    app, origin = cached(backend, targeted_fields=("Redis-Cache-Control", "cdn-cache-control"))
    origin.on("/t", *fields)
    async with client_for(app) as client:
        miss, second = await twice(client, "/t")
    assert second.headers["x-cache"] == x_cache
    assert not {"redis-cache-control", "cdn-cache-control"} & set(miss.headers)


async def test_targeted_fields_are_forwarded_when_configured(backend: RedisBackend) -> None:
    app, origin = cached(backend, forward_targeted=True)
    origin.on("/t", ("cdn-cache-control", "max-age=30"))
    async with client_for(app) as client:
        miss, hit = await twice(client, "/t")
    assert hit.headers["x-cache"] == "HIT"
    assert miss.headers["cdn-cache-control"] == hit.headers["cdn-cache-control"] == "max-age=30"


# 6. RFC 5861: the origin's stale-while-revalidate and stale-if-error ----------------------------------------


async def test_origin_stale_if_error_serves_stale_for_errors_within_its_window(backend: RedisBackend) -> None:
    app, origin = cached(backend)
    for path in ("/raises", "/503", "/501", "/no-window", "/rule-bound"):
        origin.on(path, ("cache-control", "max-age=1, stale-if-error=60"))
    origin.on("/no-window", ("cache-control", "max-age=1, stale-if-error=0"))
    async with client_for(app) as client:
        await _stored(client, "/raises", "/503", "/501", "/no-window")
        await asyncio.sleep(1.1)
        origin.answers["/raises"].fail = True
        origin.answers["/no-window"].fail = True
        origin.answers["/503"].status = 503
        origin.answers["/501"].status = 501
        raised = await client.get("/raises")
        unavailable = await client.get("/503")
        not_implemented = await client.get("/501")
        with pytest.raises(RuntimeError):
            await client.get("/no-window")
    for stale in (raised, unavailable):
        assert (stale.status_code, stale.content, stale.headers["x-cache"]) == (200, BODY, "STALE")
        assert "stale-if-error" in stale.headers["cache-status"]
    assert not_implemented.status_code == 501  # RFC 5861 section 4: only 500, 502, 503 and 504 are errors


async def test_origin_stale_while_revalidate_bounded_by_the_rule(backend: RedisBackend) -> None:
    rules = [CacheRule("/{path:path}", ttl=3600, honor_origin=True, stale_while_revalidate=30)]
    app, origin = cached(backend, rules)
    origin.on("/within", ("cache-control", "max-age=1, stale-while-revalidate=60"))
    origin.on("/zero", ("cache-control", "max-age=1, stale-while-revalidate=0"))
    origin.on("/silent", ("cache-control", "max-age=1"))  # the rule's 30 s apply
    async with client_for(app) as client:
        await _stored(client, "/within", "/zero", "/silent")
        await asyncio.sleep(1.1)
        answers = [(await client.get(path)).headers["x-cache"] for path in ("/within", "/zero", "/silent")]
    assert answers == ["STALE", "MISS", "STALE"]


async def test_entry_keeps_its_windows_in_storage(backend: RedisBackend, redis_client: redis.Redis) -> None:
    """The Redis TTL is the lifetime plus the entry's larger window: the origin's 5 s, not the rule's 120."""
    app, origin = cached(backend)
    origin.on("/k", ("cache-control", "max-age=10, stale-if-error=5"))
    async with client_for(app) as client:
        await client.get("/k")
    (key,) = list(redis_client.scan_iter("rcm:t:1:*"))  # entries of version 1 (no stats or tag keys)
    assert 14_000 < redis_client.pttl(key) <= 15_000


def test_records_without_windows_decode_with_the_rules() -> None:
    entry = Entry("k", 200, [(b"etag", b'"x"')], b"body", 1.0, 10.0, b'"x"', 0.0, 0.0, 0, b"", (), 5.0, 7.0)
    data = encode(entry)
    assert decode(data, "k") == entry
    head, meta_len = data[:4], int.from_bytes(data[4:8], "big")
    meta = orjson.loads(data[8 : 8 + meta_len])

    def record(fields: list[Any]) -> bytes:
        encoded = orjson.dumps(fields)
        return head + len(encoded).to_bytes(4, "big") + encoded + entry.body

    old = decode(record(meta[:12]), "k")
    assert isinstance(old, Entry) and (old.stale_while_revalidate, old.stale_if_error) == (None, None)
    for bad in ([*meta[:12], "x", 1], [*meta[:12], 1], [*meta[:12], -1, 1], [*meta[:12], 1, 2, 3]):
        assert decode(record(bad), "k") is None


# 7. RFC 9110 section 14: ranges from stored complete responses ---------------------------------------------


async def _ranges_app(backend: RedisBackend) -> tuple[Any, Origin]:
    app, origin = cached(backend)
    origin.on(
        "/r",
        ("cache-control", "max-age=3600"),
        ("content-type", "text/plain"),
        ("etag", '"r1"'),
        ("last-modified", http_date(-3600)),
        ("date", http_date()),
    )
    return app, origin


async def test_ranges_are_answered_from_a_stored_200(backend: RedisBackend) -> None:
    app, origin = await _ranges_app(backend)
    async with client_for(app) as client:
        await _stored(client, "/r")
        first = await client.get("/r", headers={"range": "bytes=0-3"})
        suffix = await client.get("/r", headers={"range": "bytes=-3"})
        open_ended = await client.get("/r", headers={"range": "bytes=15-"})
        beyond = await client.get("/r", headers={"range": "bytes=18-100"})
        unsatisfiable = await client.get("/r", headers={"range": "bytes=20-"})
        other_unit = await client.get("/r", headers={"range": "items=0-3"})
    assert origin.calls["/r"] == 1
    assert (first.status_code, first.content, first.headers["content-range"]) == (
        206,
        b"0123",
        "bytes 0-3/20",
    )
    assert first.headers["content-length"] == "4" and first.headers["x-cache"] == "HIT"
    assert (suffix.content, suffix.headers["content-range"]) == (b"hij", "bytes 17-19/20")
    assert (open_ended.content, open_ended.headers["content-range"]) == (b"fghij", "bytes 15-19/20")
    assert (beyond.content, beyond.headers["content-range"]) == (b"ij", "bytes 18-19/20")
    assert (unsatisfiable.status_code, unsatisfiable.content) == (416, b"")
    assert unsatisfiable.headers["content-range"] == "bytes */20"
    assert (other_unit.status_code, other_unit.content) == (200, BODY)


async def test_several_ranges_are_answered_multipart(backend: RedisBackend) -> None:
    app, _ = await _ranges_app(backend)
    async with client_for(app) as client:
        await _stored(client, "/r")
        multi = await client.get("/r", headers={"range": "bytes=0-1, 10-11"})
        overlapping = await client.get("/r", headers={"range": "bytes=0-4, 3-6"})  # coalesced into one
    media_type, _, boundary = multi.headers["content-type"].partition("; boundary=")
    assert multi.status_code == 206 and media_type == "multipart/byteranges"
    parts = multi.content.split(b"--" + boundary.encode())
    assert parts[-1] == b"--\r\n" and len(parts) == 4
    assert b"content-range: bytes 0-1/20\r\n\r\n01\r\n" in parts[1]
    assert b"content-range: bytes 10-11/20\r\n\r\nab\r\n" in parts[2]
    assert b"content-type: text/plain" in parts[1]
    assert int(multi.headers["content-length"]) == len(multi.content)
    assert (overlapping.content, overlapping.headers["content-range"]) == (b"0123456", "bytes 0-6/20")


async def test_if_range_head_and_if_none_match_come_first(backend: RedisBackend) -> None:
    app, origin = await _ranges_app(backend)
    last_modified = origin.answers["/r"].headers[3][1].decode()
    async with client_for(app) as client:
        await _stored(client, "/r")
        same = await client.get("/r", headers={"range": "bytes=0-1", "if-range": '"r1"'})
        changed = await client.get("/r", headers={"range": "bytes=0-1", "if-range": '"r0"'})
        weak = await client.get("/r", headers={"range": "bytes=0-1", "if-range": 'W/"r1"'})
        dated = await client.get("/r", headers={"range": "bytes=0-1", "if-range": last_modified})
        head = await client.head("/r", headers={"range": "bytes=0-1"})
        not_modified = await client.get("/r", headers={"range": "bytes=0-1", "if-none-match": '"r1"'})
    assert (same.status_code, same.content) == (206, b"01")
    assert (changed.status_code, changed.content) == (200, BODY)
    assert (weak.status_code, weak.content) == (200, BODY)  # If-Range compares strongly
    assert (dated.status_code, dated.content) == (206, b"01")  # Last-Modified an hour before Date: strong
    assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", "20")
    assert (not_modified.status_code, not_modified.content) == (304, b"")
    assert origin.calls["/r"] == 1


async def test_no_range_from_a_miss_not_stored_and_partials_never_stored(backend: RedisBackend) -> None:
    app, origin = cached(backend)
    origin.on("/unstored", ("cache-control", "no-store"))
    origin.on("/partial", ("cache-control", "max-age=60"), ("content-range", "bytes 0-3/20"), status=206)
    async with client_for(app) as client:
        unstored = await client.get("/unstored", headers={"range": "bytes=0-3"})
        partials = [await client.get("/partial", headers={"range": "bytes=0-3"}) for _ in range(2)]
    assert (unstored.status_code, unstored.content) == (200, BODY)  # what the app sent
    assert [p.status_code for p in partials] == [206, 206]
    assert [p.headers["x-cache"] for p in partials] == ["MISS", "MISS"] and origin.calls["/partial"] == 2


async def test_range_applies_to_get_only(backend: RedisBackend) -> None:
    """RFC 9110 section 14.2: a Range on any other method is ignored, even on a cached POST."""
    app, origin = cached(backend, [CacheRule("/p", ttl=60, methods=("POST",))])
    origin.on("/p")
    async with client_for(app) as client:
        await client.post("/p", content=b"q")
        hit = await client.post("/p", content=b"q", headers={"range": "bytes=0-1"})
    assert (hit.headers["x-cache"], hit.status_code, hit.content) == ("HIT", 200, BODY)


# 8. RFC 9110 section 12.5: Vary normalisation ---------------------------------------------------------------


async def test_equivalent_negotiation_headers_select_the_same_variant(backend: RedisBackend) -> None:
    app, origin = cached(backend)
    origin.on("/v", ("cache-control", "max-age=3600"), ("vary", "Accept-Language, Accept-Encoding"))
    requests = [
        {"accept-language": "en, fr", "accept-encoding": "gzip, br"},
        {"accept-language": "fr,en", "accept-encoding": "BR,gzip;q=1"},
        {"accept-language": "FR ;q=1.0, en", "accept-encoding": "br, gzip"},
        {"accept-language": "fr;q=0.5, en", "accept-encoding": "br, gzip"},  # a different preference
        {"accept-encoding": "br, gzip"},  # absent is not empty
        {"accept-language": "", "accept-encoding": "br, gzip"},
    ]
    async with client_for(app) as client:
        answers = [(await client.get("/v", headers=headers)).headers["x-cache"] for headers in requests]
    assert answers == ["MISS", "HIT", "HIT", "MISS", "MISS", "MISS"]
    assert origin.calls["/v"] == 4


# 9. RFC 9110 section 6.6.1 and RFC 9111 section 4: Date ----------------------------------------------------


async def test_date_is_never_rewritten_or_repeated(backend: RedisBackend) -> None:
    app, origin = cached(backend)
    date = http_date(-5)
    origin.on("/d", ("cache-control", "max-age=3600"), ("Date", date))
    origin.on("/undated", ("cache-control", "max-age=3600"))
    async with client_for(app) as client:
        miss, hit = await twice(client, "/d")
        undated = await twice(client, "/undated")
    assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("MISS", "HIT")
    assert miss.headers.get_list("date") == hit.headers.get_list("date") == [date]
    assert undated[1].headers["x-cache"] == "HIT"
    assert [r.headers.get_list("date") for r in undated] == [[], []]  # the server adds its own

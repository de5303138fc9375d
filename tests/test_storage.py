"""Storability and lifetime (RFC 9111 sections 3 and 4.2) and freshening from a 304 (section 4.3.4), as the
pure functions of policy.py: whether a response may be stored, for how long, with which flags."""

from __future__ import annotations

import calendar

import pytest

from redis_cache_middleware.entry import MUST_REVALIDATE, REVALIDATABLE
from redis_cache_middleware.httpdate import format_http_date
from redis_cache_middleware.policy import (
    NOT_STORED,
    RawHeaders,
    freshened_headers,
    freshness_lifetime,
    headers_map,
    not_modified,
    not_modified_headers,
    parse_cache_control,
    storage,
)
from redis_cache_middleware.rules import CacheRule

NOW = float(calendar.timegm((2026, 6, 1, 0, 0, 0)))
TTL_MODE = CacheRule("/x", ttl=100)
ORIGIN = CacheRule("/x", ttl=3600, honor_origin=True)


def cc(value: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"cache-control", value)]


def date(offset: float) -> bytes:
    return format_http_date(NOW + offset)


# --- why a response is not stored ------------------------------------------------------------------


@pytest.mark.parametrize("rule", [TTL_MODE, ORIGIN], ids=["ttl", "origin"])
@pytest.mark.parametrize(
    ("status", "headers", "reason"),
    [
        (206, cc(b"max-age=60"), "partial"),
        (304, cc(b"max-age=60"), "not-modified"),
        (200, [*cc(b"max-age=60"), (b"set-cookie", b"session=1")], "set-cookie"),
        (200, [*cc(b"max-age=60"), (b"content-length", b"2000000")], "too-large"),
        (200, [*cc(b"max-age=60"), (b"content-length", b"lots")], "too-large"),
        (200, [*cc(b"max-age=60"), (b"vary", b"accept, *")], "vary"),
        (200, cc(b"no-store"), "no-store"),
        (200, cc(b"max-age=60, No-Store"), "no-store"),
        (200, cc(b"private"), "private"),
        (200, cc(b'private="x-user", max-age=60'), "private"),
    ],
)
def test_never_stored(rule: CacheRule, status: int, headers: RawHeaders, reason: str) -> None:
    assert storage(rule, status, headers, NOW).reason == reason


def test_status_must_be_among_the_rules() -> None:
    assert storage(TTL_MODE, 404, [], NOW).reason == "status"
    assert storage(CacheRule("/x", 1, statuses=(404,)), 404, [], NOW).reason is None
    assert storage(ORIGIN, 404, cc(b"max-age=60"), NOW).reason is None


def test_ttl_mode_refuses_no_cache_but_ignores_lifetimes() -> None:
    assert storage(TTL_MODE, 200, cc(b"no-cache"), NOW).reason == "no-cache"
    for headers in ([], cc(b"max-age=0"), [(b"expires", b"0")], [(b"age", b"9999")]):
        result = storage(TTL_MODE, 200, headers, NOW)
        assert (result.reason, result.ttl, result.initial_age) == (None, 100.0, 0.0)


def test_body_limit_is_inclusive() -> None:
    rule = CacheRule("/x", 1, max_body_bytes=10)
    assert storage(rule, 200, [(b"content-length", b"10")], NOW).reason is None
    assert storage(rule, 200, [(b"content-length", b"11")], NOW).reason == "too-large"


# --- lifetime (section 4.2.1 and 4.2.2) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "ttl"),
    [
        (cc(b"max-age=60"), 60.0),
        (cc(b"max-age=60, s-maxage=30"), 30.0),  # s-maxage wins in a shared cache
        (cc(b"max-age=999999"), 3600.0),  # the rule's ttl bounds the origin's
        ([(b"date", date(0)), (b"expires", date(120))], 120.0),
        ([*cc(b"max-age=45"), (b"date", date(0)), (b"expires", date(120))], 45.0),  # max-age over Expires
        ([(b"date", date(0)), (b"last-modified", date(-1000))], 100.0),  # heuristic: 10% since modified
        ([(b"date", date(0)), (b"last-modified", date(-(10**6)))], 3600.0),
    ],
)
def test_honored_lifetime(headers: RawHeaders, ttl: float) -> None:
    result = storage(ORIGIN, 200, [*headers, (b"etag", b'"v1"')], NOW)
    assert result.reason is None
    assert result.ttl == ttl


def test_no_explicit_or_heuristic_lifetime_is_not_cacheable() -> None:
    """Section 4.2.2: only some statuses may be given a heuristic lifetime, unless marked public."""
    assert storage(ORIGIN, 500, [], NOW).reason == "not-cacheable"
    assert storage(ORIGIN, 500, cc(b"public"), NOW).reason == "stale"  # public but no Last-Modified
    assert storage(ORIGIN, 500, cc(b"max-age=30"), NOW).ttl == 30.0


def test_freshness_lifetime_directly() -> None:
    fields = headers_map([(b"date", date(0)), (b"last-modified", date(-500))])
    assert freshness_lifetime(200, fields, {}) == 50.0
    assert freshness_lifetime(200, fields, {"max-age": "bad"}) == 0.0
    assert freshness_lifetime(418, fields, {}) is None
    assert freshness_lifetime(418, fields, {"public": None}) == 50.0
    future = headers_map([(b"date", date(0)), (b"last-modified", date(500))])
    assert freshness_lifetime(200, future, {}) == 0.0  # modified "after" its own Date: no heuristic


def test_a_response_stale_on_arrival_without_a_validator_is_not_stored() -> None:
    assert storage(ORIGIN, 200, [*cc(b"max-age=60"), (b"age", b"60")], NOW).reason == "stale"
    assert storage(ORIGIN, 200, [*cc(b"max-age=60"), (b"age", b"59")], NOW).initial_age == 59.0
    kept = storage(ORIGIN, 200, [*cc(b"max-age=60"), (b"age", b"100"), (b"etag", b'"v"')], NOW)
    assert (kept.reason, kept.flags & REVALIDATABLE) == (None, REVALIDATABLE)


def test_apparent_age_from_date() -> None:
    result = storage(ORIGIN, 200, [*cc(b"max-age=60"), (b"date", date(-20))], NOW)
    assert result.initial_age == 20.0


# --- flags ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "flags"),
    [
        (cc(b"max-age=60"), 0),
        (cc(b"max-age=60, must-revalidate"), MUST_REVALIDATE),
        (cc(b"max-age=60, proxy-revalidate"), MUST_REVALIDATE),
        (cc(b"s-maxage=60"), MUST_REVALIDATE),  # section 5.2.2.10
        ([*cc(b"max-age=60"), (b"etag", b'"v"')], REVALIDATABLE),
        ([*cc(b"max-age=60"), (b"last-modified", date(-100))], REVALIDATABLE),
        ([*cc(b"must-revalidate, max-age=60"), (b"etag", b'W/"v"')], MUST_REVALIDATE | REVALIDATABLE),
    ],
)
def test_flags_in_honor_origin_mode(headers: RawHeaders, flags: int) -> None:
    result = storage(ORIGIN, 200, headers, NOW)
    assert (result.reason, result.flags) == (None, flags)


def test_no_cache_with_a_validator_is_stored_to_be_revalidated_on_every_use() -> None:
    """Section 5.2.2.4: no-cache lets a cache store a response it must validate before each reuse."""
    result = storage(ORIGIN, 200, [*cc(b"no-cache, max-age=60"), (b"etag", b'"v"')], NOW)
    assert (result.reason, result.ttl) == (None, 0.0)
    assert result.flags == MUST_REVALIDATE | REVALIDATABLE
    assert result.etag == b'"v"'
    assert storage(ORIGIN, 200, cc(b"no-cache, max-age=60"), NOW).reason == "stale"


def test_ttl_mode_keeps_must_revalidate_and_validators_but_no_revalidatable_flag() -> None:
    result = storage(TTL_MODE, 200, [*cc(b"must-revalidate"), (b"etag", b'"v"')], NOW)
    assert (result.flags, result.etag) == (MUST_REVALIDATE, b'"v"')


def test_vary_lists_only_the_fields_the_rule_does_not_key() -> None:
    rule = CacheRule("/x", 60, vary=("Accept-Language",))
    result = storage(rule, 200, [(b"vary", b"Accept-Encoding, accept-language"), (b"vary", b"X-Tenant")], NOW)
    assert result.vary == (b"accept-encoding", b"x-tenant")
    assert storage(rule, 200, [(b"vary", b"accept-language")], NOW).vary == ()


def test_cache_control_directives_are_case_insensitive_and_keep_arguments() -> None:
    parsed = parse_cache_control([b'Max-Age=60, no-cache="set-cookie"', b"PUBLIC"])
    assert parsed == {"max-age": "60", "no-cache": "set-cookie", "public": None}


# --- freshening from a 304 (section 4.3.4) ----------------------------------------------------------


def test_a_304_replaces_the_stored_fields_it_carries() -> None:
    stored = [
        (b"content-type", b"application/json"),
        (b"cache-control", b"max-age=10"),
        (b"etag", b'"v1"'),
        (b"x-model", b"a"),
        (b"x-model", b"b"),
    ]
    update = [(b"Cache-Control", b"max-age=99"), (b"x-model", b"c"), (b"date", date(0))]
    assert freshened_headers(stored, update) == [
        (b"content-type", b"application/json"),
        (b"etag", b'"v1"'),
        (b"Cache-Control", b"max-age=99"),
        (b"x-model", b"c"),
        (b"date", date(0)),
    ]


def test_a_304_never_brings_unstored_fields_nor_changes_the_representation() -> None:
    stored = [(b"content-type", b"application/json"), (b"content-encoding", b"gzip")]
    update = [
        (b"set-cookie", b"a=1"),
        (b"content-length", b"0"),
        (b"connection", b"close"),
        (b"content-type", b"text/html"),
        (b"content-encoding", b"br"),
    ]
    assert freshened_headers(stored, update) == stored
    assert {b"set-cookie", b"content-length", b"connection"} <= NOT_STORED


def test_freshened_entry_gets_its_new_lifetime_from_the_304() -> None:
    stored = [(b"cache-control", b"max-age=10"), (b"etag", b'"v1"')]
    headers = freshened_headers(stored, [(b"cache-control", b"max-age=300")])
    result = storage(ORIGIN, 200, headers, NOW)
    assert (result.reason, result.ttl, result.flags) == (None, 300.0, REVALIDATABLE)


def test_not_modified_headers_repeat_only_the_304_fields() -> None:
    stored = [
        (b"Content-Type", b"text/plain"),
        (b"ETag", b'"v"'),
        (b"Cache-Control", b"max-age=1"),
        (b"Vary", b"accept"),
        (b"x-other", b"1"),
    ]
    assert not_modified_headers(stored) == [
        (b"ETag", b'"v"'),
        (b"Cache-Control", b"max-age=1"),
        (b"Vary", b"accept"),
    ]


# --- the client's conditions (RFC 9110 section 13) ----------------------------------------------------


@pytest.mark.parametrize(
    ("request_headers", "etag", "last_modified", "current"),
    [
        ([(b"if-none-match", b'"v"')], b'"v"', b"", True),
        ([(b"if-none-match", b'W/"v"')], b'"v"', b"", True),  # weak comparison
        ([(b"if-none-match", b'"a", "v"')], b'W/"v"', b"", True),
        ([(b"if-none-match", b'"a"'), (b"if-none-match", b'"v"')], b'"v"', b"", True),
        ([(b"if-none-match", b"*")], b'"v"', b"", True),
        ([(b"if-none-match", b'"a"')], b'"v"', b"", False),
        ([(b"if-none-match", b'"v"')], b"", b"", False),
        ([(b"if-none-match", b"v")], b'"v"', b"", False),  # unquoted: does not parse
        # If-None-Match wins over If-Modified-Since
        ([(b"if-none-match", b'"a"'), (b"if-modified-since", date(0))], b'"v"', date(-10), False),
        ([(b"if-modified-since", date(0))], b"", date(-10), True),
        ([(b"if-modified-since", date(0))], b"", date(0), True),
        ([(b"if-modified-since", date(-20))], b"", date(-10), False),
        ([(b"if-modified-since", b"yesterday")], b"", date(-10), False),
        ([(b"if-modified-since", date(0))], b"", b"", False),
        ([], b'"v"', date(-10), False),
    ],
)
def test_not_modified(request_headers: RawHeaders, etag: bytes, last_modified: bytes, current: bool) -> None:
    assert not_modified(headers_map(request_headers), etag, last_modified) is current

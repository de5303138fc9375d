"""The HTTP rules as pure functions, each against its RFC's wording (no Redis, no app)."""

from __future__ import annotations

import calendar

import pytest

from redis_cache_middleware import CacheRule
from redis_cache_middleware.config import CacheConfig
from redis_cache_middleware.entry import MUST_REVALIDATE
from redis_cache_middleware.httpdate import format_http_date, parse_http_date
from redis_cache_middleware.invalidation import invalidates, invalidation_targets, is_unsafe
from redis_cache_middleware.negotiation import normalise_vary_value
from redis_cache_middleware.policy import (
    age_value,
    client_headers,
    corrected_initial_age,
    delta_seconds,
    storage,
    stored_headers,
)
from redis_cache_middleware.ranges import (
    UNSATISFIABLE,
    if_range_allows,
    parse_range,
    partial_response,
    unsatisfiable_response,
)
from redis_cache_middleware.structured import Item, parse_dictionary
from redis_cache_middleware.targeted import DEFAULT_TARGETED_FIELDS, targeted_directives

SUNDAY = float(calendar.timegm((1994, 11, 6, 8, 49, 37)))  # RFC 9110 section 5.6.7's example instant
NOW_2026 = float(calendar.timegm((2026, 6, 1, 0, 0, 0)))
ORIGIN = CacheRule("/x", ttl=3600, honor_origin=True, stale_while_revalidate=60, stale_if_error=120)
TTL_MODE = CacheRule("/x", ttl=100, stale_while_revalidate=60, stale_if_error=120)


# RFC 9110 section 5.6.7: HTTP-date --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"Sun, 06 Nov 1994 08:49:37 GMT", SUNDAY),  # IMF-fixdate
        (b"Sunday, 06-Nov-94 08:49:37 GMT", SUNDAY),  # obsolete RFC 850 format
        (b"Sun Nov  6 08:49:37 1994", SUNDAY),  # ANSI C asctime() format
        (b"Sun Nov 06 08:49:37 1994", SUNDAY),  # asctime's date3 also allows 2DIGIT
        (b"  Sun, 06 Nov 1994 08:49:37 GMT\t", SUNDAY),  # optional whitespace around a field value
        (b"Thu, 29 Feb 2024 00:00:00 GMT", float(calendar.timegm((2024, 2, 29, 0, 0, 0)))),
        (b"Wed, 31 Dec 2008 23:59:60 GMT", float(calendar.timegm((2009, 1, 1, 0, 0, 0)))),  # leap second
        (b"Monday, 01-Jun-76 00:00:00 GMT", float(calendar.timegm((2076, 6, 1, 0, 0, 0)))),  # 50 years ahead
        (b"Tuesday, 01-Jun-77 00:00:00 GMT", float(calendar.timegm((1977, 6, 1, 0, 0, 0)))),  # more: the past
    ],
)
def test_http_date_accepts_the_three_formats(value: bytes, expected: float) -> None:
    assert parse_http_date(value, now=NOW_2026) == expected


@pytest.mark.parametrize(
    "value",
    [
        b"0",
        b"-1",
        b"",
        b"Sun, 06 Nov 94 08:49:37 GMT",  # 2-digit year outside RFC 850
        b"Sun Nov  6 08:49:37 94",
        b"Sun, 06 Nov 1994 08:49:37 UTC",  # zones other than GMT
        b"Sun, 06 Nov 1994 08:49:37 +0000",
        b"Sun, 06 Nov 1994 08:49:37 gmt",  # HTTP-date is case-sensitive
        b"sun, 06 nov 1994 08:49:37 GMT",
        b"Sun, 06 Nov 1994 08:49:37",  # no zone
        b"Sun 06 Nov 1994 08:49:37 GMT",  # missing comma
        b"Sun,  06 Nov 1994 08:49:37 GMT",  # extra spaces
        b"Sun, 06 Nov 1994  08:49:37 GMT",
        b"Sun Nov 6 08:49:37 1994",  # asctime's one-digit day needs its leading space
        b"Sun, 06-Nov-1994 08:49:37 GMT",  # dashes
        b"Sun, 06 Nov 1994 08.49.37 GMT",  # dots for colons
        b"Sun, 06 Nov 1994 8:49:37 GMT",  # one-digit hour
        b"Sun, 6 Nov 1994 08:49:37 GMT",  # one-digit day
        b"Sun, 06 Nov\r\n 1994 08:49:37 GMT",  # folded over lines
        b"Sun, 06 Nov\n 1994 08:49:37 GMT",
        b"Sun, 32 Jan 1994 08:49:37 GMT",  # invalid days and months
        b"Tue, 29 Feb 1995 08:49:37 GMT",
        b"Sun, 00 Nov 1994 08:49:37 GMT",
        b"Sun, 06 Foo 1994 08:49:37 GMT",
        b"Xyz, 06 Nov 1994 08:49:37 GMT",
        b"Sun, 06 Nov 0000 08:49:37 GMT",
        b"Sun, 06 Nov 1994 24:00:00 GMT",  # out-of-range fields
        b"Sun, 06 Nov 1994 08:60:37 GMT",
        b"Sun, 06 Nov 1994 08:49:61 GMT",
        b"Sun, 06-Nov-94 08:49:37 GMT",  # RFC 850 needs the long day name
        b"Sunday, 06 Nov 1994 08:49:37 GMT",
        b"Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT",  # two dates
        b"Sun, \xd9\xa06 Nov 1994 08:49:37 GMT",  # non-ASCII digits
    ],
)
def test_http_date_rejects_everything_else(value: bytes) -> None:
    assert parse_http_date(value) is None


def test_http_date_round_trips_imf_fixdate() -> None:
    assert format_http_date(SUNDAY) == b"Sun, 06 Nov 1994 08:49:37 GMT"
    assert parse_http_date(format_http_date(NOW_2026 + 0.7)) == NOW_2026


@pytest.mark.parametrize("expires", [b"0", b"Sun, 06 Nov 94 08:49:37 GMT", b"Sun, 06 Nov 2094 08:49:37 UTC"])
def test_invalid_expires_means_already_expired(expires: bytes) -> None:
    """RFC 9111 section 5.3: a cache recipient MUST interpret invalid date formats as in the past."""
    headers = [(b"date", format_http_date(NOW_2026)), (b"expires", expires)]
    assert storage(ORIGIN, 200, headers, NOW_2026).reason == "stale"
    validated = storage(ORIGIN, 200, [*headers, (b"etag", b'"v"')], NOW_2026)
    assert validated.reason is None and validated.ttl == 0.0


def test_valid_expires_gives_its_lifetime_even_without_date() -> None:
    expires = (b"expires", format_http_date(NOW_2026 + 30))
    assert storage(ORIGIN, 200, [(b"date", format_http_date(NOW_2026)), expires], NOW_2026 + 5).ttl == 30
    assert storage(ORIGIN, 200, [expires], NOW_2026).ttl == 30  # RFC 9110 6.6.1: Date is the receipt time


# RFC 9111 sections 1.2.2, 5.1 and 4.2.3: Age ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([b"7200, 0"], 7200),
        ([b"0, 7200"], 0),
        ([b"7200", b"0"], 7200),  # several field lines: still the first member
        ([b" 30 "], 30),
        ([b"abc"], None),
        ([b"-1"], None),
        ([b"1.5"], None),
        ([b"\xb2"], None),  # a Latin-1 superscript two is not a digit here
        ([b""], None),
        ([], None),
        ([b"99999999999999999999"], 2**31),  # too large to represent: 2^31
    ],
)
def test_age_value_is_the_first_member_or_ignored(values: list[bytes], expected: int | None) -> None:
    assert age_value(values) == expected


@pytest.mark.parametrize(("age", "reason"), [(b"7200, 0", "stale"), (b"0, 7200", None), (b"x", None)])
def test_first_age_member_decides_freshness(age: bytes, reason: str | None) -> None:
    result = storage(ORIGIN, 200, [(b"cache-control", b"max-age=3600"), (b"age", age)], NOW_2026)
    assert result.reason == reason
    if reason is None:
        assert result.initial_age == 0.0


def test_malformed_delta_seconds_never_raise() -> None:
    assert [delta_seconds(v) for v in ("\xb2", "", "٣", "12", None)] == [None, None, None, 12, None]
    assert storage(ORIGIN, 200, [(b"cache-control", b"max-age=\xb2")], NOW_2026).reason == "stale"


def test_corrected_initial_age_follows_section_4_2_3() -> None:
    assert corrected_initial_age(30, None, 100.0, 103.0) == 33.0  # age_value + response_delay
    assert corrected_initial_age(0, 50.0, 100.0, 100.0) == 50.0  # apparent_age wins
    assert corrected_initial_age(None, 200.0, 100.0, 101.0) == 1.0  # a Date ahead of the clock: delay only
    assert corrected_initial_age(10, 95.0, 99.0, 100.0) == 11.0


def test_storage_counts_the_response_delay_when_given_the_request_time() -> None:
    headers = [(b"cache-control", b"max-age=60"), (b"age", b"30")]
    assert storage(ORIGIN, 200, headers, NOW_2026, NOW_2026 - 3).initial_age == 33.0
    assert storage(ORIGIN, 200, headers, NOW_2026).initial_age == 30.0  # no request time: no delay
    assert storage(ORIGIN, 200, headers, NOW_2026, NOW_2026 - 31).reason == "stale"


# RFC 8941 section 4.2.2 and RFC 9213: targeted cache control ------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([b"max-age=60"], {"max-age": Item(60, {})}),
        ([b"max-age=60, no-store"], {"max-age": Item(60, {}), "no-store": Item(True, {})}),
        ([b"max-age=60", b"private"], {"max-age": Item(60, {}), "private": Item(True, {})}),
        ([b'a="x\\"y";p=?0, b=:aGk=:'], {"a": Item('x"y', {"p": False}), "b": Item(b"hi", {})}),
        ([b"a=(1 2.5 tok)"], {"a": Item((Item(1, {}), Item(2.5, {}), Item("tok", {})), {})}),
        ([b"a=:aGk:"], {"a": Item(b"hi", {})}),  # unpadded base64 is tolerated
        ([b""], {}),
    ],
)
def test_structured_dictionary_parses(lines: list[bytes], expected: dict[str, Item]) -> None:
    assert parse_dictionary(lines) == expected


@pytest.mark.parametrize(
    "value",
    [b"max-age=6 0", b"Max-Age=60", b"max-age=60,", b"max-age=60,,no-store", b'a="unterminated', b"a=1.2345",
     b"a=1234567890123456", b"a=?2", b"a=:!!:", b"a=(1 2", b"=1", b"max-age=60;", b"a=\xc3\xa9"],
)  # fmt: skip
def test_structured_dictionary_rejects_bad_syntax(value: bytes) -> None:
    assert parse_dictionary([value]) is None


def test_targeted_field_replaces_cache_control_for_this_cache() -> None:
    cdn = DEFAULT_TARGETED_FIELDS
    override = [(b"cache-control", b"no-store"), (b"cdn-cache-control", b"max-age=30")]
    assert storage(ORIGIN, 200, override, NOW_2026, targeted_fields=cdn).ttl == 30
    assert storage(ORIGIN, 200, override, NOW_2026).reason == "no-store"  # default: today's behaviour
    forbid = [(b"cache-control", b"max-age=100"), (b"cdn-cache-control", b"no-store")]
    assert storage(ORIGIN, 200, forbid, NOW_2026, targeted_fields=cdn).reason == "no-store"
    private = [(b"cache-control", b"max-age=100"), (b"cdn-cache-control", b"private, max-age=5")]
    assert storage(ORIGIN, 200, private, NOW_2026, targeted_fields=cdn).reason == "private"
    strict = [(b"cdn-cache-control", b"max-age=5, must-revalidate"), (b"etag", b'"v"')]
    assert storage(ORIGIN, 200, strict, NOW_2026, targeted_fields=cdn).flags & MUST_REVALIDATE
    shared = [(b"cache-control", b"max-age=1"), (b"cdn-cache-control", b"s-maxage=7, max-age=100")]
    assert storage(ORIGIN, 200, shared, NOW_2026, targeted_fields=cdn).ttl == 7
    no_cache = [(b"cache-control", b"max-age=100"), (b"cdn-cache-control", b"no-cache"), (b"etag", b'"v"')]
    assert storage(ORIGIN, 200, no_cache, NOW_2026, targeted_fields=cdn).ttl == 0


def test_invalid_targeted_field_is_ignored_as_a_whole() -> None:
    headers = [(b"cache-control", b"max-age=100"), (b"cdn-cache-control", b"no-store,,max-age=1")]
    assert storage(ORIGIN, 200, headers, NOW_2026, targeted_fields=DEFAULT_TARGETED_FIELDS).ttl == 100


def test_first_present_and_valid_targeted_field_wins() -> None:
    fields = ("redis-cache-control", "cdn-cache-control")
    both = {b"redis-cache-control": [b"max-age=5"], b"cdn-cache-control": [b"max-age=50"]}
    assert targeted_directives(both, fields) == {"max-age": "5"}
    broken_first = {b"redis-cache-control": [b"max-age=5;"], b"cdn-cache-control": [b"max-age=50"]}
    assert targeted_directives(broken_first, fields) == {"max-age": "50"}
    assert targeted_directives({b"cdn-cache-control": [b"max-age=50"]}, fields) == {"max-age": "50"}
    assert targeted_directives({b"cache-control": [b"max-age=50"]}, fields) is None
    wrong_types = {b"cdn-cache-control": [b'max-age="5", no-store=?0, private']}
    assert targeted_directives(wrong_types, fields) == {"max-age": "", "private": None}
    decimal = [(b"cache-control", b"max-age=100"), (b"cdn-cache-control", b"max-age=5.5")]
    assert storage(ORIGIN, 200, decimal, NOW_2026, targeted_fields=fields).reason == "stale"


def test_targeted_fields_are_not_sent_to_clients_unless_configured() -> None:
    headers = [(b"CDN-Cache-Control", b"max-age=5"), (b"cache-tag", b"a"), (b"cache-control", b"max-age=1")]
    hidden = CacheConfig(targeted_fields=("CDN-Cache-Control",)).hidden_fields
    assert client_headers(headers, hidden) == [(b"cache-control", b"max-age=1")]
    forwarded = CacheConfig(forward_targeted=True).hidden_fields
    assert client_headers(headers, forwarded) == [
        (b"CDN-Cache-Control", b"max-age=5"),
        (b"cache-control", b"max-age=1"),
    ]


@pytest.mark.parametrize("names", ["cdn-cache-control", ["bad name"], ["a:b"], [""], [1]])
def test_targeted_field_names_are_checked(names: object) -> None:
    with pytest.raises(ValueError, match="targeted_fields"):
        CacheConfig(targeted_fields=names)  # type: ignore[arg-type]


# RFC 5861: the origin's stale windows -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cache_control", "windows"),
    [
        (b"max-age=10, stale-while-revalidate=30, stale-if-error=500", (30.0, 120.0)),  # rule bounds them
        (b"max-age=10, stale-while-revalidate=0", (0.0, 120.0)),
        (b"max-age=10", (60.0, 120.0)),  # the origin is silent: the rule's values
        (b"max-age=10, stale-if-error=x", (60.0, 120.0)),
        (b"max-age=10, stale-while-revalidate=30, must-revalidate", (0.0, 0.0)),
        (b"s-maxage=10, stale-while-revalidate=30", (0.0, 0.0)),  # s-maxage implies proxy-revalidate
    ],
)
def test_origin_stale_windows(cache_control: bytes, windows: tuple[float, float]) -> None:
    result = storage(ORIGIN, 200, [(b"cache-control", cache_control)], NOW_2026)
    assert (result.stale_while_revalidate, result.stale_if_error) == windows


def test_stale_windows_from_targeted_field_and_in_ttl_mode() -> None:
    headers = [(b"cache-control", b"max-age=1"), (b"cdn-cache-control", b"max-age=9, stale-if-error=7")]
    result = storage(ORIGIN, 200, headers, NOW_2026, targeted_fields=DEFAULT_TARGETED_FIELDS)
    assert (result.ttl, result.stale_while_revalidate, result.stale_if_error) == (9, 60.0, 7.0)
    ttl_mode = storage(TTL_MODE, 200, [(b"cache-control", b"stale-if-error=7")], NOW_2026)
    assert (ttl_mode.stale_while_revalidate, ttl_mode.stale_if_error) == (60.0, 120.0)


# RFC 9110 section 14: ranges from a stored complete response ------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"bytes=0-4", [(0, 4)]),  # first-last
        (b"bytes=5-", [(5, 9)]),  # first-
        (b"bytes=-3", [(7, 9)]),  # suffix
        (b"bytes=-30", [(0, 9)]),  # a suffix longer than the body is the whole body
        (b"bytes=8-30", [(8, 9)]),  # last-pos beyond the end is the end
        (b"Bytes=0-0", [(0, 0)]),  # range units are case-insensitive
        (b"bytes=0-1, 1-3,8-9", [(0, 3), (8, 9)]),  # overlapping coalesced, sorted
        (b"bytes=8-9,0-1", [(0, 1), (8, 9)]),
        (b"bytes=0-1,2-3", [(0, 3)]),  # adjacent coalesced
        (b"bytes=0-1,20-30", [(0, 1)]),  # the unsatisfiable one is left out
        (b"bytes=20-", UNSATISFIABLE),
        (b"bytes=10-10", UNSATISFIABLE),
        (b"bytes=-0", UNSATISFIABLE),
        (b"bytes=5-1", None),  # last-pos < first-pos: invalid, ignored
        (b"items=0-1", None),
        (b"bytes=", None),
        (b"bytes=-", None),
        (b"bytes=a-b", None),
        (b"bytes=1-2-3", None),
        (b"bytes 0-1", None),
        (b"bytes=" + b",".join(b"%d-%d" % (i, i) for i in range(17)), None),  # too many ranges
    ],
)
def test_parse_range(header: bytes, expected: object) -> None:
    assert parse_range(header, 10) == expected


def test_an_empty_representation_ignores_range() -> None:
    assert parse_range(b"bytes=0-1", 0) is None


def test_partial_response_single_range() -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"10"), (b"etag", b'"v"')]
    status, sent, body = partial_response(200, headers, b"0123456789", [(2, 4)])
    assert (status, body) == (206, b"234")
    assert sent == [
        (b"content-type", b"text/plain"),
        (b"etag", b'"v"'),
        (b"content-range", b"bytes 2-4/10"),
        (b"content-length", b"3"),
    ]


def test_partial_response_multipart_byteranges() -> None:
    status, sent, body = partial_response(
        200, [(b"content-type", b"text/plain")], b"0123456789", [(0, 1), (8, 9)], boundary=b"SEP"
    )
    assert status == 206
    assert dict(sent) == {
        b"content-type": b"multipart/byteranges; boundary=SEP",
        b"content-length": b"%d" % len(body),
    }
    assert body == (
        b"--SEP\r\ncontent-type: text/plain\r\ncontent-range: bytes 0-1/10\r\n\r\n01\r\n"
        b"--SEP\r\ncontent-type: text/plain\r\ncontent-range: bytes 8-9/10\r\n\r\n89\r\n--SEP--\r\n"
    )
    _, generated, multipart = partial_response(200, [], b"ab" * 50, [(0, 0), (9, 9)])
    boundary = dict(generated)[b"content-type"].partition(b"boundary=")[2]
    assert multipart.count(b"--" + boundary) == 3 and boundary not in b"ab" * 50


def test_only_a_complete_response_is_cut_into_ranges() -> None:
    with pytest.raises(ValueError, match="206"):
        partial_response(206, [], b"0123", [(0, 1)])


def test_unsatisfiable_response() -> None:
    assert unsatisfiable_response(10) == (
        416,
        [(b"content-range", b"bytes */10"), (b"content-length", b"0")],
        b"",
    )


OLD = format_http_date(NOW_2026 - 3600)
DATE = format_http_date(NOW_2026)


@pytest.mark.parametrize(
    ("if_range", "etag", "last_modified", "date", "allowed"),
    [
        (b'"v1"', b'"v1"', b"", b"", True),  # strong comparison
        (b'"v1"', b'"v2"', b"", b"", False),
        (b'W/"v1"', b'W/"v1"', b"", b"", False),  # weak tags never match strongly
        (b'"v1"', b'W/"v1"', b"", b"", False),
        (b'W/"v1"', b'"v1"', b"", b"", False),
        (b'"v1"', b"", OLD, DATE, False),
        (OLD, b'"v1"', OLD, DATE, True),  # an exact date, strong: at least 60 s before Date
        (OLD, b"", format_http_date(NOW_2026 - 3599), DATE, False),  # not exactly the same
        (OLD, b"", OLD, format_http_date(NOW_2026 - 3570), False),  # only 30 s before Date: weak
        (OLD, b"", OLD, b"", False),  # no Date: weak
        (b"0", b"", OLD, DATE, False),  # neither an entity-tag nor a date
    ],
)
def test_if_range(if_range: bytes, etag: bytes, last_modified: bytes, date: bytes, allowed: bool) -> None:
    assert if_range_allows(if_range, etag, last_modified, date) is allowed


# RFC 9110 section 12.5 / RFC 9111 section 4.1: Vary normalisation -------------------------------------------


@pytest.mark.parametrize(
    ("name", "one", "other"),
    [
        (b"accept-language", [b"en, fr"], [b"fr,en"]),
        (b"accept-language", [b"en;q=1.0, fr"], [b"fr, EN"]),
        (b"accept-language", [b"en-US ; q=0.5, fr"], [b"fr;q=1,en-us;q=0.500"]),
        (b"Accept-Encoding", [b"gzip", b"br"], [b"br, gzip"]),
        (b"accept-encoding", [b"gzip, gzip"], [b"gzip"]),
        (b"accept", [b"text/html, application/json;q=0.9"], [b"application/json; q=0.90, TEXT/HTML"]),
        (b"x-model", [b" v2 "], [b"v2"]),
    ],
)
def test_equivalent_request_values_normalise_alike(name: bytes, one: list[bytes], other: list[bytes]) -> None:
    assert normalise_vary_value(name, one) == normalise_vary_value(name, other)


@pytest.mark.parametrize(
    ("name", "one", "other"),
    [
        (b"accept-language", [b"en, fr;q=0.5"], [b"fr, en;q=0.5"]),  # q-values that change preference
        (b"accept-language", [b"en"], [b"en;q=0"]),
        (b"accept-encoding", [b"gzip"], [b"br"]),
        (b"accept", [b'text/plain;format="Flowed"'], [b'text/plain;format="flowed"']),  # quoted: case kept
        (b"x-model", [b"V2"], [b"v2"]),  # other fields: case matters
        (b"x-model", [b"a, b"], [b"b, a"]),
    ],
)
def test_different_preferences_stay_distinct(name: bytes, one: list[bytes], other: list[bytes]) -> None:
    assert normalise_vary_value(name, one) != normalise_vary_value(name, other)


def test_normalised_form_is_readable() -> None:
    assert normalise_vary_value(b"accept-language", [b"FR ;q=0.8, en"]) == b"en,fr;q=0.8"


# RFC 9111 section 4.4: invalidation after unsafe methods ----------------------------------------------------


@pytest.mark.parametrize(
    ("method", "unsafe"),
    [("GET", False), ("HEAD", False), ("OPTIONS", False), ("TRACE", False), ("QUERY", False), ("POST", True),
     ("PUT", True), ("PATCH", True), ("DELETE", True), ("M-SEARCH", True), ("get", True)],
)  # fmt: skip
def test_is_unsafe(method: str, unsafe: bool) -> None:
    assert is_unsafe(method) is unsafe


def test_only_non_error_responses_invalidate() -> None:
    assert [invalidates("POST", status) for status in (200, 204, 303, 404, 500)] == [1, 1, 1, 0, 0]
    assert not invalidates("GET", 200)


def test_invalidation_targets_share_the_request_origin() -> None:
    headers = [
        (b"Location", b"/items/2?x=1#frag"),
        (b"content-location", b"http://EXAMPLE.com:80/a"),
        (b"location", b"http://other.example/b"),  # another host: never
        (b"location", b"https://example.com/c"),  # another scheme: another origin
        (b"location", b"http://example.com:8080/d"),  # another port: another origin
        (b"location", b"rel"),
        (b"location", b"http://example.com:99999/e"),  # not a URL: skipped
        (b"etag", b'"/f"'),
        (b"content-location", b"/items/2?x=1"),  # named twice, listed once
    ]
    assert invalidation_targets(b"example.com", "http", headers, "/items/1") == [
        "/items/2?x=1",
        "/a",
        "/items/rel",
    ]
    assert invalidation_targets(b"bad host:x", "http", headers) == []


# RFC 9110 section 6.6.1: Date ------------------------------------------------------------------------------


def test_stored_date_is_kept_as_sent_and_never_added() -> None:
    headers = [(b"Date", b"Sun, 06 Nov 1994 08:49:37 GMT"), (b"Content-Type", b"text/plain")]
    assert stored_headers(headers) == [
        (b"date", b"Sun, 06 Nov 1994 08:49:37 GMT"),
        (b"content-type", b"text/plain"),
    ]
    assert stored_headers([(b"date", b"garbage")]) == [(b"date", b"garbage")]
    assert stored_headers([(b"content-type", b"text/plain")]) == [(b"content-type", b"text/plain")]


@pytest.mark.parametrize(("status", "reason"), [(206, "partial"), (304, "not-modified")])
def test_partial_and_not_modified_responses_are_never_stored(status: int, reason: str) -> None:
    rule = CacheRule("/x", ttl=60, statuses=(200, 206, 304))
    assert storage(rule, status, [(b"cache-control", b"max-age=60")], NOW_2026).reason == reason
    assert storage(rule, 200, [(b"cache-control", b"max-age=60")], NOW_2026).reason is None

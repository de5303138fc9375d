"""`decision.py` as pure functions: what a request gets from its stored entry and the clock (RFC 9111,
RFC 5861, XFetch). No Redis, no app: each case builds an entry and asks."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from redis_cache_middleware.decision import (
    Directives,
    Hit,
    Miss,
    OnlyIfCached,
    Revalidate,
    Stale,
    bypass_reason,
    client_refuses,
    decide,
    keep_seconds,
    serves_stale_on_error,
    xfetch,
)
from redis_cache_middleware.entry import MUST_REVALIDATE, REVALIDATABLE, Entry
from redis_cache_middleware.keys import Headers
from redis_cache_middleware.rules import CacheRule

CREATED = 1_000_000.0
CREDENTIALS = (b"authorization", b"cookie")


def make_entry(ttl: float = 10.0, flags: int = 0, delta: float = 0.0, initial_age: float = 0.0) -> Entry:
    return Entry(
        key="k",
        status=200,
        headers=[(b"content-type", b"text/plain")],
        body=b"body",
        created=CREATED,
        ttl=ttl,
        delta=delta,
        initial_age=initial_age,
        flags=flags,
    )


def at(age: float) -> float:
    """The Unix time at which an entry made by `make_entry()` (initial age 0) is `age` seconds old."""
    return CREATED + age


def never_drawn() -> float:
    raise AssertionError("the XFetch draw must not be taken")


RULE = CacheRule("/r", ttl=60)


# --- decide: nothing stored -------------------------------------------------------------------------


def test_nothing_stored_is_a_uri_miss() -> None:
    assert decide(None, at(0), RULE, {}, False) == Miss(None, "fwd=uri-miss")


@pytest.mark.parametrize("allow_client_refresh", [False, True])
def test_nothing_stored_and_only_if_cached_is_504(allow_client_refresh: bool) -> None:
    directives: Directives = {"only-if-cached": None}
    assert isinstance(decide(None, at(0), RULE, directives, allow_client_refresh), OnlyIfCached)


# --- decide: fresh ----------------------------------------------------------------------------------


@pytest.mark.parametrize("age", [0.0, 5.0, 9.75])
def test_fresh_entry_is_a_hit_with_its_age(age: float) -> None:
    entry = make_entry(ttl=10)
    assert decide(entry, at(age), RULE, {}, False, never_drawn) == Hit(entry, age, False)


def test_age_counts_the_initial_age_and_never_goes_negative() -> None:
    entry = make_entry(ttl=10, initial_age=4)
    assert decide(entry, at(3), RULE, {}, False) == Hit(entry, 7.0, False)
    # A clock behind the writer's: the age is the initial age, not less.
    assert decide(entry, at(-100), RULE, {}, False) == Hit(entry, 4.0, False)
    assert not isinstance(decide(entry, at(6), RULE, {}, False), Hit)  # 4 + 6 = ttl: no longer fresh


def test_fresh_entry_and_only_if_cached_is_a_hit() -> None:
    entry = make_entry(ttl=10)
    assert decide(entry, at(1), RULE, {"only-if-cached": None}, True) == Hit(entry, 1.0, False)


def test_without_early_refresh_the_draw_is_never_taken() -> None:
    entry = make_entry(ttl=10, delta=100.0)
    assert decide(entry, at(9.75), RULE, {}, False, never_drawn) == Hit(entry, 9.75, False)


def test_xfetch_early_refresh_follows_the_draw() -> None:
    rule = CacheRule("/r", ttl=60, early_refresh=1.0)
    entry = make_entry(ttl=10, delta=1.0)
    # At age 9 the refresh happens when -delta * beta * ln(1 - draw) >= 1, i.e. draw >= 1 - 1/e.
    threshold = 1 - math.exp(-1)
    assert decide(entry, at(9), rule, {}, False, lambda: threshold + 0.01) == Hit(entry, 9.0, True)
    assert decide(entry, at(9), rule, {}, False, lambda: threshold - 0.01) == Hit(entry, 9.0, False)


def test_a_larger_xfetch_beta_refreshes_earlier() -> None:
    entry = make_entry(ttl=10, delta=1.0)
    # At age 9 with beta 2 the refresh happens when -2 * ln(1 - draw) >= 1, i.e. draw >= 1 - e^-0.5.
    assert 1 - math.exp(-0.5) < 0.5 < 1 - math.exp(-1)
    assert xfetch(entry, 9.0, 2.0, 0.5)
    assert not xfetch(entry, 9.0, 1.0, 0.5)


def test_xfetch_never_refreshes_an_entry_that_cost_nothing() -> None:
    rule = CacheRule("/r", ttl=60, early_refresh=5.0)
    entry = make_entry(ttl=10, delta=0.0)
    assert decide(entry, at(9.75), rule, {}, False, lambda: 0.999999) == Hit(entry, 9.75, False)


# --- decide: expired --------------------------------------------------------------------------------


@pytest.mark.parametrize("age", [10.0, 12.0, 14.75])
def test_expired_within_stale_while_revalidate_is_stale(age: float) -> None:
    rule = CacheRule("/r", ttl=60, stale_while_revalidate=5)
    entry = make_entry(ttl=10)
    assert decide(entry, at(age), rule, {}, False) == Stale(entry, age)


def test_stale_window_ends_at_ttl_plus_stale_while_revalidate() -> None:
    rule = CacheRule("/r", ttl=60, stale_while_revalidate=5)
    entry = make_entry(ttl=10)
    assert decide(entry, at(15), rule, {}, False) == Miss(entry, "fwd=stale")


def test_expired_without_a_window_is_a_stale_miss_that_keeps_the_entry() -> None:
    entry = make_entry(ttl=10)
    assert decide(entry, at(10), RULE, {}, False) == Miss(entry, "fwd=stale")


def test_must_revalidate_entry_is_never_served_stale() -> None:
    rule = CacheRule("/r", ttl=60, stale_while_revalidate=100)
    entry = make_entry(ttl=10, flags=MUST_REVALIDATE)
    assert decide(entry, at(11), rule, {}, False) == Miss(entry, "fwd=stale")


@pytest.mark.parametrize("flags", [REVALIDATABLE, REVALIDATABLE | MUST_REVALIDATE])
def test_expired_revalidatable_entry_is_revalidated(flags: int) -> None:
    rule = CacheRule("/r", ttl=60, stale_while_revalidate=5, honor_origin=True)
    entry = make_entry(ttl=10, flags=flags)
    assert decide(entry, at(30), rule, {}, False) == Revalidate(entry)


def test_revalidatable_entry_within_its_stale_window_is_served_stale_first() -> None:
    rule = CacheRule("/r", ttl=60, stale_while_revalidate=5, honor_origin=True)
    entry = make_entry(ttl=10, flags=REVALIDATABLE)
    assert decide(entry, at(12), rule, {}, False) == Stale(entry, 12.0)


def test_must_revalidate_and_revalidatable_inside_the_window_is_revalidated() -> None:
    rule = CacheRule("/r", ttl=60, stale_while_revalidate=5, honor_origin=True)
    entry = make_entry(ttl=10, flags=REVALIDATABLE | MUST_REVALIDATE)
    assert decide(entry, at(12), rule, {}, False) == Revalidate(entry)


def test_expired_entry_and_only_if_cached_is_504() -> None:
    entry = make_entry(ttl=10)
    assert isinstance(decide(entry, at(20), RULE, {"only-if-cached": None}, False), OnlyIfCached)


def test_only_if_cached_never_forwards_to_revalidate() -> None:
    """Section 5.2.1.7: with only-if-cached a cache answers from storage or with 504, never by asking
    the origin, and revalidation asks the origin."""
    rule = CacheRule("/r", ttl=60, honor_origin=True)
    entry = make_entry(ttl=10, flags=REVALIDATABLE)
    assert isinstance(decide(entry, at(20), rule, {"only-if-cached": None}, False), OnlyIfCached)


# --- decide: the client's own Cache-Control ---------------------------------------------------------


@pytest.mark.parametrize(
    ("directives", "age"),
    [
        ({"no-cache": None}, 0.0),
        ({"max-age": "5"}, 6.0),
        ({"max-age": "0"}, 0.5),
        ({"min-fresh": "5"}, 6.0),  # 4 s of freshness left, 5 wanted
    ],
)
def test_client_refusal_forwards_the_request_when_allowed(directives: Directives, age: float) -> None:
    entry = make_entry(ttl=10)
    assert decide(entry, at(age), RULE, directives, True) == Miss(entry, "fwd=request")
    assert client_refuses(directives, entry, age)


@pytest.mark.parametrize(
    ("directives", "age"),
    [
        ({"no-cache": None}, 0.0),
        ({"max-age": "5"}, 6.0),
        ({"min-fresh": "5"}, 6.0),
    ],
)
def test_client_directives_are_ignored_unless_allowed(directives: Directives, age: float) -> None:
    entry = make_entry(ttl=10)
    assert decide(entry, at(age), RULE, directives, False) == Hit(entry, age, False)


@pytest.mark.parametrize(
    ("directives", "age"),
    [
        ({}, 9.0),
        ({"max-age": "5"}, 5.0),  # exactly max-age old is still acceptable
        ({"max-age": "5"}, 4.0),
        ({"min-fresh": "5"}, 4.0),  # 6 s left
        ({"min-fresh": "5"}, 5.0),  # exactly 5 s left is enough
        ({"max-age": "abc"}, 9.0),  # malformed delta-seconds are ignored
        ({"max-age": "-1"}, 9.0),
        ({"min-fresh": None}, 9.0),
        ({"max-stale": "100"}, 9.0),
    ],
)
def test_client_directives_that_accept_the_entry(directives: Directives, age: float) -> None:
    entry = make_entry(ttl=10)
    assert not client_refuses(directives, entry, age)
    assert decide(entry, at(age), RULE, directives, True) == Hit(entry, age, False)


def test_client_refusal_also_applies_to_a_stale_entry() -> None:
    rule = CacheRule("/r", ttl=60, stale_while_revalidate=30)
    entry = make_entry(ttl=10)
    assert decide(entry, at(12), rule, {"max-age": "11"}, True) == Miss(entry, "fwd=request")
    assert decide(entry, at(12), rule, {"max-age": "20"}, True) == Stale(entry, 12.0)


@pytest.mark.parametrize("refusal", [{"no-cache": None}, {"max-age": "0"}, {"min-fresh": "60"}])
def test_only_if_cached_with_a_refused_entry_is_504_not_a_forward(refusal: Directives) -> None:
    """Section 5.2.1.7: "respond with either a stored response consistent with the other constraints of
    the request or a 504": a stored response the client refuses must not send the request to the app."""
    entry = make_entry(ttl=10)
    directives: Directives = {**refusal, "only-if-cached": None}
    assert isinstance(decide(entry, at(1), RULE, directives, True), OnlyIfCached)


# --- bypass_reason ----------------------------------------------------------------------------------


def test_credentials_bypass_a_shared_rule() -> None:
    headers: Headers = {b"authorization": [b"Bearer x"]}
    assert bypass_reason(RULE, headers, {}, CREDENTIALS, False) == "credentials"
    assert bypass_reason(RULE, {b"cookie": [b"a=b"]}, {}, CREDENTIALS, True) == "credentials"


def test_credentials_do_not_bypass_a_private_rule() -> None:
    rule = CacheRule("/r", ttl=60, private=True)
    assert bypass_reason(rule, {b"authorization": [b"Bearer x"]}, {}, CREDENTIALS, False) is None


def test_only_the_configured_credential_headers_count() -> None:
    headers: Headers = {b"x-api-key": [b"secret"]}
    assert bypass_reason(RULE, headers, {}, CREDENTIALS, False) is None
    assert bypass_reason(RULE, headers, {}, (b"x-api-key",), False) == "credentials"


def test_request_no_store_bypasses_only_when_client_refresh_is_allowed() -> None:
    assert bypass_reason(RULE, {}, {"no-store": None}, CREDENTIALS, True) == "request-no-store"
    assert bypass_reason(RULE, {}, {"no-store": None}, CREDENTIALS, False) is None
    assert bypass_reason(RULE, {}, {"no-cache": None}, CREDENTIALS, True) is None


def test_nothing_to_bypass() -> None:
    assert bypass_reason(RULE, {b"accept": [b"*/*"]}, {}, CREDENTIALS, True) is None


# --- serves_stale_on_error --------------------------------------------------------------------------


def test_stale_if_error_window() -> None:
    rule = CacheRule("/r", ttl=60, stale_if_error=30)
    entry = make_entry(ttl=10)
    assert serves_stale_on_error(rule, entry, at(5))  # fresh counts too
    assert serves_stale_on_error(rule, entry, at(39.9))
    assert not serves_stale_on_error(rule, entry, at(40))


def test_no_stale_on_error_without_an_entry_a_window_or_with_must_revalidate() -> None:
    rule = CacheRule("/r", ttl=60, stale_if_error=30)
    assert not serves_stale_on_error(rule, None, at(0))
    assert not serves_stale_on_error(RULE, make_entry(ttl=10), at(11))
    assert not serves_stale_on_error(rule, make_entry(ttl=10, flags=MUST_REVALIDATE), at(11))


# --- xfetch -----------------------------------------------------------------------------------------


def test_xfetch_is_always_true_once_expired_and_never_without_delta_before() -> None:
    entry = make_entry(ttl=10, delta=2.0)
    assert xfetch(entry, 10.0, 1.0, 0.0)
    assert not xfetch(make_entry(ttl=10, delta=0.0), 9.99, 1.0, 0.999)
    assert not xfetch(entry, 0.0, 1.0, 0.0)


@given(
    age=st.floats(0, 100),
    delta=st.floats(0, 10),
    beta=st.floats(0.1, 5),
    draw=st.floats(0, 0.999),
    more=st.floats(0, 0.999),
)
def test_xfetch_is_monotonic_in_age_draw_and_beta(
    age: float, delta: float, beta: float, draw: float, more: float
) -> None:
    entry = make_entry(ttl=50, delta=delta)
    if xfetch(entry, age, beta, draw):
        higher_draw = draw + (0.9999 - draw) * more
        assert xfetch(entry, age, beta, higher_draw)
        assert xfetch(entry, age + 1, beta, draw)
        assert xfetch(entry, age, beta * 2, draw)


# --- keep_seconds (retention) -----------------------------------------------------------------------


def test_keep_covers_freshness_plus_the_longer_stale_window() -> None:
    rule = CacheRule("/r", ttl=60, stale_while_revalidate=5, stale_if_error=30)
    assert keep_seconds(make_entry(ttl=10), rule) == 40
    rule = CacheRule("/r", ttl=60, stale_while_revalidate=50, stale_if_error=30)
    assert keep_seconds(make_entry(ttl=10), rule) == 60


def test_keep_without_windows_is_the_entry_ttl() -> None:
    assert keep_seconds(make_entry(ttl=10), RULE) == 10


def test_must_revalidate_entry_is_kept_only_while_fresh() -> None:
    rule = CacheRule("/r", ttl=60, stale_while_revalidate=5, stale_if_error=30)
    assert keep_seconds(make_entry(ttl=10, flags=MUST_REVALIDATE), rule) == 10


def test_revalidatable_entry_is_kept_for_the_rule_ttl_to_be_revalidated() -> None:
    rule = CacheRule("/r", ttl=60, stale_if_error=30, honor_origin=True)
    assert keep_seconds(make_entry(ttl=10, flags=REVALIDATABLE), rule) == 90
    assert keep_seconds(make_entry(ttl=10, flags=REVALIDATABLE | MUST_REVALIDATE), rule) == 60
    # A zero-lifetime (no-cache) response with a validator is still kept to be revalidated.
    assert keep_seconds(make_entry(ttl=0, flags=REVALIDATABLE | MUST_REVALIDATE), rule) == 60


@given(
    ttl=st.floats(0, 1000),
    rule_ttl=st.floats(0.001, 1000),
    swr=st.floats(0, 1000),
    sie=st.floats(0, 1000),
    flags=st.sampled_from([0, MUST_REVALIDATE, REVALIDATABLE, MUST_REVALIDATE | REVALIDATABLE]),
    age=st.floats(0, 3000),
)
def test_every_entry_decide_can_still_use_is_still_kept(
    ttl: float, rule_ttl: float, swr: float, sie: float, flags: int, age: float
) -> None:
    """Retention never drops an entry that decide would serve, serve stale or revalidate, or that could
    answer on error."""
    rule = CacheRule("/r", ttl=rule_ttl, stale_while_revalidate=swr, stale_if_error=sie)
    entry = make_entry(ttl=ttl, flags=flags)
    usable = isinstance(decide(entry, at(age), rule, {}, False, lambda: 0.0), Hit | Stale) or (
        serves_stale_on_error(rule, entry, at(age))
    )
    if usable:
        assert entry.age(at(age)) < keep_seconds(entry, rule)

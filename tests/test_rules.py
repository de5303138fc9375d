"""CacheRule validation and derived fields, RuleMatcher's order, and which methods invalidate."""

from __future__ import annotations

from typing import Any

import pytest

from redis_cache_middleware.batch import BatchRows, Row
from redis_cache_middleware.invalidation import SAFE_METHODS
from redis_cache_middleware.rules import CacheRule, RuleMatcher

ROW = Row("iris", ("sepal_length", "sepal_width"))
BATCH = BatchRows("/instances", "/predictions")


# --- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"path": "items"}, "path must start with '/'"),
        ({"path": ""}, "path must start with '/'"),
        ({"path": b"/items"}, "path must start with '/'"),
        ({"ttl": 0}, "ttl must be a positive number"),
        ({"ttl": -5}, "ttl must be a positive number"),
        ({"ttl": True}, "ttl must be a positive number"),
        ({"ttl": "60"}, "ttl must be a positive number"),
        ({"ttl": float("nan")}, "ttl must be a positive number"),
        ({"methods": "GET"}, "not a string"),
        ({"methods": ()}, "methods must be among"),
        ({"methods": ("GET", "TRACE")}, "methods must be among"),
        ({"methods": ("FETCH",)}, "methods must be among"),
        ({"statuses": (200, 99)}, "statuses must be HTTP status codes"),
        ({"statuses": (600,)}, "statuses must be HTTP status codes"),
        ({"statuses": ("200",)}, "statuses must be HTTP status codes"),
        ({"invalidate_on": "POST"}, "invalidate_on must be among"),
        ({"invalidate_on": ("GET",)}, "invalidate_on must be among"),
        ({"invalidate_on": ("M-SEARCH",)}, "invalidate_on must be among"),
        ({"methods": ("GET", "POST"), "invalidate_on": ("POST",)}, "cannot also be cached"),
        ({"stale_while_revalidate": -1}, "stale_while_revalidate must be a non-negative"),
        ({"stale_if_error": -0.5}, "stale_if_error must be a non-negative"),
        ({"stale_if_error": "10"}, "stale_if_error must be a non-negative"),
        ({"tags": "models"}, "tags must be a sequence"),
        ({"tags": ("",)}, "tags must be a sequence"),
        ({"tags": ("two words",)}, "tags must be a sequence"),
        ({"tags": (1,)}, "tags must be a sequence"),
        ({"early_refresh": 0}, "early_refresh must be a positive"),
        ({"early_refresh": -1.0}, "early_refresh must be a positive"),
        ({"vary": "accept"}, "vary must be a sequence"),
        ({"max_body_bytes": -1}, "max_body_bytes must be a non-negative int"),
        ({"max_body_bytes": 1.5}, "max_body_bytes must be a non-negative int"),
        ({"max_request_bytes": -1}, "max_request_bytes must be a non-negative int"),
        ({"name": "a:b"}, "name must be non-empty without"),
        ({"name": ""}, "name must be non-empty without"),
        ({"name": "with space"}, "name must be non-empty without"),
        ({"name": "tab\there"}, "name must be non-empty without"),
        ({"name": "{x}"}, "name must be non-empty without"),
        ({"name": "@rows"}, "must not start with '@'"),
        ({"path": "/v1/models/iris:predict"}, "name must be non-empty without"),
        ({"batch": "/instances", "methods": ("POST",)}, "batch must be a BatchRows"),
        ({"row": "iris"}, "row must be a Row"),
        ({"batch": BATCH, "row": ROW, "methods": ("POST",)}, "batch= or row=, not both"),
        ({"batch": BATCH}, "batch= needs methods among POST and QUERY"),
        ({"batch": BATCH, "methods": ("POST", "GET")}, "batch= needs methods among POST and QUERY"),
        ({"batch": BATCH, "methods": ("POST",), "honor_origin": True}, "not with honor_origin"),
        ({"row": ROW, "honor_origin": True}, "not with honor_origin"),
        ({"round_floats": -1}, "round_floats must be None or a non-negative int"),
        ({"round_floats": True}, "round_floats must be None or a non-negative int"),
        ({"round_floats": 2.0}, "round_floats must be None or a non-negative int"),
    ],
)
def test_invalid_rules_are_rejected_with_a_clear_message(arguments: dict[str, Any], message: str) -> None:
    arguments = {"path": "/items", "ttl": 60, **arguments}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        CacheRule(**arguments)


@pytest.mark.parametrize(
    "arguments",
    [
        {"batch": BATCH, "methods": ("POST",)},
        {"batch": BATCH, "methods": ("QUERY", "POST")},
        {"row": ROW},
        {"row": ROW, "methods": ("POST",)},
        {"round_floats": 0},
        {"round_floats": 3},
        {"path": "/v1/models/iris:predict", "name": "iris-predict"},
        {"statuses": (200, 404), "honor_origin": True},
        {"ttl": 0.5, "stale_while_revalidate": 0, "stale_if_error": 2.5, "early_refresh": 1.0},
        {"methods": ("post", "get"), "invalidate_on": ("delete",)},
        {"max_body_bytes": 0, "max_request_bytes": 0},
    ],
)
def test_valid_rules_are_accepted(arguments: dict[str, Any]) -> None:
    CacheRule(**{"path": "/items", "ttl": 60, **arguments})


# --- derived fields --------------------------------------------------------------------------------


def test_head_is_cached_with_get() -> None:
    assert CacheRule("/a", 1).method_set == {"GET", "HEAD"}
    assert CacheRule("/a", 1, methods=("get",)).method_set == {"GET", "HEAD"}
    assert CacheRule("/a", 1, methods=("POST",)).method_set == {"POST"}
    assert CacheRule("/a", 1, methods=("HEAD",)).method_set == {"HEAD"}


def test_default_statuses() -> None:
    assert CacheRule("/a", 1).status_set == {200}
    honoring = CacheRule("/a", 1, honor_origin=True).status_set
    assert {200, 203, 301, 404, 410, 500, 599} <= honoring
    assert 206 not in honoring and 304 not in honoring
    assert min(honoring) == 200


def test_given_statuses_are_kept_in_both_modes() -> None:
    assert CacheRule("/a", 1, statuses=[200, 404]).status_set == {200, 404}
    assert CacheRule("/a", 1, statuses=(200, 206), honor_origin=True).status_set == {200, 206}


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/items", "/items"),
        ("/items/{item_id}", "/items/<item_id>"),
        ("/items/{item_id:int}/parts/{part}", "/items/<item_id>/parts/<part>"),
    ],
)
def test_name_is_derived_from_the_path(path: str, name: str) -> None:
    assert CacheRule(path, 1).key_name == name
    assert CacheRule(path, 1).keying.name == name
    assert CacheRule(path, 1, name="given").key_name == "given"


def test_vary_names_are_lowercased_sorted_and_unique() -> None:
    rule = CacheRule("/a", 1, vary=("X-Tenant", "Accept-Language", "x-tenant"))
    assert rule.vary_names == (b"accept-language", b"x-tenant")
    assert rule.keying.vary_names == rule.vary_names


def test_keying_carries_host_and_privacy() -> None:
    rule = CacheRule("/a", 1, key_host=False, private=True)
    assert (rule.keying.key_host, rule.keying.private) == (False, True)


def test_rules_are_frozen() -> None:
    rule = CacheRule("/a", 1)
    with pytest.raises(AttributeError):
        rule.ttl = 5  # type: ignore[misc]


# --- invalidates ------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "M-SEARCH", "PURGE", "LOCK"])
def test_honor_origin_invalidates_on_every_unsafe_method(method: str) -> None:
    """RFC 9111 section 4.4: a non-error response to an unsafe request invalidates the target URI."""
    assert CacheRule("/a", 1, honor_origin=True).invalidates(method)


@pytest.mark.parametrize("method", sorted(SAFE_METHODS))
def test_safe_methods_never_invalidate(method: str) -> None:
    assert not CacheRule("/a", 1, honor_origin=True).invalidates(method)
    assert not CacheRule("/a", 1).invalidates(method)


def test_honor_origin_does_not_invalidate_on_a_method_it_caches() -> None:
    rule = CacheRule("/a", 1, methods=("POST",), honor_origin=True)
    assert not rule.invalidates("POST")
    assert rule.invalidates("PUT")


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "M-SEARCH"])
def test_ttl_mode_invalidates_on_nothing_by_default(method: str) -> None:
    assert not CacheRule("/a", 1).invalidates(method)


def test_invalidate_on_lists_exactly_the_invalidating_methods() -> None:
    for honor_origin in (False, True):
        rule = CacheRule("/a", 1, invalidate_on=("delete", "PUT"), honor_origin=honor_origin)
        assert rule.invalidates("DELETE") and rule.invalidates("PUT")
        assert not rule.invalidates("POST")
        assert not rule.invalidates("M-SEARCH")


# --- RuleMatcher ------------------------------------------------------------------------------------


def test_exact_and_template_paths_match() -> None:
    exact, template = CacheRule("/health", 1), CacheRule("/items/{item_id}", 1)
    matcher = RuleMatcher([exact, template])
    assert matcher.match("GET", "/health") is exact
    assert matcher.match("HEAD", "/health") is exact
    assert matcher.match("GET", "/items/42") is template
    assert matcher.match("GET", "/items/42/more") is None
    assert matcher.match("GET", "/items/") is None
    assert matcher.match("GET", "/health/") is None
    assert matcher.match("POST", "/health") is None


def test_typed_template_parameters_must_convert() -> None:
    rule = CacheRule("/items/{item_id:int}", 1)
    matcher = RuleMatcher([rule])
    assert matcher.match("GET", "/items/42") is rule
    assert matcher.match("GET", "/items/abc") is None


def test_first_given_rule_wins_between_a_template_and_an_exact_path() -> None:
    template = CacheRule("/items/{item_id}", 1)
    exact = CacheRule("/items/special", 2)
    assert RuleMatcher([template, exact]).match("GET", "/items/special") is template
    assert RuleMatcher([exact, template]).match("GET", "/items/special") is exact


def test_first_given_rule_wins_among_templates_and_exact_paths() -> None:
    first = CacheRule("/a/{x}", 1, name="first")
    second = CacheRule("/{y}/b", 1, name="second")
    assert RuleMatcher([first, second]).match("GET", "/a/b") is first
    assert RuleMatcher([second, first]).match("GET", "/a/b") is second
    get = CacheRule("/p", 1, name="get")
    post = CacheRule("/p", 1, methods=("POST",), name="post")
    later_template = CacheRule("/{z}", 1, methods=("POST",), name="template")
    matcher = RuleMatcher([get, post, later_template])
    assert matcher.match("GET", "/p") is get
    assert matcher.match("POST", "/p") is post


def test_a_rule_for_another_method_does_not_hide_a_later_one() -> None:
    posts = CacheRule("/items/{item_id}", 1, methods=("POST",), name="posts")
    gets = CacheRule("/items/{item_id}", 1, name="gets")
    matcher = RuleMatcher([posts, gets])
    assert matcher.match("GET", "/items/1") is gets
    assert matcher.match("POST", "/items/1") is posts


def test_invalidating_methods_match_their_rule() -> None:
    rule = CacheRule("/items/{item_id}", 1, invalidate_on=("DELETE",))
    origin = CacheRule("/things", 1, honor_origin=True)
    matcher = RuleMatcher([rule, origin])
    assert matcher.match("DELETE", "/items/3") is rule
    assert matcher.match("PUT", "/items/3") is None
    assert matcher.match("PATCH", "/things") is origin


def test_duplicate_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="names must be unique"):
        RuleMatcher([CacheRule("/a", 1), CacheRule("/a", 1, methods=("POST",))])
    with pytest.raises(ValueError, match="names must be unique"):
        RuleMatcher([CacheRule("/items/{i}", 1), CacheRule("/items/{i:int}", 1)])
    with pytest.raises(ValueError, match="names must be unique"):
        RuleMatcher([CacheRule("/a", 1, name="same"), CacheRule("/b", 1, name="same")])
    RuleMatcher([CacheRule("/a", 1), CacheRule("/a", 1, methods=("POST",), name="a-post")])


def test_non_rules_are_rejected() -> None:
    with pytest.raises(TypeError, match="CacheRule instances"):
        RuleMatcher([CacheRule("/a", 1), {"path": "/b", "ttl": 1}])  # type: ignore[list-item]


def test_no_rules_match_nothing() -> None:
    assert RuleMatcher([]).match("GET", "/") is None

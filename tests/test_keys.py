"""Canonical keys: equal requests share a key, different ones never do."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redis_cache_middleware.keys import Headers, canonical_query, request_digest
from redis_cache_middleware.rules import CacheRule

RULE = CacheRule("/predict", ttl=60, methods=("GET", "POST"))


def key(
    query: bytes = b"",
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    rule: CacheRule = RULE,
    scheme: str = "http",
    path: str = "/predict",
) -> str:
    raw = headers if headers is not None else [(b"host", b"example.org")]
    collected: Headers = {}
    for name, value in raw:
        collected.setdefault(name, []).append(value)
    scope = {
        "type": "http",
        "method": method,
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": raw,
    }
    return request_digest(rule.keying, scope, collected, body)


JSON = [(b"host", b"example.org"), (b"content-type", b"application/json")]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (b"a=1&b=2", b"b=2&a=1"),
        (b"a=1", b"a=%31"),
        (b"a=x+y", b"a=x%20y"),
        (b"a=1&b=0&a=2", b"b=0&a=1&a=2"),
        (b"%61=1", b"a=1"),
        (b"a", b"a="),  # the app reads both as a == ""
        (b"a=1&&b=2", b"a=1&b=2"),  # as the app's parser, empty parts are skipped
    ],
)
def test_equivalent_queries_share_a_key(a: bytes, b: bytes) -> None:
    assert key(a) == key(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (b"a=1&a=2", b"a=2&a=1"),  # the app reads the last value
        (b"a=1&b=2", b"a=1%26b%3D2"),  # one parameter holding "1&b=2"
        (b"a=1&b=2", b"a=1;b=2"),  # ';' is not a separator
        (b"", b"a="),  # absent vs empty
        (b"a=1", b"a=1&a=1"),  # repeated values are not de-duplicated
        (b"a=1", b"A=1"),
        (b"a=%FF", b"a=%FE"),  # undecodable bytes stay distinct
        (b"ab=", b"a=b"),
    ],
)
def test_different_queries_get_different_keys(a: bytes, b: bytes) -> None:
    assert key(a) != key(b)


def test_json_bodies_are_canonical() -> None:
    compact = key(method="POST", body=b'{"a":1,"b":{"c":[1,2],"d":null}}', headers=JSON)
    spaced = key(method="POST", body=b'{ "b": {"d": null, "c": [1, 2]},\n  "a": 1 }', headers=JSON)
    assert compact == spaced
    assert compact != key(method="POST", body=b'{"a":1,"b":{"c":[2,1],"d":null}}', headers=JSON)
    assert key(method="POST", body=b'{"a":1}', headers=JSON) != key(
        method="POST", body=b'{"a":1.0}', headers=JSON
    )


def test_big_integers_are_not_rounded_together() -> None:
    a = key(method="POST", body=b'{"n": 123456789012345678901234567890}', headers=JSON)
    b = key(method="POST", body=b'{"n": 123456789012345678901234567891}', headers=JSON)
    assert a != b


def test_non_json_bodies_are_hashed_as_bytes() -> None:
    form = [(b"host", b"example.org"), (b"content-type", b"application/x-www-form-urlencoded")]
    assert key(method="POST", body=b"a=1&b=2", headers=form) != key(
        method="POST", body=b"b=2&a=1", headers=form
    )
    assert key(method="POST", body=b'{"a":1}', headers=form) != key(
        method="POST", body=b'{"a":1}', headers=JSON
    )
    invalid = key(method="POST", body=b"{not json", headers=JSON)
    assert invalid != key(method="POST", body=b"{not  json", headers=JSON)


def test_body_presence_and_method_are_keyed() -> None:
    assert key(method="HEAD") == key(method="GET")
    assert key(method="GET") != key(method="POST")
    assert key(method="GET") != key(method="GET", body=b"")
    assert key(method="GET", body=b"x") != key(method="GET", body=b"y")


def test_scheme_and_host_are_keyed_unless_the_rule_opts_out() -> None:
    host_a = [(b"host", b"a.example")]
    host_b = [(b"host", b"b.example")]
    assert key(headers=host_a) != key(headers=host_b)
    assert key(headers=host_a) != key(headers=host_a, scheme="https")
    assert key(headers=host_a) != key(headers=[*host_a, *host_a])
    hostless = CacheRule("/predict", ttl=60, key_host=False)
    assert key(headers=host_a, rule=hostless) == key(headers=host_b, rule=hostless, scheme="https")


def test_vary_headers_are_keyed_unambiguously() -> None:
    rule = CacheRule("/predict", ttl=60, vary=("Accept-Language", "X-Model"))
    base = [(b"host", b"h")]
    one_header = key(headers=[*base, (b"accept-language", b"en,fr")], rule=rule)
    two_headers = key(headers=[*base, (b"accept-language", b"en"), (b"accept-language", b"fr")], rule=rule)
    absent = key(headers=base, rule=rule)
    empty = key(headers=[*base, (b"accept-language", b"")], rule=rule)
    moved = key(headers=[*base, (b"x-model", b"en,fr")], rule=rule)
    assert len({one_header, two_headers, absent, empty, moved}) == 5
    assert key(headers=[*base, (b"x-unkeyed", b"1")], rule=rule) == absent


def test_path_is_keyed_raw() -> None:
    assert key(path="/predict") != key(path="/pred%69ct")


def test_canonical_query_keeps_repeated_values_in_order() -> None:
    assert canonical_query(b"b=1&a=3&b=2&a=1") == [(b"a", b"3"), (b"a", b"1"), (b"b", b"1"), (b"b", b"2")]


# Property: two requests share a key if and only if their canonical forms are equal.

_TEXT = st.text(alphabet="ab =&%+;é/", max_size=4)
_JSON_SCALARS = st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from([0.5, 1.0, -2.25]) | _TEXT
_JSON = st.recursive(
    _JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("abc"), inner, max_size=3),
    max_leaves=6,
)
_REQUEST = st.tuples(
    st.sampled_from(["GET", "POST"]),
    st.lists(st.tuples(st.sampled_from(["a", "b", "a b", "é"]), _TEXT), max_size=4),
    st.none() | st.dictionaries(st.sampled_from("abc"), _JSON, max_size=3),
)


def canonical_form(request: tuple[str, list[tuple[str, str]], Any]) -> tuple[str, list[tuple[str, str]], str]:
    method, pairs, body = request
    return method, sorted(pairs, key=lambda pair: pair[0]), json.dumps(body, sort_keys=True)


@st.composite
def rendering(
    draw: st.DrawFn, request: tuple[str, list[tuple[str, str]], Any]
) -> tuple[str, bytes, bytes | None]:
    """One of the many ways a client may write the same request on the wire."""
    method, pairs, body = request

    def encode(text: str) -> str:
        out = []
        for char in text:
            must = char in "=&%+;#" or not char.isascii()
            if must or draw(st.booleans()):
                out.append("".join(f"%{byte:02X}" for byte in char.encode()))
            elif char == " ":
                out.append("+")
            else:
                out.append(char)
        return "".join(out)

    # Any interleaving that keeps each name's values in order is the same request.
    remaining = {name: [v for n, v in pairs if n == name] for name, _ in pairs}
    ordered: list[tuple[str, str]] = []
    while any(remaining.values()):
        name = draw(st.sampled_from(sorted(n for n, values in remaining.items() if values)))
        ordered.append((name, remaining[name].pop(0)))
    query = "&".join(f"{encode(name)}={encode(value)}" for name, value in ordered).encode()
    raw_body = None
    if body is not None:
        items = list(body.items())
        shuffled = draw(st.permutations(items))
        separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", " :  ")]))
        raw_body = json.dumps(
            dict(shuffled), separators=separators, ensure_ascii=draw(st.booleans())
        ).encode()
    return method, query, raw_body


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(), first=_REQUEST, second=_REQUEST, relation=st.sampled_from(["same", "permuted", "other"])
)
def test_keys_equal_iff_canonical_forms_equal(
    data: st.DataObject, first: Any, second: Any, relation: str
) -> None:
    if relation == "same":
        second = first
    elif relation == "permuted":  # same pairs in another order: equal only if no name's values were reordered
        second = (first[0], data.draw(st.permutations(first[1])), first[2])
    method_a, query_a, body_a = data.draw(rendering(first))
    method_b, query_b, body_b = data.draw(rendering(second))
    key_a = key(query_a, method=method_a, body=body_a, headers=JSON)
    key_b = key(query_b, method=method_b, body=body_b, headers=JSON)
    assert (key_a == key_b) == (canonical_form(first) == canonical_form(second))

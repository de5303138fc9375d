"""Typed keys: two values share a canonical form only if the endpoint receives equal arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import httpx
import orjson
import pytest
from fastapi import APIRouter, Body, FastAPI, Query
from hypothesis import event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, field_validator
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import PlainTextResponse

from redis_cache_middleware.typed import RouteCanon, route_types


class Inner(BaseModel):
    w: float


class Payload(BaseModel):
    a: float
    k: int = 0
    flag: bool = False
    vec: list[float] = []
    opt: float | None = None
    inner: Inner = Inner(w=0)
    positive: float = Field(1.0, gt=0)
    name: str = ""


class Validated(BaseModel):
    a: float

    @field_validator("a", mode="before")
    @classmethod
    def keep_text(cls, value: Any) -> Any:
        return 1.0 if value == "5.10" else value


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/q")
    def query(
        x: float,
        n: int = 0,
        b: bool = False,
        o: float | None = None,
        s: str = "",
        many: list[float] = Query([]),  # noqa: B008
        either: int | str = 0,
        aliased: float = Query(0.0, alias="al"),
    ) -> dict[str, str]:
        return {"args": repr((x, n, b, o, s, many, either, aliased))}

    @app.post("/body")
    def body(payload: Payload) -> dict[str, str]:
        return {"args": repr((payload.model_dump(), sorted(payload.model_fields_set)))}

    @app.post("/validated")
    def validated(payload: Validated) -> dict[str, str]:
        return {"args": repr(payload.model_dump())}

    @app.post("/embedded")
    def embedded(payload: Inner, scale: float = Body(...)) -> dict[str, str]:
        return {"args": repr((payload.w, scale))}

    router = APIRouter(prefix="/r")

    @router.get("/q/{item}")
    def routed(item: str, x: float) -> dict[str, str]:
        return {"args": repr((item, x))}

    app.include_router(router)
    sub = FastAPI()

    @sub.get("/q")
    def mounted(x: float) -> dict[str, str]:
        return {"args": repr(x)}

    app.mount("/v1", sub)
    return app


APP = _app()
TYPES = route_types(APP)


def _canon(method: str, path: str) -> RouteCanon:
    found = TYPES.for_request(method, path)
    assert found is not None
    return found


def _query(canon: RouteCanon, **values: str) -> dict[str, str]:
    pairs = [(name.encode(), value.encode()) for name, value in values.items()]
    return {name.decode(): value.decode() for name, value in canon.canonical_query(pairs)}


async def _received(method: str, path: str, **kwargs: Any) -> tuple[int, bytes]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=APP), base_url="http://t") as client:
        reply = await client.request(method, path, **kwargs)
        return reply.status_code, reply.content


def received(method: str, path: str, **kwargs: Any) -> tuple[int, bytes]:
    return anyio.run(lambda: _received(method, path, **kwargs))


# --- unit tables --------------------------------------------------------------------------------------------

Q = _canon("GET", "/q")


@pytest.mark.parametrize(
    ("name", "raws", "canonical"),
    [
        ("x", ["5.1", "5.10", "5.100", " 5.1", "+5.1"], "5.1"),
        ("x", ["5", "5.0", "05", "5.", "+5"], "5.0"),
        ("x", ["1e2", "100", "1_00"], "100.0"),
        ("n", ["5", "05", "+5", "5.0"], "5"),
        ("b", ["true", "True", "TRUE", "1", "on", "yes", "t", "y"], "true"),
        ("b", ["false", "0", "off", "no", "f", "n"], "false"),
        ("o", ["2.50", "2.5"], "2.5"),
        ("al", ["3", "3.0"], "3.0"),
    ],
)
def test_query_values_the_app_parses_alike_share_one_form(name: str, raws: list[str], canonical: str) -> None:
    for raw in raws:
        assert _query(Q, **{name: raw})[name] == canonical, raw


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("x", "nan"),
        ("x", "inf"),
        ("x", "abc"),
        ("x", ""),
        ("n", "5.5"),
        ("n", "1e2"),
        ("n", "99999999999999999999999"),  # parses, but kept as sent: beyond 64 bits
        ("b", "2"),
        ("b", "maybe"),
        ("s", "5.10"),  # strings are what they are
        ("many", "5.10"),  # lists of query values are not canonicalised
        ("either", "05"),  # unions are not
        ("aliased", "5.10"),  # the app reads `al`, not the parameter's name
        ("unknown", "5.10"),
    ],
)
def test_values_not_provably_equal_stay_as_sent(name: str, raw: str) -> None:
    assert _query(Q, **{name: raw})[name] == raw


def test_query_keeps_pair_order_and_undecodable_bytes() -> None:
    pairs = [(b"x", b"5.10"), (b"s", b"\xff"), (b"x", b"\xff")]
    assert Q.canonical_query(pairs) == [(b"x", b"5.1"), (b"s", b"\xff"), (b"x", b"\xff")]
    assert Q.query_value(b"x", b"5.10") == 5.1
    assert Q.query_value(b"x", b"oops") == "oops"
    assert Q.query_value(b"s", b"5.10") == "5.10"


def test_routes_found_through_routers_mounts_and_methods() -> None:
    assert _query(_canon("GET", "/r/q/abc"), x="5.10") == {"x": "5.1"}
    assert _query(_canon("GET", "/v1/q"), x="5.10") == {"x": "5.1"}
    assert _query(_canon("HEAD", "/q"), x="5.10") == {"x": "5.1"}
    assert TYPES.for_request("POST", "/q") is None
    stack = ExceptionMiddleware(GZipMiddleware(APP.router))  # what a middleware's `app` really is
    behind = route_types(stack).for_request("GET", "/q")
    assert behind is not None and _query(behind, x="5.10") == {"x": "5.1"}
    assert route_types(object()).for_request("GET", "/q") is None
    assert TYPES.for_request("GET", "/nowhere") is None


def test_json_body_fields_canonicalised_by_declared_type() -> None:
    canon = _canon("POST", "/body").canonical_json
    assert canon({"a": 5, "k": 5.0, "flag": 1, "vec": [1, "2.5"], "inner": {"w": 2}, "extra": 5}) == {
        "a": 5.0,
        "k": 5,
        "flag": True,
        "vec": [1.0, 2.5],
        "inner": {"w": 2.0},
        "extra": 5,
    }
    assert canon({"a": "5.10", "opt": None}) == {"a": 5.1, "opt": None}
    assert canon({"a": "nan", "k": 5.5, "positive": -1, "name": 5}) == {
        "a": "nan",
        "k": 5.5,
        "positive": -1,
        "name": 5,
    }
    assert canon({"a": 2**70}) == {"a": 2**70} or canon({"a": 2**70})["a"] == float(2**70)
    assert canon([1, 2]) == [1, 2]
    assert _canon("POST", "/validated").canonical_json({"a": "5.10"}) == {"a": "5.10"}
    assert _canon("POST", "/embedded").canonical_json({"payload": {"w": 1}, "scale": 2}) == {
        "payload": {"w": 1.0},
        "scale": 2.0,
    }


def test_round_floats_is_an_opt_in_approximation() -> None:
    rounded = _canon("GET", "/q").with_rounding(2)
    assert _query(rounded, x="5.1234") == _query(rounded, x="5.1249") == {"x": "5.12"}
    assert _query(Q, x="5.1234") != _query(Q, x="5.1249")
    body = _canon("POST", "/body").with_rounding(1).canonical_json
    assert body({"a": 0.04, "vec": [1.26]}) == {"a": 0.0, "vec": [1.3]}
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="round_floats"):
            Q.with_rounding(bad)  # type: ignore[arg-type]


def test_remembered_query_values_give_the_same_forms_and_stay_bounded() -> None:
    """Canonical forms are remembered per value (validation is the costly part of a key); the memory is
    per canonicaliser (a rounding variant has its own) and bounded."""
    from redis_cache_middleware import typed

    canon = _canon("GET", "/q").with_rounding(None)
    assert _query(canon, x="5.10", n="07") == {"x": "5.1", "n": "7"}
    assert _query(canon, x="5.10", n="07") == {"x": "5.1", "n": "7"}  # from memory, the same
    assert _query(canon.with_rounding(0), x="5.10") == {"x": "5.0"}
    assert _query(canon, x="5.10") == {"x": "5.1"}
    for i in range(typed._QUERY_MEMO_SIZE + 10):
        _query(canon, x=f"{i}.50")
    assert _query(canon, x="7.50") == {"x": "7.5"}
    assert max(len(seen) for seen in canon._seen.values()) <= typed._QUERY_MEMO_SIZE


# --- the property: a shared canonical form means the endpoint received equal arguments -------------------

_NUMBER_TEXT = st.one_of(
    st.floats(-1e6, 1e6).map(repr),
    st.floats(-1e3, 1e3).map(lambda v: f"{v:.3f}"),
    st.floats(-1e3, 1e3).map(lambda v: f"{v:e}"),
    st.integers(-1000, 1000).map(str),
    st.integers(0, 99).map(lambda v: f"0{v}"),
    st.integers(0, 99).map(lambda v: f"+{v}.0"),
    st.integers(0, 99).map(lambda v: f" {v} "),
    st.sampled_from(["true", "True", "1", "0", "on", "no", "yes", "nan", "inf", "-0", "0.0", "", "x", "1_0"]),
)
_SPELLINGS: list[Callable[[Any], str]] = [
    repr,
    str,
    lambda v: f"{v:.6f}",
    lambda v: f"{v:e}",
    lambda v: f"{v:.0f}",
    lambda v: f" {v!r}",
    lambda v: f"+{v!r}",
    lambda v: f"{v!r}0",
    lambda v: f"0{v!r}",
]


@st.composite
def _spelling_pair(draw: st.DrawFn) -> tuple[str, str]:
    """Two spellings of one number (often equal as parsed, sometimes not), or two unrelated texts."""
    if draw(st.integers(0, 3)) == 0:
        return draw(_NUMBER_TEXT), draw(_NUMBER_TEXT)
    value = draw(st.floats(-1e4, 1e4) | st.integers(-1000, 1000) | st.sampled_from([0.1, 5.1, 2.5, -0.0]))
    first, second = draw(st.sampled_from(_SPELLINGS)), draw(st.sampled_from(_SPELLINGS))
    return first(value), second(value)


_QUERY_NAMES = st.sampled_from(["x", "n", "b", "o", "s", "al"])


@given(pairs=st.dictionaries(_QUERY_NAMES, _spelling_pair(), min_size=1, max_size=3))
@settings(max_examples=200, deadline=None)
def test_equal_canonical_query_means_equal_arguments(pairs: dict[str, tuple[str, str]]) -> None:
    first = {"x": "1", **{name: pair[0] for name, pair in pairs.items()}}
    second = {"x": "1", **{name: pair[1] for name, pair in pairs.items()}}
    shared = _query(Q, **first) == _query(Q, **second)
    event(f"shared={shared} identical={first == second}")
    if shared:
        assert received("GET", "/q", params=first) == received("GET", "/q", params=second)


@st.composite
def _json_pair(draw: st.DrawFn) -> tuple[Any, Any]:
    """Two JSON values for one field: a number as int/float/text, booleans, null, or unrelated values."""
    choice = draw(st.integers(0, 5))
    if choice == 0:
        integer = draw(st.integers(-(2**40), 2**40))
        return draw(st.sampled_from([integer, float(integer), str(integer)])), draw(
            st.sampled_from([integer, float(integer), str(integer), f"{integer}.0"])
        )
    if choice in (1, 4, 5):
        return draw(_spelling_pair())
    if choice == 2:
        value = draw(st.booleans())
        return value, draw(st.sampled_from([value, int(value), str(value).lower(), "yes" if value else "no"]))
    anything = st.integers(-(2**40), 2**40) | st.floats(allow_nan=False, allow_infinity=False) | st.none()
    return draw(anything | _NUMBER_TEXT), draw(anything | _NUMBER_TEXT)


@given(
    fields=st.dictionaries(
        st.sampled_from(["k", "flag", "opt", "positive", "name"]), _json_pair(), max_size=2
    ),
    a=_json_pair(),
    vec=st.lists(_json_pair(), max_size=1),
    w=st.none() | _json_pair(),
)
@settings(max_examples=200, deadline=None)
def test_equal_canonical_body_means_equal_arguments(
    fields: dict[str, tuple[Any, Any]],
    a: tuple[Any, Any],
    vec: list[tuple[Any, Any]],
    w: tuple[Any, Any] | None,
) -> None:
    bodies: list[dict[str, Any]] = []
    for side in (0, 1):
        body = {"a": a[side], **{name: pair[side] for name, pair in fields.items()}}
        body["vec"] = [pair[side] for pair in vec]
        if w is not None:
            body["inner"] = {"w": w[side]}
        bodies.append(body)
    canon = _canon("POST", "/body").canonical_json
    sorted_keys = orjson.OPT_SORT_KEYS
    shared = orjson.dumps(canon(bodies[0]), option=sorted_keys) == orjson.dumps(
        canon(bodies[1]), option=sorted_keys
    )
    event(f"shared={shared} identical={bodies[0] == bodies[1]}")
    if shared:
        assert received("POST", "/body", json=bodies[0]) == received("POST", "/body", json=bodies[1])


def test_routes_that_would_answer_first_without_types_shadow_later_typed_ones() -> None:
    async def plain(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("never called")

    app = FastAPI()
    app.router.add_route("/q", lambda request: PlainTextResponse("untyped"), methods=["GET"])
    app.mount("/opaque", plain)

    @app.get("/q")
    def shadowed(x: float) -> float:
        return x

    @app.get("/opaque/q")
    def behind_mount(x: float) -> float:
        return x

    types = route_types(app)
    assert types.for_request("GET", "/q") is None
    assert types.for_request("GET", "/opaque/q") is None

"""Batch rows, pure parts: pointers, splitting requests, splitting and assembling responses, row spaces."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from redis_cache_middleware.batch import (
    BatchRequest,
    BatchRows,
    Row,
    SingleRow,
    assemble,
    same_envelope,
    split_request,
    split_response,
    split_row_request,
    split_row_response,
)
from redis_cache_middleware.jsonspans import parse_pointer, value_span
from redis_cache_middleware.typed import route_types

IRIS = BatchRows("/instances", "/predictions")
OIP = BatchRows.open_inference()


def _fastapi_json(content: Any) -> bytes:
    return bytes(JSONResponse(content).body)


SERIALISERS: dict[str, Callable[[Any], bytes]] = {
    "fastapi": _fastapi_json,
    "orjson": orjson.dumps,
    "json.dumps": lambda content: json.dumps(content).encode(),
    "json.dumps-indent": lambda content: json.dumps(content, indent=2).encode(),
    "orjson-indent": lambda content: orjson.dumps(content, option=orjson.OPT_INDENT_2),
}


# --- pointers --------------------------------------------------------------------------------------------


def test_pointer_tokens_unescape_tilde_and_slash() -> None:
    assert parse_pointer("") == ()
    assert parse_pointer("/a~1b/c~0d/~01") == ("a/b", "c~d", "~1")
    for bad in ("instances", "/a~2", "/a~"):
        with pytest.raises(ValueError, match="JSON Pointer"):
            parse_pointer(bad)


def test_value_span_follows_escaped_keys_indices_and_the_last_duplicate() -> None:
    body = b'{"a/b": {"c~d": [10, {"x": "]\\"}"}, [1, 2]]}, "k": 1, "k": [7]}'
    assert value_span(body, parse_pointer("/a~1b/c~0d/2")) is not None
    start, end = value_span(body, parse_pointer("/a~1b/c~0d/2")) or (0, 0)
    assert body[start:end] == b"[1, 2]"
    start, end = value_span(body, parse_pointer("/a~1b/c~0d/1/x")) or (0, 0)
    assert json.loads(body[start:end]) == ']"}'
    start, end = value_span(body, ("k",)) or (0, 0)
    assert body[start:end] == b"[7]"
    assert value_span(body, ("missing",)) is None
    assert value_span(body, ("a/b", "c~d", "01")) is None  # no leading zeros (RFC 6901 section 4)
    assert value_span(body, ("a/b", "c~d", "3")) is None
    assert value_span(body, ("k", "0", "deeper")) is None


def test_batch_rows_validate_on_construction() -> None:
    for kwargs in (
        {"request": "instances"},
        {"response": "/a~9"},
        {"max_rows": 0},
        {"max_rows": True},
        {"space": ""},
        {"protocol": "grpc"},
    ):
        with pytest.raises(ValueError, match=r"BatchRows|JSON Pointer"):
            BatchRows(**kwargs)
    for row_kwargs in (
        {"space": "", "features": ("a",)},
        {"space": "s", "features": "ab"},
        {"space": "s", "features": ("a", "a")},
    ):
        with pytest.raises(ValueError, match="Row"):
            Row(**row_kwargs)


# --- requests --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "body", "reason"),
    [
        (IRIS, b"{not json", "batch-not-json"),
        (IRIS, b'{"other": [[1]]}', "batch-no-rows"),
        (IRIS, b'[{"instances": [[1]]}]', "batch-no-rows"),
        (IRIS, b'{"instances": {"0": [1]}}', "batch-not-list"),
        (IRIS, b'{"instances": "1,2"}', "batch-not-list"),
        (IRIS, b'{"instances": []}', "batch-empty"),
        (
            BatchRows("/instances", "/predictions", max_rows=2),
            b'{"instances": [1, 2, 3]}',
            "batch-too-many-rows",
        ),
        (IRIS, b'{"instances": [[123456789012345678901, 1]]}', "batch-long-number"),
        (OIP, b'{"instances": []}', "batch-no-rows"),
        (OIP, b'{"inputs": []}', "batch-not-list"),
        (OIP, b'{"inputs": [{"name": "x", "shape": [2, 2], "data": [1, 2, 3]}]}', "batch-bad-shape"),
        (
            OIP,
            b'{"inputs": [{"name": "x", "shape": [2], "data": [1, 2]}, {"shape": [3], "data": [1, 2, 3]}]}',
            "batch-bad-shape",
        ),
        (OIP, b'{"inputs": [{"name": "x", "shape": ["2"], "data": [1, 2]}]}', "batch-bad-shape"),
        (OIP, b'{"inputs": [{"name": "x", "shape": [0, 4], "data": []}]}', "batch-empty"),
    ],
)
def test_bad_batch_requests_bypass_with_their_reason(rows: BatchRows, body: bytes, reason: str) -> None:
    assert split_request(rows, body) == reason


def _split(rows: BatchRows, body: bytes, canon: Any = None) -> BatchRequest:
    found = split_request(rows, body, canon)
    assert isinstance(found, BatchRequest), found
    return found


def test_body_for_keeps_everything_but_the_chosen_rows() -> None:
    body = b'{"model": "iris", "instances": [[5.10, 3.5], [6, 2.9], {"a": "]"}], "params": {"t": [1]}}'
    batch = _split(IRIS, body)
    assert json.loads(batch.body_for([0, 1, 2])) == json.loads(body)
    assert json.loads(batch.body_for([2, 0])) == {
        "model": "iris",
        "instances": [{"a": "]"}, [5.10, 3.5]],
        "params": {"t": [1]},
    }
    assert batch.body_for([0]) == b'{"model":"iris","instances":[[5.1,3.5]],"params":{"t":[1]}}'  # order kept
    ordered = _split(IRIS, b'{"instances": [{"b": 1, "a": 2}], "z": 1, "y": 2}')
    assert ordered.body_for([0]) == b'{"instances":[{"b":1,"a":2}],"z":1,"y":2}'
    assert batch.rest == orjson.dumps({"model": "iris", "params": {"t": [1]}}, option=orjson.OPT_SORT_KEYS)
    with pytest.raises(ValueError, match="indices"):
        batch.body_for([3])
    with pytest.raises(ValueError, match="indices"):
        batch.body_for([])


def test_top_level_list_and_nested_pointer() -> None:
    batch = _split(BatchRows("", ""), b"[[1, 2], [3, 4]]")
    assert batch.rows == (b"[1,2]", b"[3,4]")
    assert batch.rest == b"{}"
    assert json.loads(batch.body_for([1])) == [[3, 4]]
    nested = _split(BatchRows("/data/rows", "/out"), b'{"data": {"rows": [1, 2], "m": 1}}')
    assert nested.rest == b'{"data":{"m":1}}'
    assert json.loads(nested.body_for([1, 1])) == {"data": {"rows": [2, 2], "m": 1}}


def test_rows_are_canonical_duplicates_equal_and_order_kept() -> None:
    body = b'{"instances": [{"b": 2, "a": 1}, {"a": 1, "b": 2}, {"a": 1, "b": 3}], "z": 0}'
    batch = _split(IRIS, body)
    assert batch.rows[0] == batch.rows[1] == b'{"a":1,"b":2}'
    assert batch.rows[2] == b'{"a":1,"b":3}'
    other = _split(IRIS, b'{"z": 0, "instances": [{"a": 1, "b": 3}]}')
    assert other.rest == batch.rest and other.rows[0] == batch.rows[2]


class IrisBatch(BaseModel):
    instances: list[list[float]]


def _iris_app() -> FastAPI:
    app = FastAPI()

    @app.post("/predict/batch")
    def predict_batch(batch: IrisBatch) -> dict[str, Any]:
        return {"predictions": [int(row[0] > 5.5) for row in batch.instances], "received": batch.instances}

    @app.get("/predict")
    def predict_get(sepal_length: float, sepal_width: float) -> dict[str, Any]:
        return {"prediction": int(sepal_length > 5.5), "model": "x"}

    return app


def test_typed_rows_share_across_number_formats_and_the_app_parses_body_for_alike() -> None:
    app = _iris_app()
    canon = route_types(app).for_request("POST", "/predict/batch")
    assert canon is not None
    body = b'{"instances": [[5, 3.50], [5.0, 3.5], [6.1, 2]]}'
    batch = _split(IRIS, body, canon.canonical_json)
    assert batch.rows[0] == batch.rows[1] == b"[5.0,3.5]"
    assert _split(IRIS, body).rows[0] != _split(IRIS, body).rows[1]  # untyped: 5 and 5.0 stay distinct

    async def received(content: bytes) -> Any:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            reply = await client.post(
                "/predict/batch", content=content, headers={"content-type": "application/json"}
            )
            return reply.json()["received"]

    import anyio

    assert anyio.run(received, batch.body_for([0, 1, 2])) == anyio.run(received, body)
    assert anyio.run(received, batch.body_for([2, 0])) == [[6.1, 2.0], [5.0, 3.5]]


# --- responses -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SERIALISERS))
@given(
    answered=st.lists(st.integers(0, 2) | st.floats(-1e6, 1e6) | st.text(max_size=5), min_size=1, max_size=6),
    wanted=st.lists(
        st.integers(0, 2) | st.text(max_size=5) | st.lists(st.integers(-(2**53), 2**53), max_size=2),
        min_size=1,
        max_size=6,
    ),
)
@settings(max_examples=60, deadline=None)
def test_assemble_is_byte_for_byte_what_the_app_answers(
    name: str, answered: list[Any], wanted: list[Any]
) -> None:
    serialise = SERIALISERS[name]

    def document(rows: list[Any]) -> dict[str, Any]:
        return {"predictions": rows, "model_version": "x", "meta": {"n": [1, 2], "s": "a,b: [c]"}}

    stored = split_response(IRIS, serialise(document(answered)), len(answered))
    computed = split_response(IRIS, serialise(document(wanted)), len(wanted))
    assert stored is not None and computed is not None
    assembled = assemble(stored.envelope, computed.values)
    assert json.loads(assembled) == document(wanted)
    assert assembled == serialise(document(wanted))


def test_iris_shapes_byte_for_byte_including_one_row_envelopes() -> None:
    for serialise in SERIALISERS.values():
        for answered, wanted in (([0, 2, 1], [1]), ([1], [0, 2, 1]), ([2], [2]), ([0, 1], [1, 0, 2])):
            stored = split_response(
                IRIS, serialise({"predictions": answered, "model_version": "x"}), len(answered)
            )
            computed = split_response(
                IRIS, serialise({"predictions": wanted, "model_version": "x"}), len(wanted)
            )
            assert stored is not None and computed is not None
            assert assemble(stored.envelope, computed.values) == serialise(
                {"predictions": wanted, "model_version": "x"}
            )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"<html>", 1),
        (b'{"prediction": [1]}', 1),
        (b'{"predictions": 1}', 1),
        (b'{"predictions": [1, 2]}', 3),
        (b'{"predictions": [1, 2]}', 1),
        (b'{"predictions": []}', 0),
    ],
)
def test_unexpected_responses_are_not_split(body: bytes, expected: int) -> None:
    assert split_response(IRIS, body, expected) is None


def test_malformed_envelopes_raise_value_error() -> None:
    stored = split_response(IRIS, b'{"predictions": [1]}', 1)
    assert stored is not None
    for envelope in (b"", b"X", stored.envelope[:-1], stored.envelope + b"x", b"O{"):
        with pytest.raises(ValueError):
            assemble(envelope, [b"1"])
    with pytest.raises(ValueError):
        assemble(stored.envelope, [])


# --- open inference protocol v2 ----------------------------------------------------------------------------


def test_open_inference_request_split_and_sub_batches() -> None:
    document = {
        "id": "r1",
        "inputs": [
            {"name": "x", "shape": [3, 2], "datatype": "FP32", "data": [5, 3.5, 5.0, 3.5, 6.1, 2.0]},
            {"name": "tag", "shape": [3], "datatype": "INT64", "data": [1, 1, 2]},
        ],
        "outputs": [{"name": "y"}],
    }
    batch = _split(OIP, orjson.dumps(document))
    assert batch.rows[0] == batch.rows[1] == b"[[5.0,3.5],[1]]"  # FP32: 5 and 5.0 are the same tensor value
    assert batch.rows[2] == b"[[6.1,2.0],[2]]"
    assert json.loads(batch.body_for([0, 1, 2])) == document
    sub = json.loads(batch.body_for([2, 0]))
    assert sub["inputs"][0] == {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [6.1, 2.0, 5, 3.5]}
    assert sub["inputs"][1]["shape"] == [2] and sub["inputs"][1]["data"] == [2, 1]
    assert sub["id"] == "r1" and sub["outputs"] == [{"name": "y"}]
    nested = {
        **document,
        "inputs": [
            {"name": "x", "shape": [3, 2], "datatype": "FP32", "data": [[5, 3.5], [5.0, 3.5], [6.1, 2.0]]}
        ],
    }
    nested_batch = _split(OIP, orjson.dumps(nested))
    assert nested_batch.rows[0] == b"[[5.0,3.5]]"
    assert json.loads(nested_batch.body_for([1]))["inputs"][0]["data"] == [[5.0, 3.5]]


def _oip_response(rows: list[tuple[float, list[int]]]) -> dict[str, Any]:
    return {
        "model_name": "iris",
        "id": "r1",
        "outputs": [
            {"name": "p", "shape": [len(rows)], "datatype": "FP32", "data": [p for p, _ in rows]},
            {
                "name": "c",
                "shape": [len(rows), 2],
                "datatype": "INT64",
                "data": [x for _, pair in rows for x in pair],
            },
        ],
    }


def test_open_inference_response_round_trip() -> None:
    answered = [(0.5, [1, 2]), (0.25, [3, 4]), (1.0, [5, 6])]
    stored = split_response(OIP, orjson.dumps(_oip_response(answered)), 3)
    assert stored is not None
    assert assemble(stored.envelope, stored.values) == orjson.dumps(_oip_response(answered))
    assert assemble(stored.envelope, [stored.values[2], stored.values[0]]) == orjson.dumps(
        _oip_response([answered[2], answered[0]])
    )
    two = split_response(OIP, orjson.dumps(_oip_response(answered[:2])), 2)
    assert two is not None and same_envelope(stored.envelope, two.envelope)
    assert split_response(OIP, orjson.dumps(_oip_response(answered)), 2) is None
    broken = _oip_response(answered)
    broken["outputs"][1]["data"] = [1, 2, 3]
    assert split_response(OIP, orjson.dumps(broken), 3) is None
    assert split_response(OIP, b'{"outputs": []}', 1) is None


# --- one row space for single and batch routes -------------------------------------------------------

IRIS_ROW = Row("iris", ("sepal_length", "sepal_width"), response="/prediction")


def test_single_get_and_batch_rows_share_bytes_only_when_typed() -> None:
    types = route_types(_iris_app())
    get_canon = types.for_request("GET", "/predict")
    batch_canon = types.for_request("POST", "/predict/batch")
    assert get_canon is not None and batch_canon is not None
    batch = _split(IRIS, b'{"instances": [[5.1, 3.5]]}', batch_canon.canonical_json)
    query = [(b"sepal_width", b"3.50"), (b"sepal_length", b"5.10"), (b"v", b"1")]
    single = split_row_request(IRIS_ROW, query, None, get_canon)
    assert isinstance(single, SingleRow)
    assert single.row == batch.rows[0] and single.rest == batch.rest == b"{}"
    assert single.query == ((b"v", b"1"),)
    untyped = split_row_request(IRIS_ROW, query, None)
    assert isinstance(untyped, SingleRow) and untyped.row != batch.rows[0]  # strings are not floats
    last_wins = split_row_request(IRIS_ROW, [(b"sepal_length", b"1"), *query], None, get_canon)
    assert isinstance(last_wins, SingleRow) and last_wins.row == single.row


def test_single_post_row_and_bypass_reasons() -> None:
    single = split_row_request(IRIS_ROW, [], b'{"sepal_width": 3.5, "sepal_length": 5.1, "unit": "cm"}')
    assert isinstance(single, SingleRow)
    assert single.row == b"[5.1,3.5]" and single.rest == b'{"unit":"cm"}'
    assert split_row_request(IRIS_ROW, [], b"[1") == "row-not-json"
    assert split_row_request(IRIS_ROW, [], b"[5.1, 3.5]") == "row-not-object"
    assert split_row_request(IRIS_ROW, [], b'{"sepal_length": 5.1}') == "row-missing-feature"
    assert split_row_request(IRIS_ROW, [(b"sepal_length", b"5.1")], None) == "row-missing-feature"


def test_single_route_answered_from_a_batch_computed_row() -> None:
    for serialise in SERIALISERS.values():
        single_answer = serialise({"prediction": 0, "model": "x"})
        stored = split_row_response(IRIS_ROW, single_answer)
        assert stored is not None and stored.values == (b"0",)
        batch_answer = split_response(IRIS, serialise({"predictions": [1, 0], "model_version": "x"}), 2)
        assert batch_answer is not None
        assert assemble(stored.envelope, [batch_answer.values[0]]) == serialise(
            {"prediction": 1, "model": "x"}
        )
        with pytest.raises(ValueError):
            assemble(stored.envelope, batch_answer.values)
    assert split_row_response(IRIS_ROW, b'{"predictions": 1}') is None
    assert split_row_response(IRIS_ROW, b"oops") is None


def test_long_digit_strings_are_rows_but_long_numbers_bypass() -> None:
    batch = _split(IRIS, b'{"id": "123456789012345678901234", "instances": [["98765432109876543210"]]}')
    assert batch.rows == (b'["98765432109876543210"]',)
    assert split_request(IRIS, b'{"id": 123456789012345678901234, "instances": [[1]]}') == "batch-long-number"
    assert split_row_request(
        IRIS_ROW, [], b'{"sepal_length": 12345678901234567890123, "sepal_width": 1}'
    ) == ("row-long-number")


def test_same_envelope_ignores_only_the_guessed_separator() -> None:
    def envelope(document: dict[str, Any]) -> bytes:
        found = split_response(IRIS, json.dumps(document).encode(), len(document["predictions"]))
        assert found is not None
        return found.envelope

    one, three = envelope({"predictions": [1], "v": "x"}), envelope({"predictions": [1, 2, 0], "v": "x"})
    assert same_envelope(one, three)
    assert not same_envelope(one, envelope({"predictions": [1], "v": "y"}))
    assert not same_envelope(
        envelope({"predictions": [1], "n": 1}), envelope({"predictions": [1, 2], "n": 2})
    )
    assert not same_envelope(one, b"L")

"""Open Inference Protocol v2 (KServe, Triton) batches: per-row slices of the request's and the response's
tensors, for `BatchRows(protocol="open-inference")`. Pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

_SORTED = orjson.OPT_SORT_KEYS
_FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64", "BF16"})
_MISSING: Any = object()


def count_reason(count: int, max_rows: int) -> str:
    """Why a batch of `count` rows bypasses ("" when it may be cached)."""
    if count == 0:
        return "batch-empty"
    if count > max_rows:
        return "batch-too-many-rows"
    return ""


def _tensor_rows(tensor: Any, count: int | None) -> tuple[list[Any], bool] | None:
    """Per-row slices of an OIP tensor `{"shape": [n, ...], "data": [...]}`, and whether data is nested."""
    if not isinstance(tensor, dict):
        return None
    shape, data = tensor.get("shape"), tensor.get("data")
    if not isinstance(shape, list) or not shape or not isinstance(data, list):
        return None
    if not all(isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 for dim in shape):
        return None
    rows = shape[0]
    if count is not None and rows != count:
        return None
    width = 1
    for dim in shape[1:]:
        width *= dim
    if rows and len(data) == rows and all(isinstance(item, list) for item in data):
        return list(data), True
    if len(data) != rows * width or any(isinstance(item, list) for item in data):
        return None
    return [data[i * width : (i + 1) * width] for i in range(rows)], False


def _as_floats(value: Any) -> Any:
    """Integers in a floating-point tensor become floats: the server builds the same tensor from both."""
    if isinstance(value, list):
        return [_as_floats(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def split_request(
    document: Any, max_rows: int
) -> tuple[tuple[bytes, ...], bytes, Callable[[Sequence[int]], bytes]] | str:
    """A parsed OIP request's canonical rows, the canonical rest, and a function rebuilding the request
    for some of its rows; or why it bypasses."""
    inputs = document.get("inputs", _MISSING) if isinstance(document, dict) else _MISSING
    if inputs is _MISSING:
        return "batch-no-rows"
    if not isinstance(inputs, list) or not inputs:
        return "batch-not-list"
    split = [_tensor_rows(tensor, None) for tensor in inputs]
    counts = {len(found[0]) for found in split if found is not None}
    if any(found is None for found in split) or len(counts) != 1:
        return "batch-bad-shape"
    reason = count_reason(counts.pop(), max_rows)
    if reason:
        return reason
    tensors: list[tuple[list[Any], bool]] = [found for found in split if found is not None]
    canonical = [
        _as_floats(slices) if inp.get("datatype") in _FLOAT_TYPES else slices
        for inp, (slices, _) in zip(inputs, tensors, strict=True)
    ]
    count = len(tensors[0][0])
    per_row = [orjson.dumps([slices[i] for slices in canonical], option=_SORTED) for i in range(count)]
    rest_inputs = [
        {**{k: v for k, v in inp.items() if k != "data"}, "shape": inp["shape"][1:]} for inp in inputs
    ]

    def rebuild(indices: Sequence[int]) -> bytes:
        new_inputs = []
        for inp, (slices, nested) in zip(inputs, tensors, strict=True):
            data = [slices[i] for i in indices] if nested else [x for i in indices for x in slices[i]]
            new_inputs.append({**inp, "shape": [len(indices), *inp["shape"][1:]], "data": data})
        return orjson.dumps({**document, "inputs": new_inputs})

    rest = orjson.dumps({**document, "inputs": rest_inputs}, option=_SORTED)
    return tuple(per_row), rest, rebuild


def split_response(document: Any, expected: int) -> tuple[tuple[bytes, ...], bytes] | None:
    """A parsed OIP response's `expected` row values and its envelope (tagged `O`); None for another
    shape."""
    outputs = document.get("outputs") if isinstance(document, dict) else None
    if not isinstance(outputs, list) or not outputs or expected < 1:
        return None
    split = [_tensor_rows(tensor, expected) for tensor in outputs]
    tensors = [found for found in split if found is not None]
    if len(tensors) != len(outputs):
        return None
    values = tuple(orjson.dumps([slices[i] for slices, _ in tensors]) for i in range(expected))
    emptied = [{**out, "shape": [None, *out["shape"][1:]], "data": []} for out in outputs]
    envelope = {"document": {**document, "outputs": emptied}, "nested": [nested for _, nested in tensors]}
    return values, b"O" + orjson.dumps(envelope)


def assemble(payload: bytes, values: Sequence[bytes]) -> bytes:
    """The response from an envelope's payload (its `O` tag removed) and row values; ValueError when
    malformed."""
    try:
        envelope = orjson.loads(payload)
        document, nested = envelope["document"], envelope["nested"]
        rows = [orjson.loads(value) for value in values]
        outputs = []
        for j, out in enumerate(document["outputs"]):
            slices = [row[j] for row in rows]
            data = slices if nested[j] else [x for piece in slices for x in piece]
            outputs.append({**out, "shape": [len(rows), *out["shape"][1:]], "data": data})
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"malformed open-inference envelope or row: {exc}") from exc
    return orjson.dumps({**document, "outputs": outputs})

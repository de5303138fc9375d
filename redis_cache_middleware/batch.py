"""Rows inside batch requests and responses: split them for per-row keys, put answers back together.

Pure functions, no I/O. A request is split into canonical row bytes (the row part of each key) plus the
canonical rest of the body; a response into each row's value bytes exactly as the app wrote them plus an
envelope (the response with the rows taken out) that `assemble` fills again. Any input that does not
have the expected shape gives a bypass reason (requests) or None (responses): never a guess.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from . import openinference
from .jsonspans import (
    element_spans,
    envelope_frame,
    fill_envelope,
    list_envelope,
    parse_pointer,
    value_envelope,
    value_span,
    value_start,
)
from .openinference import count_reason
from .typed import RouteCanon

__all__ = [
    "BatchRequest",
    "BatchResponse",
    "BatchRows",
    "Row",
    "SingleRow",
    "assemble",
    "same_envelope",
    "split_request",
    "split_response",
    "split_row_request",
    "split_row_response",
]

JsonCanon = Callable[[Any], Any]
_SORTED = orjson.OPT_SORT_KEYS
# orjson reads integer literals past 64 bits as floats: two such rows could share a canonical form.
_STRING_OR_LONG_NUMBER = re.compile(rb'"(?:[^"\\]|\\.)*"|(\d{20})', re.DOTALL)
_INDEX = re.compile(r"0|[1-9][0-9]*")


@dataclass(frozen=True)
class BatchRows:
    """Where the rows of a batch are: JSON Pointers (RFC 6901) to the request and response lists.

    `BatchRows("/instances", "/predictions")` is the KServe v1 / TF Serving shape; `""` is a top-level list.
    `BatchRows.open_inference()` is the Open Inference Protocol v2 (KServe v2, Triton, MLServer).
    `space`: rules naming the same space share row entries. `max_rows`: larger batches bypass the cache.
    """

    request: str = ""
    response: str = ""
    space: str | None = None
    max_rows: int = 1024
    protocol: Literal["json-list", "open-inference"] = "json-list"
    request_tokens: tuple[str, ...] = field(init=False, repr=False, compare=False)
    response_tokens: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "request_tokens", parse_pointer(self.request))
        object.__setattr__(self, "response_tokens", parse_pointer(self.response))
        if isinstance(self.max_rows, bool) or not isinstance(self.max_rows, int) or self.max_rows < 1:
            raise ValueError(f"BatchRows max_rows must be a positive integer: {self.max_rows!r}")
        if self.space is not None and (not isinstance(self.space, str) or not self.space):
            raise ValueError(f"BatchRows space must be a non-empty string or None: {self.space!r}")
        if self.protocol not in ("json-list", "open-inference"):
            raise ValueError(f"BatchRows protocol must be 'json-list' or 'open-inference': {self.protocol!r}")

    @classmethod
    def open_inference(cls, *, space: str | None = None, max_rows: int = 1024) -> BatchRows:
        """Rows of `inputs[].data` split by `shape[0]`; `outputs[]` split and rebuilt the same way."""
        return cls("/inputs", "/outputs", space=space, max_rows=max_rows, protocol="open-inference")


@dataclass(frozen=True)
class BatchRequest:
    """A split batch request: `rows[i]` is row i's canonical bytes, `rest` the rest of the body's."""

    rows: tuple[bytes, ...]
    rest: bytes
    _rebuild: Callable[[Sequence[int]], bytes] = field(repr=False, compare=False)

    def body_for(self, indices: Sequence[int]) -> bytes:
        """The request body with only the rows at `indices`, in that order, everything else as parsed.

        Re-serialised by orjson: key order and every value are kept, whitespace and number spelling are not
        (`5.10` is sent as `5.1`), which the app parses to the same values.
        """
        if not indices or not all(0 <= i < len(self.rows) for i in indices):
            raise ValueError(f"row indices must be non-empty and within 0..{len(self.rows) - 1}")
        return self._rebuild(indices)


@dataclass(frozen=True)
class BatchResponse:
    """A split response: each row's value bytes, and the envelope to store for `assemble`."""

    values: tuple[bytes, ...]
    envelope: bytes


def split_request(rows: BatchRows, body: bytes, canon: JsonCanon | None = None) -> BatchRequest | str:
    """Split a batch request body, or return why it bypasses (`batch-not-json`, `batch-no-rows`, ...).

    `canon` (typically `RouteCanon.canonical_json`) rewrites the parsed body as the app will read it
    before the rows and the rest are serialised (orjson, sorted keys); it is not used for open inference.
    """
    if _has_long_number(body):
        return "batch-long-number"
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "batch-not-json"
    if rows.protocol == "open-inference":
        split = openinference.split_request(document, rows.max_rows)
        return split if isinstance(split, str) else BatchRequest(*split)
    found = _resolve(document, rows.request_tokens)
    if found is _MISSING:
        return "batch-no-rows"
    if not isinstance(found, list):
        return "batch-not-list"
    reason = count_reason(len(found), rows.max_rows)
    if reason:
        return reason
    canonical = canon(document) if canon is not None else document
    canonical_rows = _resolve(canonical, rows.request_tokens)
    if not isinstance(canonical_rows, list) or len(canonical_rows) != len(found):
        canonical_rows = found

    def rebuild(indices: Sequence[int]) -> bytes:
        return orjson.dumps(_replaced(document, rows.request_tokens, [found[i] for i in indices]))

    return BatchRequest(
        tuple(orjson.dumps(row, option=_SORTED) for row in canonical_rows),
        orjson.dumps(_without(canonical, rows.request_tokens), option=_SORTED),
        rebuild,
    )


def split_response(rows: BatchRows, body: bytes, expected: int) -> BatchResponse | None:
    """Split the app's answer into `expected` row values and an envelope; None if it has another shape."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if rows.protocol == "open-inference":
        found_oip = openinference.split_response(document, expected)
        return BatchResponse(*found_oip) if found_oip is not None else None
    found = _resolve(document, rows.response_tokens)
    if not isinstance(found, list) or len(found) != expected or expected < 1:
        return None
    start = value_start(body, rows.response_tokens)
    if start is None:  # pragma: no cover - the parsed document has the list, so the raw scan finds it
        return None
    elements = element_spans(body, start)
    if len(elements) != expected:  # pragma: no cover - same document, same count
        return None
    return BatchResponse(tuple(body[start:end] for start, end in elements), list_envelope(body, elements))


def assemble(envelope: bytes, values: Sequence[bytes]) -> bytes:
    """The full response body: `envelope` (from a split response) with `values` as its rows, in order.

    Raises ValueError for a malformed envelope or a row count the envelope cannot hold (treat as a miss).
    """
    if not values:
        raise ValueError("a response needs at least one row")
    if envelope[:1] == b"O":
        return openinference.assemble(envelope[1:], values)
    return fill_envelope(envelope, values)


@dataclass(frozen=True)
class Row:
    """A single-row route in row space `space`: the row is the `features` (query names or JSON fields) in
    order, and the answer's row value is at the JSON Pointer `response` (`""`: the whole body)."""

    space: str
    features: tuple[str, ...]
    response: str = ""
    response_tokens: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.space, str) or not self.space:
            raise ValueError(f"Row space must be a non-empty string: {self.space!r}")
        if isinstance(self.features, str) or not self.features:
            raise ValueError(f"Row features must be a non-empty sequence of names: {self.features!r}")
        if len(set(self.features)) != len(self.features) or not all(
            isinstance(name, str) and name for name in self.features
        ):
            raise ValueError(f"Row features must be distinct non-empty strings: {self.features!r}")
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "response_tokens", parse_pointer(self.response))


@dataclass(frozen=True)
class SingleRow:
    """A single request as a row: `row` equals a batch row's canonical bytes for the same model input;
    `rest` is the canonical rest of the body (`{}` without one), `query` the non-feature query pairs."""

    row: bytes
    rest: bytes
    query: tuple[tuple[bytes, bytes], ...]


def split_row_request(
    row: Row, query: Sequence[tuple[bytes, bytes]], body: bytes | None, canon: RouteCanon | None = None
) -> SingleRow | str:
    """The row of a single request: from the JSON object `body` if given, else from the decoded `query`
    pairs (the last of a repeated name, as the app reads it). Returns a bypass reason (`row-...`) otherwise.
    """
    canon = canon or RouteCanon()
    if body:
        if _has_long_number(body):
            return "row-long-number"
        try:
            document = canon.canonical_json(orjson.loads(body))
        except orjson.JSONDecodeError:
            return "row-not-json"
        if not isinstance(document, dict):
            return "row-not-object"
        if not all(name in document for name in row.features):
            return "row-missing-feature"
        values = [document[name] for name in row.features]
        rest = orjson.dumps({k: v for k, v in document.items() if k not in row.features}, option=_SORTED)
        return SingleRow(orjson.dumps(values, option=_SORTED), rest, tuple(canon.canonical_query(query)))
    last = {name: value for name, value in query}
    names = [name.encode() for name in row.features]
    if not all(name in last for name in names):
        return "row-missing-feature"
    values = [canon.query_value(name, last[name]) for name in names]
    others = canon.canonical_query([(n, v) for n, v in query if n not in names])
    return SingleRow(orjson.dumps(values), b"{}", tuple(others))


def split_row_response(row: Row, body: bytes) -> BatchResponse | None:
    """Split a single route's answer into its row value (at `row.response`) and envelope; None if absent."""
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    span = value_span(body, row.response_tokens)
    return None if span is None else BatchResponse((body[span[0] : span[1]],), value_envelope(body, span))


def same_envelope(first: bytes, second: bytes) -> bool:
    """Whether two envelopes frame their rows alike (the separator a one-row list had to guess aside):
    compare a stored envelope with a fresh one to catch an app whose envelope depends on the rows."""
    try:
        return envelope_frame(first) == envelope_frame(second)
    except ValueError:
        return False


# --- helpers -------------------------------------------------------------------------------------------

_MISSING: Any = object()


def _has_long_number(body: bytes) -> bool:
    """Whether a number literal (not a string) has 20 or more digits in a row."""
    return any(match.group(1) for match in _STRING_OR_LONG_NUMBER.finditer(body))


def _resolve(document: Any, tokens: tuple[str, ...]) -> Any:
    """The parsed value at `tokens` (RFC 6901 section 4), or `_MISSING`."""
    for token in tokens:
        if isinstance(document, dict) and token in document:
            document = document[token]
        elif isinstance(document, list) and _INDEX.fullmatch(token) and int(token) < len(document):
            document = document[int(token)]
        else:
            return _MISSING
    return document


def _replaced(document: Any, tokens: tuple[str, ...], value: Any) -> Any:
    """A copy of `document` with the value at `tokens` (which exists) replaced by `value`."""
    if not tokens:
        return value
    copy: Any = dict(document) if isinstance(document, dict) else list(document)
    key: Any = tokens[0] if isinstance(document, dict) else int(tokens[0])
    copy[key] = _replaced(copy[key], tokens[1:], value)
    return copy


def _without(document: Any, tokens: tuple[str, ...]) -> Any:
    """A copy of `document` without the member at `tokens` (an array element becomes null)."""
    if not tokens:
        return {}
    token, rest = tokens[0], tokens[1:]
    if isinstance(document, dict):
        copy = dict(document)
        if rest:
            copy[token] = _without(copy[token], rest)
        else:
            del copy[token]
        return copy
    items = list(document)
    items[int(token)] = _without(items[int(token)], rest) if rest else None
    return items

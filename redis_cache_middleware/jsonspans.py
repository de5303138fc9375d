"""Byte spans inside a JSON document: RFC 6901 pointers resolved on the raw bytes, without re-serialising.

The functions take a document already checked to be valid JSON (the caller parsed it once), and return
`(start, end)` offsets of values, so the bytes around a value can be kept exactly as their writer wrote them.
An envelope is those bytes around: the document with a list's elements (tag `L`) or one value (tag `S`)
taken out, length-prefixed, to be filled again with other values by `fill_envelope`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import orjson

Span = tuple[int, int]

_WS = re.compile(rb"[ \t\n\r]*")
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_SCALAR = re.compile(rb"[-+0-9.eE]+|true|false|null")
_STRUCTURAL = re.compile(rb'["\[\]{}]')
_SEPARATOR = re.compile(rb'"|([,:])([ \t\n\r]*)')
_INDEX = re.compile(r"0|[1-9][0-9]*")


def parse_pointer(pointer: str) -> tuple[str, ...]:
    """The reference tokens of an RFC 6901 JSON Pointer (section 3): `""` is the whole document."""
    if not isinstance(pointer, str):
        raise ValueError(f"a JSON Pointer must be a string: {pointer!r}")
    if pointer == "":
        return ()
    if not pointer.startswith("/"):
        raise ValueError(f"a JSON Pointer must be empty or start with '/': {pointer!r}")
    tokens = pointer[1:].split("/")
    for token in tokens:
        if re.search(r"~(?![01])", token):
            raise ValueError(f"a JSON Pointer may only escape '~0' and '~1': {pointer!r}")
    return tuple(token.replace("~1", "/").replace("~0", "~") for token in tokens)


def skip_ws(data: bytes, index: int) -> int:
    """The first offset at or after `index` that is not JSON whitespace (RFC 8259 section 2)."""
    match = _WS.match(data, index)
    return match.end() if match else index


def value_end(data: bytes, start: int) -> int:
    """The offset just past the JSON value that begins at `start`."""
    first = data[start : start + 1]
    if first == b'"':
        return _string_end(data, start)
    if first in (b"[", b"{"):
        depth = 0
        index = start
        while True:
            match = _STRUCTURAL.search(data, index)
            if match is None:
                raise ValueError("unterminated JSON container")
            char = match.group()
            if char == b'"':
                index = _string_end(data, match.start())
                continue
            depth += 1 if char in (b"[", b"{") else -1
            index = match.end()
            if depth == 0:
                return index
    match = _SCALAR.match(data, start)
    if match is None:
        raise ValueError(f"no JSON value at offset {start}")
    return match.end()


def _string_end(data: bytes, start: int) -> int:
    match = _STRING.match(data, start)
    if match is None:
        raise ValueError("unterminated JSON string")
    return match.end()


def element_spans(data: bytes, start: int) -> list[Span]:
    """The spans of the elements of the JSON array that begins at `start`."""
    spans: list[Span] = []
    index = skip_ws(data, start + 1)
    if data[index : index + 1] == b"]":
        return spans
    while True:
        end = value_end(data, index)
        spans.append((index, end))
        index = skip_ws(data, end)
        if data[index : index + 1] != b",":
            return spans
        index = skip_ws(data, index + 1)


def _member_value_spans(data: bytes, start: int) -> list[tuple[str, Span]]:
    members: list[tuple[str, Span]] = []
    index = skip_ws(data, start + 1)
    if data[index : index + 1] == b"}":
        return members
    while True:
        key_end = _string_end(data, index)
        raw_key = data[index:key_end]
        key = raw_key[1:-1].decode() if b"\\" not in raw_key else str(orjson.loads(raw_key))
        value_start = skip_ws(data, skip_ws(data, key_end) + 1)  # past the ':'
        end = value_end(data, value_start)
        members.append((key, (value_start, end)))
        index = skip_ws(data, end)
        if data[index : index + 1] != b",":
            return members
        index = skip_ws(data, index + 1)


def value_span(data: bytes, tokens: tuple[str, ...]) -> Span | None:
    """The span of the value the pointer `tokens` refers to (RFC 6901 section 4), or None if it is absent.

    A repeated object key resolves to its last occurrence, as Python's `json` and orjson read it.
    """
    start = value_start(data, tokens)
    return None if start is None else (start, value_end(data, start))


def value_start(data: bytes, tokens: tuple[str, ...]) -> int | None:
    """Where the value the pointer `tokens` refers to begins, or None if it is absent."""
    index = skip_ws(data, 0)
    for token in tokens:
        first = data[index : index + 1]
        if first == b"{":
            found = [span for key, span in _member_value_spans(data, index) if key == token]
            if not found:
                return None
            index = found[-1][0]
        elif first == b"[":
            if not _INDEX.fullmatch(token):
                return None
            elements = element_spans(data, index)
            if int(token) >= len(elements):
                return None
            index = elements[int(token)][0]
        else:
            return None
    return index


def separator_after(fragment: bytes, char: bytes) -> bytes | None:
    """The first structural `char` (`,` or `:`) in `fragment` with the whitespace after it, if any.

    `fragment` is a run of whole tokens (its strings are complete), such as the bytes around a value.
    """
    index = 0
    while True:
        match = _SEPARATOR.search(fragment, index)
        if match is None:
            return None
        if match.group() == b'"':
            index = _string_end(fragment, match.start())
        elif match.group(1) == char:
            return match.group(1) + match.group(2)
        else:
            index = match.end()


def list_envelope(data: bytes, elements: list[Span]) -> bytes:
    """The envelope of `data` without the (one or more) array `elements`: head, element separator, tail."""
    head, tail = data[: elements[0][0]], data[elements[-1][1] :]
    separator = data[elements[0][1] : elements[1][0]] if len(elements) > 1 else _guess_separator(head, tail)
    return b"L" + _fields(head, separator, tail)


def value_envelope(data: bytes, span: Span) -> bytes:
    """The envelope of `data` without the value at `span`."""
    return b"S" + _fields(data[: span[0]], data[span[1] :])


def fill_envelope(envelope: bytes, values: Sequence[bytes]) -> bytes:
    """The document the envelope was taken from, with `values` in place; ValueError if it cannot hold them."""
    kind, payload = envelope[:1], envelope[1:]
    if kind == b"L" and values:
        head, separator, tail = _unfields(payload, 3)
        return b"".join((head, separator.join(values), tail))
    if kind == b"S" and len(values) == 1:
        head, tail = _unfields(payload, 2)
        return b"".join((head, values[0], tail))
    raise ValueError(f"an envelope of kind {kind!r} cannot hold {len(values)} values")


def envelope_frame(envelope: bytes) -> tuple[bytes, ...]:
    """The parts of an envelope that do not depend on the row count: all but a list's separator."""
    if envelope[:1] == b"L":
        head, _, tail = _unfields(envelope[1:], 3)
        return b"L", head, tail
    return (envelope,)


def _guess_separator(head: bytes, tail: bytes) -> bytes:
    """The element separator of a one-row list, which shows none: follow the document's own style.

    Pretty-printed (a newline after `[`): `,` plus that indentation. Otherwise the whitespace after
    another comma in the document, else `, ` when its colons are followed by a space, else `,`.
    """
    bracket = head.rfind(b"[")
    indent = head[bracket + 1 :]
    if b"\n" in indent:
        return b"," + indent
    for fragment in (head[:bracket], tail):
        found = separator_after(fragment, b",")
        if found is not None:
            return found
    colon = separator_after(head[:bracket], b":") or separator_after(tail, b":")
    return b", " if colon is not None and colon != b":" else b","


def _fields(*parts: bytes) -> bytes:
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def _unfields(payload: bytes, count: int) -> list[bytes]:
    parts: list[bytes] = []
    index = 0
    for _ in range(count):
        size = int.from_bytes(payload[index : index + 4], "big")
        if index + 4 + size > len(payload):
            raise ValueError("truncated envelope")
        parts.append(payload[index + 4 : index + 4 + size])
        index += 4 + size
    if index != len(payload) or len(parts) != count:
        raise ValueError("malformed envelope")
    return parts

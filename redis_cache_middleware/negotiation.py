"""Vary normalisation (RFC 9111 section 4.1, RFC 9110 section 12.5): request values of the proactive
negotiation fields reduced to a canonical form, so that equivalent requests select the same stored variant."""

from __future__ import annotations

import re

# RFC 9110 sections 12.5.1, 12.5.3 and 12.5.4: lists of case-insensitive members with optional weights.
NORMALISED_FIELDS = frozenset({b"accept", b"accept-encoding", b"accept-language"})
_WEIGHT = re.compile(rb";[ \t]*q=(0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)[ \t]*$", re.IGNORECASE)


def normalise_vary_value(name: bytes, values: list[bytes]) -> bytes:
    """One field's request value as compared between variants (RFC 9111 section 4.1): for Accept,
    Accept-Encoding and Accept-Language the members lowercased, whitespace-free, grouped by weight from
    highest to lowest and sorted within a weight (order within a weight selects nothing), `q=1` implied; for
    other fields the lines trimmed and joined. Call only when the field is present."""
    if name.lower() not in NORMALISED_FIELDS:
        return b", ".join(value.strip(b" \t") for value in values)
    weighted: dict[tuple[int, bytes], None] = {}
    for value in values:
        for member in _members(value):
            weight, text = _weight(member)
            weighted[(-weight, text)] = None
    return b",".join(
        text if weight == -1000 else text + b";q=" + _qvalue(-weight) for weight, text in sorted(weighted)
    )


def _members(value: bytes) -> list[bytes]:
    """List members (RFC 9110 section 5.6.1), commas inside quoted strings kept."""
    members, current, quoted, escaped = [], bytearray(), False, False
    for byte in value:
        char = bytes((byte,))
        if escaped:
            escaped = False
        elif quoted and char == b"\\":
            escaped = True
        elif char == b'"':
            quoted = not quoted
        elif char == b"," and not quoted:
            members.append(bytes(current))
            current.clear()
            continue
        current += char
    members.append(bytes(current))
    return [_squeeze(member) for member in members if member.strip(b" \t")]


def _squeeze(member: bytes) -> bytes:
    """The member lowercased with whitespace around `;` and `=` removed (parameter values keep their case
    only inside quoted strings)."""
    parts = [part.strip(b" \t") for part in member.split(b";")]
    cleaned = []
    for part in parts:
        key, sep, argument = part.partition(b"=")
        argument = argument.strip(b" \t")
        if argument[:1] != b'"':
            argument = argument.lower()
        cleaned.append(key.strip(b" \t").lower() + sep + argument)
    return b";".join(cleaned)


def _weight(member: bytes) -> tuple[int, bytes]:
    """(weight in thousandths, member without its weight); a malformed weight stays part of the member."""
    match = _WEIGHT.search(member)
    if match is None:
        return 1000, member
    return round(float(match[1]) * 1000), member[: match.start()]


def _qvalue(thousandths: int) -> bytes:
    return (b"%d.%03d" % divmod(thousandths, 1000)).rstrip(b"0").rstrip(b".")

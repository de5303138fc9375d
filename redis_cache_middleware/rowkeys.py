"""Where a request of a row rule (`batch=` or `row=`) is stored: one key per row and its route's envelope.

Pure functions, no I/O: the middleware answers from these keys (`rowpath`), operators find a described
request's rows with them (`ops`). A row's key is its row space, its canonical form and its context (every
other body field, the query, Host, the `vary` headers and, on private rules, the credentials); method and
path are not in it, so every route naming the same row space shares rows. The envelope key is the route's
rule name and the digest of the context alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from starlette.types import Scope

from .batch import BatchRequest, split_request, split_row_request
from .keys import Headers, KeySpace, canonical_query, row_context, row_digest
from .rules import CacheRule
from .typed import RouteCanon

__all__ = ["RowKeys", "row_keys", "row_space", "shares_rows"]


@dataclass(frozen=True, slots=True)
class RowKeys:
    """Where a request of a row rule is stored: `rows[i]` is the key of its row i (a batch's duplicate
    rows repeat a key), `envelope` the key of its route's envelope; `batch` the split batch request
    (None for a single-row route)."""

    rows: tuple[str, ...]
    envelope: str
    batch: BatchRequest | None = None


def row_space(rule: CacheRule) -> str | None:
    """The row space a rule's rows are stored in (None: not a row rule)."""
    if rule.batch is not None:
        return rule.batch.space or rule.key_name
    return rule.row.space if rule.row is not None else None


def row_keys(
    keys: KeySpace,
    rule: CacheRule,
    scope: Scope,
    headers: Headers,
    body: bytes | None,
    credentials: tuple[bytes, ...],
    canon: RouteCanon | None,
) -> RowKeys | str:
    """The row keys and envelope key of a request of a rule with `batch=` or `row=`, as the middleware
    computes them (`canon`: the route's typed canonicaliser, None without typed keys), or the reason the
    middleware bypasses the request (`batch-not-json`, `row-missing-feature`, ...). Pure: no I/O."""
    query = canonical_query(scope.get("query_string", b""))
    batch: BatchRequest | None = None
    if rule.batch is not None:
        split = split_request(rule.batch, body or b"", canon.canonical_json if canon else None)
        if isinstance(split, str):
            return split
        batch, rows = split, split.rows
        other = _other(split.rest, canon.canonical_query(query) if canon else query)
    elif rule.row is not None:
        single = split_row_request(rule.row, query, body or None, canon)
        if isinstance(single, str):
            return single
        rows, other = (single.row,), _other(single.rest, single.query)
    else:
        raise ValueError(f"rule {rule.key_name} has neither batch= nor row=")
    space = row_space(rule)
    assert space is not None
    context = row_context(rule.keying, scope, headers, other, credentials)
    stored = tuple(keys.row(space, row_digest(context, row)) for row in rows)
    return RowKeys(stored, keys.entry(rule.key_name, row_digest(context, b"")), batch)


def shares_rows(first: CacheRule, second: CacheRule) -> bool:
    """Whether a row computed under one rule answers the other: the same row space and the same context
    (Host keyed or not, `vary` headers, private or not)."""
    space = row_space(first)
    return (
        space is not None
        and space == row_space(second)
        and (first.keying.key_host, first.keying.vary_names, first.keying.private)
        == (second.keying.key_host, second.keying.vary_names, second.keying.private)
    )


def _other(rest: bytes, query: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The canonical rest of a request besides its rows: the rest of the body, then the query pairs."""
    parts = [len(rest).to_bytes(4, "big"), rest]
    for name, value in query:
        parts += [len(name).to_bytes(4, "big"), name, len(value).to_bytes(4, "big"), value]
    return b"".join(parts)
